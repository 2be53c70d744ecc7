"""Session store: the redis-ha Helm values, the connection oauth2-proxy uses, the Redis
NetworkPolicy, the program under mocks (standalone, HA, external) and the Redis/proxy bad inputs."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from authproxy_local.render.mockrun import (
    DEFAULT_TEST_SECRETS,
    MOCK_SECRET_PREFIX,
    is_secret,
    project_config,
    run_program,
)
from components import config as C
from components.session_store import (
    AUTH_KEY,
    EXPORTER_PORT,
    REDIS_PORT,
    SENTINEL_PORT,
    SessionStoreArgs,
    helm_values,
    password_checksum,
    redis_connection,
    redis_network_policy,
    redis_pod_labels,
    release_chart_args,
)
from components.stack import REDIS_RELEASE, session_store_args
from tests.unit.stacks import load_stack

EXTERNAL: dict[str, Any] = {"mode": "external", "external": {"url": "rediss://redis.example.net:6380"}}
EXTERNAL_SENTINEL: dict[str, Any] = {
    "mode": "external",
    "external": {
        "sentinelUrls": ["redis://s1.example.net:26379", "redis://s2.example.net:26380"],
        "sentinelMasterName": "sessions",
    },
}


def plain(spec: Any) -> Any:
    """A spec builder's typed result (the SDK's *ArgsDict) as plain data for the assertions."""
    return spec


def raw(stack: str) -> dict[str, Any]:
    return project_config(stack)


load = load_stack


def problems(stack: str = "dev", secrets: Iterable[str] | None = None, **overrides: Any):
    if secrets is None:
        secrets = DEFAULT_TEST_SECRETS.keys()
    data = raw(stack)
    for k, v in overrides.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    with pytest.raises(C.ConfigError) as e:
        C.load(data, secrets_set=secrets)
    return e.value.problems, str(e.value)


def store(stack: str = "dev", **overrides: Any) -> SessionStoreArgs:
    return session_store_args(load(stack, **overrides), "pw")


# ---------------------------------------------------------------- defaults are pinned, not Bitnami
def test_default_chart_and_images_are_pinned_and_not_bitnami():
    r = C.Redis()
    assert (r.chart.repository, r.chart.name, r.chart.version) == (
        "https://dandydeveloper.github.io/charts", "redis-ha", "4.39.0")
    for img in (r.image, r.exporter_image):
        assert img.tag and img.tag != "latest"
        assert "bitnami" not in img.repository
    assert r.image.ref == "public.ecr.aws/docker/library/redis:8.8.0-alpine"


# ---------------------------------------------------------------- Helm values
def test_standalone_values_one_server_with_auth_from_existing_secret_and_persistence():
    v = helm_values(store("dev"), "sum")
    assert v["replicas"] == 1
    assert v["auth"] is True and v["existingSecret"] == f"{REDIS_RELEASE}-auth"
    assert v["authKey"] == AUTH_KEY
    assert v["sentinel"]["auth"] is True
    assert v["sentinel"]["existingSecret"] == v["existingSecret"]
    assert v["sentinel"]["authKey"] == AUTH_KEY
    assert "redisPassword" not in v and "password" not in v["sentinel"]
    assert v["persistentVolume"] == {"enabled": True, "size": "1Gi"}
    # One server never has a replica in sync: writes must not require one.
    assert v["redis"]["config"]["min-replicas-to-write"] == 0
    assert v["sentinel"]["quorum"] == 1
    assert v["podDisruptionBudget"] == {}
    assert v["hardAntiAffinity"] is False
    assert v["redis"]["podAnnotations"] == {"checksum/auth": "sum"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_statefulset_replaces_a_broken_pod_so_an_atomic_rollback_completes(stack):
    """With the chart's OrderedReady the StatefulSet controller never replaces a pod that is not
    Running and Ready: the real engine run showed a bad-image upgrade whose atomic rollback
    timed out too, leaving Redis down. Parallel lets the controller replace it."""
    assert helm_values(store(stack), "sum")["podManagementPolicy"] == "Parallel"


def test_ha_values_replication_sentinel_quorum_pdb_anti_affinity():
    v = helm_values(store("prod"), "sum")
    assert v["replicas"] == 3
    assert v["sentinel"]["quorum"] == 2
    assert v["redis"]["masterGroupName"] == "authproxy"
    assert v["redis"]["config"]["min-replicas-to-write"] == 1
    assert v["podDisruptionBudget"] == {"maxUnavailable": 1}
    assert v["hardAntiAffinity"] is True
    assert v["persistentVolume"]["size"] == "2Gi"
    five = helm_values(store("prod", redis={"sentinel": {"masterName": "m", "replicas": 5}}), "s")
    assert five["replicas"] == 5 and five["sentinel"]["quorum"] == 3
    assert five["redis"]["masterGroupName"] == "m"


def test_values_images_pinned_from_config_and_overridable_for_mirrors():
    s = store("dev", redis={
        "image": {"repository": "registry.corp/mirror/redis", "tag": "8.8.0-alpine"},
        "exporterImage": {"repository": "registry.corp/mirror/redis_exporter", "tag": "v1.86.0"},
        "persistence": {"size": "5Gi", "storageClass": "fast"},
    })
    v = helm_values(s, "x")
    assert v["image"]["repository"] == "registry.corp/mirror/redis"
    assert v["image"]["tag"] == "8.8.0-alpine"
    assert v["exporter"]["image"] == "registry.corp/mirror/redis_exporter"
    assert v["exporter"]["tag"] == "v1.86.0"
    assert v["persistentVolume"] == {"enabled": True, "size": "5Gi", "storageClass": "fast"}


def test_metrics_toggle_and_service_monitor_follows_proxy_switch():
    off = helm_values(store("dev"), "x")
    assert off["exporter"]["enabled"] is False
    assert off["exporter"]["serviceMonitor"]["enabled"] is False
    on = helm_values(store("dev", redis={"metrics": True}), "x")
    assert on["exporter"]["enabled"] is True
    assert on["exporter"]["serviceMonitor"]["enabled"] is False  # dev: no proxy.serviceMonitor
    prod = helm_values(store("prod"), "x")
    assert prod["exporter"]["enabled"] is True
    assert prod["exporter"]["serviceMonitor"]["enabled"] is True


def test_values_hardened_and_without_sidecar_or_haproxy():
    v = helm_values(store("prod"), "x")
    c = v["containerSecurityContext"]
    assert c["runAsNonRoot"] is True and c["allowPrivilegeEscalation"] is False
    assert c["readOnlyRootFilesystem"] is True
    assert c["capabilities"] == {"drop": ["ALL"]}
    assert c["seccompProfile"] == {"type": "RuntimeDefault"}
    assert v["securityContext"]["runAsNonRoot"] is True
    assert v["serviceAccount"]["automountToken"] is False
    assert v["haproxy"]["enabled"] is False
    assert v["extraLabels"] == {"sidecar.istio.io/inject": "false"}
    assert v["nameOverride"] == "redis-ha" and v["fullnameOverride"] == REDIS_RELEASE


def test_password_checksum_changes_with_password_and_hides_it():
    a, b = password_checksum("one"), password_checksum("two")
    assert a != b and len(a) == 64 and "one" not in a


def test_release_chart_args_https_and_oci():
    https = release_chart_args({"repository": "https://charts.example/", "name": "redis-ha",
                                "version": "4.39.0"})
    assert https["chart"] == "redis-ha" and https["repository_opts"].repo == "https://charts.example"
    oci = release_chart_args({"repository": "oci://registry.corp/charts", "name": "redis-ha",
                              "version": "4.39.0"})
    assert oci == {"chart": "oci://registry.corp/charts/redis-ha"}


# ---------------------------------------------------------------- connection
def test_connection_standalone_is_the_release_service():
    c = redis_connection(store("dev"))
    assert c["mode"] == "standalone"
    assert c["url"] == f"redis://{REDIS_RELEASE}.authproxy.svc:{REDIS_PORT}"


def test_connection_ha_lists_every_sentinel_and_the_master_name():
    c = redis_connection(store("prod"))
    assert c["mode"] == "sentinel" and c["master_name"] == "authproxy"
    assert c["sentinel_urls"] == [
        f"redis://{REDIS_RELEASE}-announce-{i}.authproxy.svc:{SENTINEL_PORT}" for i in range(3)
    ]
    assert c["sentinel_password"] is True


def test_connection_external_standalone_and_sentinel():
    c = redis_connection(store("dev", redis=EXTERNAL))
    assert (c["mode"], c["url"]) == ("standalone", "rediss://redis.example.net:6380")
    s = redis_connection(store("dev", redis=EXTERNAL_SENTINEL))
    assert s["mode"] == "sentinel" and s["master_name"] == "sessions"
    assert s["sentinel_urls"] == EXTERNAL_SENTINEL["external"]["sentinelUrls"]
    assert s["sentinel_password"] is False


def test_external_ports_for_egress():
    ext = load("dev", redis=EXTERNAL).redis.external
    sentinel = load("dev", redis=EXTERNAL_SENTINEL).redis.external
    assert ext is not None and ext.ports == (6380,)
    assert sentinel is not None and sentinel.ports == (26379, 26380)
    assert C.ExternalRedis(url="redis://r.example.net").ports == (6379,)


# ---------------------------------------------------------------- NetworkPolicy
def test_redis_accepts_only_oauth2_proxy_and_itself():
    s = store("dev")
    spec = plain(redis_network_policy(s))
    assert spec["pod_selector"]["match_labels"] == redis_pod_labels(s)
    assert spec["policy_types"] == ["Ingress"]
    peers = [r["from_"] for r in spec["ingress"]]
    assert peers == [
        [{"pod_selector": {"match_labels": s["client_pod_labels"]}}],
        [{"pod_selector": {"match_labels": redis_pod_labels(s)}}],
    ]
    for rule in spec["ingress"]:
        assert {p["port"] for p in rule["ports"]} == {REDIS_PORT, SENTINEL_PORT}
    assert s["client_pod_labels"] == {
        "app.kubernetes.io/name": "oauth2-proxy", "app.kubernetes.io/instance": "oauth2-proxy"}


def test_redis_policy_opens_exporter_port_only_with_metrics():
    assert all(EXPORTER_PORT not in [p["port"] for p in r["ports"]]
               for r in plain(redis_network_policy(store("dev")))["ingress"])
    rules = plain(redis_network_policy(store("dev", redis={"metrics": True})))["ingress"]
    assert rules[-1] == {"from_": [{"namespace_selector": {}}],
                         "ports": [{"protocol": "TCP", "port": EXPORTER_PORT}]}


# ---------------------------------------------------------------- program under mocks
def redis_releases(run) -> list:
    """The session store's Helm releases (other components may install charts too)."""
    return [r for r in run.of_type("kubernetes:helm.sh/v3:Release")
            if r.parent.endswith("SessionStore::authproxy-session-store")]


