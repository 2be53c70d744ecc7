"""Config keys the real engine run showed a user needs (local chart, Keycloak CA, skipAwait), and
the installer's pure helpers for the engine's Go builds."""

from __future__ import annotations

import pulumi
import pytest

from authproxy_local import install
from authproxy_local.install import gomod as gm
from authproxy_local.render.mockrun import run_program
from components.session_store import release_chart_args
from components.stack import (
    SKIP_AWAIT_ANNOTATION,
    await_transform,
    release_not_ready_message,
    skip_await_transform,
)
from tests.unit.test_config import keys, load, problems, with_

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_local_chart_path_replaces_the_repository():
    args = release_chart_args({"repository": "https://charts.example", "name": "redis-ha",
                               "version": "4.39.0", "path": "/charts/redis-ha-4.39.0.tgz"})
    assert args == {"chart": "/charts/redis-ha-4.39.0.tgz"}
    run = run_program("dev", overrides={"redis": {"chartPath": "/charts/redis-ha-4.39.0.tgz"}})
    rel = next(r.wire_inputs for r in run.of_type("kubernetes:helm.sh/v3:Release")
               if r.wire_inputs["name"] == "authproxy-redis")
    assert rel["chart"] == "/charts/redis-ha-4.39.0.tgz" and "repositoryOpts" not in rel


@pytest.mark.parametrize("bad", ["https://charts.example/redis-ha.tgz", " "])
def test_chart_path_must_be_local(bad):
    assert "authproxy:redis.chartPath" in keys(with_("redis", {"chartPath": bad}))


def test_keycloak_ca_certificate_reaches_the_provider_and_is_validated():
    assert "authproxy:keycloak.caCertificate" in keys(with_("keycloak.caCertificate", "not a pem"))
    assert load(with_("keycloak.caCertificate", PEM), {"keycloakAdminPassword"}).keycloak.ca_certificate == PEM
    run = run_program("dev", overrides={"keycloak": {"caCertificate": PEM}})
    assert run.one("pulumi:providers:keycloak").wire_inputs["rootCaCertificate"] == PEM
    assert "rootCaCertificate" not in run_program("dev").one("pulumi:providers:keycloak").wire_inputs


def test_keycloak_client_timeout_reaches_the_provider_and_is_validated():
    """The SDK's default (5 s) failed `pulumi up` against a busy Keycloak in the live harness."""
    assert run_program("dev").one("pulumi:providers:keycloak").wire_inputs["clientTimeout"] in (30, "30")
    run = run_program("dev", overrides={"keycloak": {"clientTimeout": 90}})
    assert run.one("pulumi:providers:keycloak").wire_inputs["clientTimeout"] in (90, "90")
    assert "authproxy:keycloak.clientTimeout" in keys(with_("keycloak.clientTimeout", 0))


def _targs(type_: str, props: dict, custom: bool = True) -> pulumi.ResourceTransformArgs:
    return pulumi.ResourceTransformArgs(custom=custom, type_=type_, name="x", props=props,
                                        opts=pulumi.ResourceOptions())


def test_skip_await_annotates_kubernetes_objects_and_helm_releases_only():
    dep = skip_await_transform(_targs("kubernetes:apps/v1:Deployment",
                                      {"metadata": {"name": "d", "annotations": {"a": "b"}}, "spec": {}}))
    assert dep is not None
    assert dep.props["metadata"] == {"name": "d", "annotations": {
        "a": "b", SKIP_AWAIT_ANNOTATION: "true", "pulumi.com/deletionPropagationPolicy": "background"}}
    assert dep.props["spec"] == {}
    # Helm's atomic implies a wait: the real engine showed the release pending for ever with it on
    rel = skip_await_transform(_targs("kubernetes:helm.sh/v3:Release", {"skipAwait": False, "atomic": True}))
    assert rel is not None and rel.props == {"skipAwait": True, "atomic": False}
    assert skip_await_transform(_targs("keycloak:index/realm:Realm", {"realm": "r"})) is None
    assert skip_await_transform(_targs("authproxy:stack:AuthProxy", {}, custom=False)) is None