def redis_release(run):
    (rel,) = redis_releases(run)
    assert rel.name == "authproxy-session-store-redis"
    return rel


@pytest.fixture(scope="module")
def dev_run():
    return run_program("dev")


@pytest.fixture(scope="module")
def prod_run():
    return run_program("prod")


def test_dev_registers_release_with_pinned_chart_and_awaits(dev_run):
    rel = redis_release(dev_run)
    i = rel.inputs
    assert i["chart"] == "redis-ha" and i["version"] == "4.39.0"
    assert i["repositoryOpts"] == {"repo": "https://dandydeveloper.github.io/charts"}
    assert i["namespace"] == "authproxy" and i["name"] == REDIS_RELEASE
    assert i["skipAwait"] is False
    v = i["values"]
    assert v["auth"] is True and v["existingSecret"] == f"{REDIS_RELEASE}-auth"
    assert v["persistentVolume"]["enabled"] is True
    assert v["replicas"] == 1
    assert v["image"] == {"repository": "public.ecr.aws/docker/library/redis",
                          "tag": "8.8.0-alpine", "pullPolicy": "IfNotPresent"}


def test_release_values_hold_no_secret_and_are_not_hidden(dev_run):
    rel = redis_release(dev_run)
    text = json.dumps(rel.inputs)
    assert MOCK_SECRET_PREFIX not in text
    assert not is_secret(rel.wire_inputs["values"])
    checksum = rel.wire_inputs["values"]["redis"]["podAnnotations"]["checksum/auth"]
    assert isinstance(checksum, str) and len(checksum) == 64
    assert checksum == password_checksum(f"{MOCK_SECRET_PREFIX}authproxy-secrets-redis-password")