def test_skip_await_is_off_by_default_and_a_documented_key():
    assert load(with_("kubernetes", {"skipAwait": True}), {"keycloakAdminPassword"}).kubernetes.skip_await
    assert not load(with_("domain", "example.test"), {"keycloakAdminPassword"}).kubernetes.skip_await
    assert "authproxy:kubernetes.skipAwait" in keys(with_("kubernetes", {"skipAwait": "maybe"}))


def test_await_timeout_bounds_every_kubernetes_wait_and_helms_own():
    transform = await_transform(90)
    dep = transform(_targs("kubernetes:apps/v1:Deployment", {"metadata": {"name": "d"}, "spec": {}}))
    assert dep is not None and dep.props == {"metadata": {"name": "d"}, "spec": {}}
    t = dep.opts.custom_timeouts
    assert t is not None and (t.create, t.update, t.delete) == ("90s", "90s", "90s")
    rel = transform(_targs("kubernetes:helm.sh/v3:Release", {"atomic": True, "timeout": 600}))
    assert rel is not None and rel.props == {"atomic": True, "timeout": 90}
    assert rel.opts.custom_timeouts is not None and rel.opts.custom_timeouts.create == "90s"
    # Helm's own error does not say why; an error hook on releases does (and never retries).
    assert rel.opts.hooks is not None and rel.opts.hooks.on_error
    assert dep.opts.hooks is None or not dep.opts.hooks.on_error
    assert transform(_targs("keycloak:index/realm:Realm", {"realm": "r"})) is None
    assert transform(_targs("authproxy:stack:AuthProxy", {}, custom=False)) is None


# Helm's errors as pulumi-kubernetes 4.25 (Helm 3.18) reported them in the real engine run.
INSTALL_TIMEOUT = ("release authproxy-redis failed, and has been uninstalled due to atomic being set: "
                   "context deadline exceeded")
UPGRADE_TIMEOUT = ('Helm release "authproxy/authproxy-redis" failed to initialize completely. Use Helm '
                   "CLI to investigate: failed to become available within allocated timeout. Error: Helm "
                   "Release authproxy/authproxy-redis: release authproxy-redis failed, and has been rolled "
                   "back due to atomic being set: context deadline exceeded")
ROLLBACK_TIMEOUT = ("Helm Release authproxy/authproxy-redis: an error occurred while rolling back the release. "
                    "original upgrade error: context deadline exceeded: release authproxy-redis failed: "
                    "context deadline exceeded")


def test_release_not_ready_says_what_was_awaited_what_atomic_did_and_where_the_reason_is():
    msg = release_not_ready_message([INSTALL_TIMEOUT], "authproxy", "authproxy-redis", 45)
    assert msg is not None
    assert "authproxy/authproxy-redis was not ready within 45s" in msg
    assert "uninstalled it (atomic)" in msg
    assert "kubectl -n authproxy get events --field-selector type=Warning" in msg
    assert "authproxy:kubernetes.awaitTimeout" in msg
    upgrade = release_not_ready_message([UPGRADE_TIMEOUT], "authproxy", "authproxy-redis", 600)
    assert upgrade is not None and "rolled it back (atomic)" in upgrade and "within 10m" in upgrade
    stuck = release_not_ready_message([ROLLBACK_TIMEOUT], "authproxy", "authproxy-redis", 600)
    assert stuck is not None and "helm -n authproxy history authproxy-redis" in stuck
    # Only the newest error counts, and other failures get no readiness story.
    assert release_not_ready_message(["chart not found", INSTALL_TIMEOUT], "a", "b", 60) is None
    assert release_not_ready_message([], "a", "b", 60) is None


def test_redis_release_waits_atomically_by_default():
    """Helm waits for the release's objects and rolls a failed install back (atomic) or a failed
    upgrade's new objects away (cleanupOnFail). The configured timeout replaces Helm's 600 s in
    the real engine (Pulumi's mocks do not run transforms; make engine shows it)."""
    run = run_program("dev")
    rel = next(r.wire_inputs for r in run.of_type("kubernetes:helm.sh/v3:Release")
               if r.wire_inputs["name"] == "authproxy-redis")
    assert (rel["skipAwait"], rel["atomic"], rel["cleanupOnFail"], rel["timeout"]) == (False, True, True, 600)


@pytest.mark.parametrize("bad", ["5s", "3h", "soon", 0, -1])
def test_await_timeout_is_validated_by_key(bad):
    probs = problems(with_("kubernetes", {"awaitTimeout": bad}))
    assert [k for k, _ in probs] == ["authproxy:kubernetes.awaitTimeout"], probs


def test_await_timeout_accepts_durations_and_refuses_to_pair_with_skip_await():
    def timeout(raw: dict) -> int:
        return load(raw, {"keycloakAdminPassword"}).kubernetes.await_timeout

    assert timeout(with_("kubernetes", {"awaitTimeout": "1h30m"})) == 5400
    assert timeout(with_("kubernetes", {"awaitTimeout": 45})) == 45
    assert timeout(with_("domain", "example.test")) == 600
    probs = problems(with_("kubernetes", {"skipAwait": True, "awaitTimeout": "5m"}))
    assert probs == [("authproxy:kubernetes.awaitTimeout",
                      "has no effect with kubernetes.skipAwait=true (nothing waits); remove one of them")]


def test_published_replaces_maps_local_paths_to_the_release():
    gomod = """module k8s.io/kubernetes
go 1.25.0
replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go // comment
\tgithub.com/x/y => github.com/z/y v1.0.0
)
replace go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY
"""
    assert gm.published_replaces(gomod, "v0.35.4", prefix="k8s.io/") == [
        "k8s.io/api => k8s.io/api v0.35.4", "k8s.io/client-go => k8s.io/client-go v0.35.4"]
    etcd = "module go.etcd.io/etcd/server/v3\nreplace (\n\tgo.etcd.io/etcd/api/v3 => ../api\n)\n" \
           "replace go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY\n"
    assert gm.published_replaces(etcd, "v3.6.16", prefix="go.etcd.io/") == [
        "go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 v3.6.16"]


def test_plain_go_mod_and_kubernetes_version_stamps():
    text = gm.plain_go_mod("authproxy.local/x", "1.25", [("a.example/m", "v1.2.3")], ["a => b v1"])
    assert "require (\n\ta.example/m v1.2.3\n)" in text and "replace (\n\ta => b v1\n)" in text
    flags = gm.kubernetes_ldflags("1.35.4")
    assert "-X k8s.io/component-base/version.gitVersion=v1.35.4" in flags
    assert "-X k8s.io/component-base/version.gitMinor=35" in flags


def test_engine_components_are_pinned_and_registered():
    for name in ("pulumi", "pulumi-random", "pulumi-keycloak", "pulumi-kubernetes", "kube-apiserver", "etcd"):
        assert name in install.COMPONENTS
    assert install.VERSIONS["pulumi"] == "3.274.0"
    assert install.VERSIONS["kubernetes"] == "1.35.4" and install.VERSIONS["etcd"] == "3.6.16"


def test_policy_reads_the_chart_name_of_a_local_archive():
    # Found by `pulumi preview --policy-pack policy` under the real engine with redis.chartPath:
    # the Redis-auth policy did not recognise redis-ha in `.../redis-ha-4.39.0.tgz`.
    from policy.policies import chart_name

    for chart in ("redis-ha", "https://x/charts/redis-ha", "oci://r/charts/redis-ha",
                  "/charts/redis-ha-4.39.0.tgz", "../shared/charts/redis-ha-4.39.0.tar.gz", "/charts/redis-ha/"):
        assert chart_name({"chart": chart}) == "redis-ha", chart


def test_rotation_markers_accept_numbers_as_pulumi_config_set_path_stores_them():
    # Found under the real engine: `pulumi config set --path authproxy:rotation.cookieSecret 2`
    # stores a number, which the config model rejected ("Input should be a valid string").
    cfg = load(with_("rotation", {"cookieSecret": 2, "clientSecret": "b"}), {"keycloakAdminPassword"})
    assert cfg.rotation.cookie_secret == "2" and cfg.rotation.client_secret == "b"
    assert "authproxy:rotation.cookieSecret" in keys(with_("rotation", {"cookieSecret": True}))