def test_auth_secret_holds_the_generated_password_as_a_secret(dev_run):
    (auth,) = [s for s in dev_run.kube("Secret") if s.name == "authproxy-session-store-auth"]
    assert auth.inputs["metadata"]["name"] == f"{REDIS_RELEASE}-auth"
    assert auth.inputs["metadata"]["namespace"] == "authproxy"
    assert auth.inputs["stringData"] == {AUTH_KEY: f"{MOCK_SECRET_PREFIX}authproxy-secrets-redis-password"}
    assert is_secret(auth.wire_inputs["stringData"])


def test_release_is_a_child_of_the_session_store_in_the_created_namespace(dev_run):
    rel = redis_release(dev_run)
    assert rel.parent.endswith("SessionStore::authproxy-session-store")
    (ns,) = [r for r in dev_run.kube("Namespace") if r.name == "authproxy-namespace"]
    assert ns.inputs["metadata"]["name"] == "authproxy"


def test_dev_redis_network_policy_registered(dev_run):
    (pol,) = [p for p in dev_run.kube("NetworkPolicy") if p.name == "authproxy-session-store-redis-ingress"]
    assert pol.inputs["spec"]["podSelector"]["matchLabels"] == {
        "app": "redis-ha", "release": REDIS_RELEASE}


def test_prod_release_is_ha_with_sentinel_and_metrics(prod_run):
    v = redis_release(prod_run).inputs["values"]
    assert v["replicas"] == 3
    assert v["sentinel"]["auth"] is True and v["sentinel"]["quorum"] == 2
    assert v["redis"]["masterGroupName"] == "authproxy"
    assert v["podDisruptionBudget"] == {"maxUnavailable": 1}
    assert v["exporter"]["enabled"] is True
    assert v["exporter"]["serviceMonitor"]["enabled"] is True


def test_metrics_off_under_mocks():
    run = run_program("prod", overrides={"redis": {"metrics": False}})
    v = redis_release(run).inputs["values"]
    assert v["exporter"]["enabled"] is False
    assert v["exporter"]["serviceMonitor"]["enabled"] is False


def test_chart_override_from_config_reaches_the_release():
    run = run_program("dev", overrides={"redis": {"chart": {
        "repository": "oci://registry.corp/charts", "name": "redis-ha", "version": "4.38.0"}}})
    i = redis_release(run).inputs
    assert i["chart"] == "oci://registry.corp/charts/redis-ha" and i["version"] == "4.38.0"
    assert "repositoryOpts" not in i


@pytest.mark.parametrize("redis", [EXTERNAL, EXTERNAL_SENTINEL])
def test_external_mode_deploys_no_chart(redis):
    run = run_program("dev", overrides={"redis": redis})
    assert redis_releases(run) == []
    assert not any("redis" in json.dumps(r.inputs.get("chart", ""))
                   for r in run.of_type("kubernetes:helm.sh/v3:Release"))
    names = {r.name for r in run.resources}
    assert "authproxy-session-store-auth" not in names and "authproxy-session-store-redis-ingress" not in names
    (secret,) = [r for r in run.kube("Secret") if r.name == "authproxy-oauth2-proxy-secret"]
    assert secret.inputs["stringData"]["redis-password"] == DEFAULT_TEST_SECRETS[
        "externalRedisPassword"]


# ---------------------------------------------------------------- bad input
def test_unknown_redis_mode_is_rejected_naming_the_key():
    probs, text = problems(redis={"mode": "cluster"})
    assert [k for k, _ in probs] == ["authproxy:redis.mode"]
    assert "'cluster'" in text and "standalone" in text


def test_unknown_mode_fails_before_anything_is_created():
    with pytest.raises(C.ConfigError, match=r"authproxy:redis\.mode"):
        run_program("dev", overrides={"redis": {"mode": "cluster"}})


def test_ha_without_master_name_is_rejected():
    probs, text = problems("prod", redis={"sentinel": {"masterName": "", "replicas": 3}})
    assert ("authproxy:redis.sentinel.masterName" in [k for k, _ in probs])
    assert "set one" in text


def test_invalid_master_name_is_rejected():
    probs, _ = problems("prod", redis={"sentinel": {"masterName": "bad name!", "replicas": 3}})
    assert [k for k, _ in probs] == ["authproxy:redis.sentinel.masterName"]


def test_ha_needs_three_servers():
    probs, _ = problems("prod", redis={"sentinel": {"masterName": "m", "replicas": 2}})
    assert [k for k, _ in probs] == ["authproxy:redis.sentinel.replicas"]


def test_external_sentinel_without_master_name_is_rejected():
    probs, _ = problems(redis={"mode": "external", "external": {
        "sentinelUrls": ["redis://s1.example.net:26379"]}})
    assert [k for k, _ in probs] == ["authproxy:redis.external.sentinelMasterName"]


def test_external_master_name_without_sentinels_is_rejected():
    probs, _ = problems(redis={"mode": "external", "external": {
        "url": "", "sentinelMasterName": "m"}})
    assert "authproxy:redis.external" in [k for k, _ in probs]
    probs, _ = problems(redis={"mode": "external", "external": {
        "url": "redis://r.example.net:6379", "sentinelMasterName": "m"}})
    assert [k for k, _ in probs] == ["authproxy:redis.external.sentinelUrls"]


def test_external_url_and_sentinels_together_are_rejected():
    probs, _ = problems(redis={"mode": "external", "external": {
        "url": "redis://r.example.net:6379", "sentinelUrls": ["redis://s.example.net:26379"],
        "sentinelMasterName": "m"}})
    assert [k for k, _ in probs] == ["authproxy:redis.external.sentinelUrls"]


def test_bad_sentinel_url_is_rejected():
    probs, _ = problems(redis={"mode": "external", "external": {
        "sentinelUrls": ["http://s.example.net"], "sentinelMasterName": "m"}})
    assert [k for k, _ in probs] == ["authproxy:redis.external.sentinelUrls"]


def test_external_without_password_or_url_is_rejected():
    probs, _ = problems(secrets={"keycloakAdminPassword"}, redis={"mode": "external"})
    keys = [k for k, _ in probs]
    assert "authproxy:externalRedisPassword" in keys and "authproxy:redis.external" in keys


def test_external_block_outside_external_mode_is_rejected():
    probs, _ = problems(redis={"external": {"url": "redis://r.example.net:6379"}})
    assert [k for k, _ in probs] == ["authproxy:redis.external"]


@pytest.mark.parametrize("field", ["image", "exporterImage"])
@pytest.mark.parametrize("tag", ["latest", ""])
def test_redis_image_tag_latest_is_rejected(field, tag):
    probs, text = problems(redis={field: {"repository": "r.example/redis", "tag": tag}})
    assert [k for k, _ in probs] == [f"authproxy:redis.{field}.tag"]
    assert "pinned" in text


def test_chart_version_must_be_exact():
    probs, _ = problems(redis={"chart": {"repository": "https://c.example", "name": "redis-ha",
                                         "version": "4.x"}})
    assert [k for k, _ in probs] == ["authproxy:redis.chart.version"]


def test_bad_persistence_size_is_rejected():
    probs, text = problems(redis={"persistence": {"size": "lots"}})
    assert [k for k, _ in probs] == ["authproxy:redis.persistence.size"]
    assert "quantity" in text
