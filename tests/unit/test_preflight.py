"""The preflight: every check passes on a ready cluster and fails, alone and with one line naming
the fix, when the one thing it guards is missing; the framework's verdict (preview vs up, refused
reads, skip); the reader's kubeconfig resolution (the provider's rules) and its GET-only requests
against an API server stand-in; Keycloak's TLS trust through a real HTTPS server with a private CA."""

from __future__ import annotations

import datetime
import http.server
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml

import preflight
from authproxy_local.cluster.ready import Cluster, FakeReader, obj, pod, ready_cluster
from authproxy_local.render.mockrun import project_config
from components.config import StackConfig
from preflight import ambient as pamb
from preflight import app_selectors as pa
from preflight import checks as pc
from preflight import reader as rd
from preflight.core import (
    CHECKS,
    Failure,
    Get,
    HttpGet,
    List,
    PreflightError,
    Result,
    ServerVersion,
    Snapshot,
)
from tests.unit.stacks import load_stack

STACKS = ["dev", "prod", "gateway-api", "ambient"]


def run(cfg: StackConfig, cluster: Cluster, dry_run: bool = False) -> tuple[list[Failure], list[str]]:
    """(errors, warnings) of one preflight run."""
    warnings: list[str] = []
    try:
        preflight.run(cfg, preflight.KubeTarget(), dry_run, reader=FakeReader(cluster),
                      warn=warnings.append, info=lambda _m: None)
    except PreflightError as e:
        return e.failures, warnings
    return [], warnings


def modes(stack: str, **over: Any) -> Iterator[StackConfig]:
    for mode in ("extension-provider", "envoy-filter"):
        cfg = load_stack(stack, istio={"extAuthzMode": mode, "install": {"enabled": False}}, **over)
        if any(a.authorize_at != "sidecar" for a in cfg.apps) and mode == "envoy-filter":
            continue
        yield cfg


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("dry_run", [False, True], ids=["up", "preview"])
def test_a_ready_cluster_passes_every_check(stack: str, dry_run: bool) -> None:
    for cfg in modes(stack):
        errors, warnings = run(cfg, ready_cluster(cfg), dry_run)
        assert errors == [] and warnings == [], (cfg.istio.ext_authz_mode, errors, warnings)


def _istiod_gone(c: Cluster, cfg: StackConfig) -> None:
    c.drop("Deployment", "istiod")


def _old_istio(c: Cluster, cfg: StackConfig) -> None:
    d = c.find("Deployment", "istiod")[0]
    d["metadata"]["labels"]["app.kubernetes.io/version"] = "1.20.3"


def _no_provider(c: Cluster, cfg: StackConfig) -> None:
    cm = c.find("ConfigMap", "istio")[0]
    cm["data"]["mesh"] = yaml.safe_dump({"pathNormalization": {"normalization": "DECODE_AND_MERGE_SLASHES"}})


def _fail_open_provider(c: Cluster, cfg: StackConfig) -> None:
    cm = c.find("ConfigMap", "istio")[0]
    mesh = yaml.safe_load(cm["data"]["mesh"])
    mesh["extensionProviders"][0]["envoyExtAuthzHttp"]["failOpen"] = True
    cm["data"]["mesh"] = yaml.safe_dump(mesh)


def _base_normalization(c: Cluster, cfg: StackConfig) -> None:
    cm = c.find("ConfigMap", "istio")[0]
    mesh = yaml.safe_load(cm["data"]["mesh"])
    del mesh["pathNormalization"]
    cm["data"]["mesh"] = yaml.safe_dump(mesh)


def _gateway_pods_gone(c: Cluster, cfg: StackConfig) -> None:
    c.objects = [o for o in c.objects
                 if not (o["kind"] == "Pod" and o["metadata"]["namespace"] == cfg.istio.gateway.namespace)]


def _service_gone(c: Cluster, cfg: StackConfig) -> None:
    c.drop("Service", cfg.apps[0].service.name)


def _wrong_port(c: Cluster, cfg: StackConfig) -> None:
    c.find("Service", cfg.apps[0].service.name)[0]["spec"]["ports"] = [{"port": 9999}]


def _no_sidecar(c: Cluster, cfg: StackConfig) -> None:
    p = c.find("Pod", f"{cfg.apps[0].service.name}-app-0")[0]
    p["spec"]["containers"] = [x for x in p["spec"]["containers"] if x["name"] != "istio-proxy"]


def _no_pods(c: Cluster, cfg: StackConfig) -> None:
    c.drop("Pod", f"{cfg.apps[0].service.name}-app-0")


def _ambient(c: Cluster, cfg: StackConfig) -> None:
    _no_sidecar(c, cfg)
    ns = c.find("Namespace", cfg.apps[0].service.namespace)[0]
    ns["metadata"]["labels"] = {"istio.io/dataplane-mode": "ambient"}


def _tls_gone(c: Cluster, cfg: StackConfig) -> None:
    cm = cfg.istio.cert_manager
    c.drop(cm.issuer_kind if cm.issuer else "Secret")


def _issuer_not_ready(c: Cluster, cfg: StackConfig) -> None:
    c.find("ClusterIssuer")[0]["status"]["conditions"][0].update(status="False", message="ACME account not registered")


def _no_default_class(c: Cluster, cfg: StackConfig) -> None:
    c.find("StorageClass")[0]["metadata"]["annotations"] = {}


def _two_nodes(c: Cluster, cfg: StackConfig) -> None:
    c.drop("Node", "node-2")


def _cordoned(c: Cluster, cfg: StackConfig) -> None:
    c.find("Node", "node-1")[0]["spec"] = {"unschedulable": True}


def _keycloak_down(c: Cluster, cfg: StackConfig) -> None:
    c.http.clear()


def _wrong_issuer(c: Cluster, cfg: StackConfig) -> None:
    for r in c.http.values():
        r.value["json"]["issuer"] = "https://keycloak.internal:8443/realms/x"


def _no_gateway_class(c: Cluster, cfg: StackConfig) -> None:
    c.drop("GatewayClass")


def _no_gateway_api(c: Cluster, cfg: StackConfig) -> None:
    c.drop("GatewayClass")
    c.unserved.add(("gateway.networking.k8s.io/v1", "GatewayClass"))


def _ambient_pod(c: Cluster, cfg: StackConfig) -> dict[str, Any]:
    return c.find("Pod", f"{cfg.apps[0].service.name}-app-0")[0]


def _ambient_injected(c: Cluster, cfg: StackConfig) -> None:
    _ambient_pod(c, cfg)["spec"]["containers"].append({"name": "istio-proxy", "image": "proxyv2"})


def _not_enrolled(c: Cluster, cfg: StackConfig) -> None:
    c.find("Namespace", cfg.apps[0].service.namespace)[0]["metadata"]["labels"] = {}


def _opted_out(c: Cluster, cfg: StackConfig) -> None:
    _ambient_pod(c, cfg)["metadata"]["labels"]["istio.io/dataplane-mode"] = "none"


def _not_captured(c: Cluster, cfg: StackConfig) -> None:
    _ambient_pod(c, cfg)["metadata"]["annotations"] = {}


def _ambient_other_labels(c: Cluster, cfg: StackConfig) -> None:
    _ambient_pod(c, cfg)["metadata"]["labels"] = {"app": cfg.apps[0].service.name}


def _no_ambient_pods(c: Cluster, cfg: StackConfig) -> None:
    c.drop("Pod", f"{cfg.apps[0].service.name}-app-0")


def _no_waypoint_class(c: Cluster, cfg: StackConfig) -> None:
    c.drop("GatewayClass", "istio-waypoint")


def _istio_1_23(c: Cluster, cfg: StackConfig) -> None:
    c.find("Deployment", "istiod")[0]["metadata"]["labels"]["app.kubernetes.io/version"] = "1.23.2"


def _other_labels(c: Cluster, cfg: StackConfig) -> None:
    p = c.find("Pod", f"{cfg.apps[0].service.name}-app-0")[0]
    p["metadata"]["labels"] = {"app": cfg.apps[0].service.name}


def _canary(c: Cluster, cfg: StackConfig) -> None:
    s = cfg.apps[1].service
    c.objects.append(pod(f"{s.name}-canary-0", s.namespace, {"app": s.name}))


def _gateway_as_default(c: Cluster, cfg: StackConfig) -> None:
    for p in c.find("Pod"):
        if p["metadata"]["namespace"] == cfg.istio.gateway.namespace:
            p["spec"]["serviceAccountName"] = "default"


# (check, stack, break the cluster, words the one line must contain)
BREAKS: list[tuple[str, str, Callable[[Cluster, StackConfig], None], list[str]]] = [
    ("istio-control-plane", "dev", _istiod_gone, ["no istiod", "authproxy:preflight.istioNamespace"]),
    ("istio-control-plane", "prod", _old_istio, ["1.20.3", "upgrade Istio"]),
    ("istio-mesh-config", "dev", _no_provider, ["no extension provider 'authproxy-oauth2-proxy'",
                                                "deny every request", "envoy-filter"]),
    ("istio-mesh-config", "prod", _fail_open_provider, ["differs", "failOpen"]),
    ("istio-mesh-config", "dev", _base_normalization, ["BASE", "DECODE_AND_MERGE_SLASHES",
                                                       "every workload"]),
    ("gateway", "dev", _gateway_pods_gone, ["no gateway pods", "istio=ingressgateway",
                                            "authproxy:istio.gateway.namespace"]),
    ("gateway", "gateway-api", _no_gateway_class, ["GatewayClass 'istio'",
                                                   "authproxy:istio.gatewayApi.className"]),
    ("gateway", "gateway-api", _no_gateway_api, ["Gateway API CRDs are not installed"]),
    ("app-service", "dev", _service_gone, ["Service demo/echo does not exist", "authproxy:apps[0].service"]),
    ("app-service", "prod", _wrong_port, ["no port 3000", "authproxy:apps[0].service.port"]),
    ("app-sidecar", "dev", _no_sidecar, ["1 of 1 pods", "no istio-proxy sidecar",
                                         "istio-injection=enabled"]),
    ("app-sidecar", "dev", _no_pods, ["no pods behind Service demo/echo"]),
    ("app-sidecar", "dev", _ambient, ["ambient mode", "authproxy:apps[0].dataplane ambient"]),
    ("app-ambient", "ambient", _ambient_injected, ["1 of 1 pods", "run an istio-proxy sidecar",
                                                   "istio-injection-", "authproxy:apps[0].dataplane sidecar"]),
    ("app-ambient", "ambient", _opted_out, ["not in ambient mode", "istio.io/dataplane-mode=none"]),
    ("app-ambient", "ambient", _not_captured, ["not captured by ztunnel", "ambient.istio.io/redirection",
                                               "istio-cni"]),
    ("app-ambient", "ambient", _ambient_other_labels, [
        "1 of 1 pods of Service demo/echo do not carry authproxy:apps[0].workloadLabels "
        "{'app.kubernetes.io/name': 'echo'}", "L4 policy does not select them"]),
    ("app-ambient", "ambient", _no_ambient_pods, ["no pods behind Service demo/echo", "enrolled in ambient"]),
    ("app-ambient", "ambient", _no_waypoint_class, ["GatewayClass 'istio-waypoint' does not exist",
                                                    "ambient profile"]),
    ("app-ambient", "ambient", _istio_1_23, ["Istio 1.23.2", "1.24 or newer", "upgrade Istio"]),
    ("app-workload-labels", "dev", _other_labels, [
        "1 of 1 pods behind Service demo/echo (e.g. echo-app-0) do not carry "
        "authproxy:apps[0].workloadLabels {'app.kubernetes.io/name': 'echo'}",
        "they select no pod at all", "the Service's selector is {'app': 'echo'}"]),
    ("app-workload-labels", "prod", _canary, [
        "1 of 2 pods behind Service", "(e.g. wiki-canary-0)", "authproxy:apps[1].workloadLabels",
        "they select 1 pods."]),
    ("gateway-identity", "dev", _gateway_as_default, [
        "run as service account(s) ['default'], not 'istio-ingressgateway'",
        "the sidecars of ['echo', 'admin'] would refuse", "authproxy:istio.gateway.serviceAccount"]),
    # ambient only: no sidecar, but the waypoints admit tokens only from the gateway's identity
    ("gateway-identity", "ambient", _gateway_as_default, [
        "run as service account(s) ['default'], not 'istio-ingressgateway'",
        "the waypoints of ['echo', 'admin'] would refuse", "authproxy:istio.gateway.serviceAccount"]),
    ("tls", "dev", _tls_gone, ["TLS Secret istio-ingress/authproxy-tls does not exist",
                               "kubectl -n istio-ingress create secret tls"]),
    ("tls", "prod", _tls_gone, ["ClusterIssuer letsencrypt does not exist"]),
    ("tls", "prod", _issuer_not_ready, ["is not Ready", "ACME account not registered"]),
    ("storage-class", "dev", _no_default_class, ["no default StorageClass", "standard",
                                                 "authproxy:redis.persistence.storageClass"]),
    ("redis-nodes", "prod", _two_nodes, ["3 Redis servers", "2 ready, schedulable"]),
    ("redis-nodes", "prod", _cordoned, ["2 ready, schedulable"]),
    ("keycloak", "dev", _keycloak_down, ["not reachable", "authproxy:keycloak.caCertificate"]),
    ("keycloak", "prod", _wrong_issuer, ["https://keycloak.internal:8443/realms/x", "authproxy:keycloak.url"]),
]


@pytest.mark.parametrize("name,stack,breaks,words", BREAKS,
                         ids=[f"{b[0]}-{b[1]}-{b[2].__name__.strip('_')}" for b in BREAKS])
def test_each_check_fails_alone_with_one_line_naming_the_fix(
        name: str, stack: str, breaks: Callable[[Cluster, StackConfig], None], words: list[str]) -> None:
    cfg = next(modes(stack))
    cluster = ready_cluster(cfg)
    assert run(cfg, cluster) == ([], [])
    breaks(cluster, cfg)
    errors, _ = run(cfg, cluster)
    assert [f.check for f in errors] == [name], errors
    line = errors[0].line()
    assert "\n" not in line
    for w in words:
        assert w in line, line


def test_a_namespace_not_enrolled_is_one_line_per_ambient_app() -> None:
    cfg = next(modes("ambient"))
    cluster = ready_cluster(cfg)
    _not_enrolled(cluster, cfg)
    errors, _ = run(cfg, cluster)
    assert [(f.check, f.subject) for f in errors] == [("app-ambient", "echo"), ("app-ambient", "admin")]
    for f in errors:
        assert "not in ambient mode" in f.message and "istio.io/dataplane-mode=ambient" in f.message


def test_an_existing_waypoint_must_be_a_programmed_waypoint_for_services() -> None:
    cfg = next(modes("ambient", apps=[{**a, "waypoint": {"name": "shared", "create": False,
                                                         "namespace": "mesh"}}
                                      for a in project_config("ambient")["apps"]]))
    cluster = ready_cluster(cfg)
    assert run(cfg, cluster) == ([], [])
    gw = cluster.find("Gateway", "shared")[0]
    gw["status"]["conditions"][0].update(status="False", message="no pods ready")
    assert [f.message for f in run(cfg, cluster)[0]] == [
        "waypoint mesh/shared is not Programmed (no pods ready): fix it first"]
    gw["metadata"]["labels"]["istio.io/waypoint-for"] = "workload"
    assert "for 'workload' traffic" in run(cfg, cluster)[0][0].message
    gw["spec"]["gatewayClassName"] = "istio"
    assert "of class 'istio', not a waypoint" in run(cfg, cluster)[0][0].message
    cluster.drop("Gateway", "shared")
    (f,) = run(cfg, cluster)[0]
    assert "waypoint Gateway mesh/shared does not exist" in f.message
    assert "authproxy:apps[0].waypoint.create is false" in f.message and "istioctl waypoint apply" in f.message


def test_an_existing_waypoint_must_run_as_the_identity_ztunnel_admits() -> None:
    """ztunnel's L4 policy on an ambient app's pods admits only the waypoint's identity
    (apps[].waypoint.serviceAccount, default its name): an existing waypoint's pods under another
    account would have every request refused."""
    apps = [{**a, "waypoint": {"name": "shared", "create": False, "namespace": "mesh"}}
            for a in project_config("ambient")["apps"]]
    cfg = next(modes("ambient", apps=apps))
    cluster = ready_cluster(cfg)
    (wp_pod,) = cluster.find("Pod", "shared-0")
    assert wp_pod["spec"]["serviceAccountName"] == "shared"
    assert run(cfg, cluster) == ([], [])
    wp_pod["spec"]["serviceAccountName"] = "mesh-waypoint"
    errors, _ = run(cfg, cluster)
    assert [(f.check, f.subject) for f in errors] == [("app-ambient", "echo")], errors  # one per waypoint
    assert "the pods of waypoint mesh/shared run as service account(s) ['mesh-waypoint'], not 'shared'" \
        in errors[0].message
    assert "authproxy:apps[0].waypoint.serviceAccount to 'mesh-waypoint'" in errors[0].message
    named = [{**a, "waypoint": {**a["waypoint"], "serviceAccount": "mesh-waypoint"}} for a in apps]
    assert run(next(modes("ambient", apps=named)), cluster) == ([], [])
    # a waypoint the stack creates has no pods yet: none are read
    created = next(modes("ambient"))
    reads = pamb._reads(created, Snapshot())
    assert not any(pamb.waypoint_pods_query(a) in reads for a in created.apps)


def test_ambient_apps_are_not_held_to_the_sidecar_check() -> None:
    cfg = next(modes("ambient"))
    assert all(getattr(q, "kind", "") != "Pod" for q in pc._sidecar_reads(cfg, Snapshot()))
    errors, _ = run(cfg, ready_cluster(cfg))
    assert errors == []


@pytest.mark.parametrize("stack", ["dev", "ambient"])
def test_the_gateway_identity_is_not_read_when_only_the_gateway_checks(stack: str) -> None:
    """No app's sidecar or waypoint checks (every app authorizeAt: gateway): nothing admits tokens
    by the gateway's identity, so its account is neither read nor required."""
    apps = [{**a, "authorizeAt": "gateway"} for a in project_config(stack)["apps"]]
    cfg = next(modes(stack, apps=apps))
    assert pa.gateway_identity_checkers(cfg) == []
    assert pa._gateway_pod_reads(cfg, Snapshot()) == []
    cluster = ready_cluster(cfg)
    _gateway_as_default(cluster, cfg)
    assert run(cfg, cluster) == ([], [])
    # one app whose own proxy checks again: the check applies, and fails closed
    apps[1] = {**apps[1], "authorizeAt": "both"}
    cfg = next(modes(stack, apps=apps))
    errors, _ = run(cfg, cluster)
    assert [f.check for f in errors] == ["gateway-identity"], errors
    assert f"of ['{apps[1]['name']}'] would refuse" in errors[0].message


def test_every_check_is_shown_failing_by_a_test() -> None:
    assert {b[0] for b in BREAKS} == set(CHECKS)


def test_the_mesh_config_warns_in_a_preview_and_refuses_the_up() -> None:
    """A preview shows the mesh config to merge (output `meshConfig`); the `up` that would turn
    the gateway's CUSTOM policy into deny-all refuses."""
    cfg = load_stack("dev", istio={"install": {"enabled": False}})
    cluster = ready_cluster(cfg)
    _no_provider(cluster, cfg)
    errors, warnings = run(cfg, cluster, dry_run=True)
    assert errors == [] and len(warnings) == 1
    assert "`pulumi up` refuses" in warnings[0]
    errors, _ = run(cfg, cluster, dry_run=False)
    assert [f.check for f in errors] == ["istio-mesh-config"]


def test_envoy_filter_mode_needs_no_mesh_config() -> None:
    cfg = load_stack("dev", istio={"extAuthzMode": "envoy-filter", "install": {"enabled": False}})
    cluster = ready_cluster(cfg)
    cluster.drop("ConfigMap", "istio")
    assert run(cfg, cluster) == ([], [])


def test_a_refused_read_warns_in_a_preview_and_fails_the_up() -> None:
    """A read-only preview identity may not read Secrets: the preview warns, `up` fails closed."""
    cfg = load_stack("dev", istio={"install": {"enabled": False}})
    cluster = ready_cluster(cfg)
    cluster.forbidden.add(("v1", "Secret"))
    errors, warnings = run(cfg, cluster, dry_run=True)
    assert errors == [] and len(warnings) == 1 and "forbidden" in warnings[0]
    errors, _ = run(cfg, cluster)
    assert [f.check for f in errors] == ["tls"]
    assert "docs/preflight.md#permissions" in errors[0].message


def test_no_secret_value_reaches_a_message() -> None:
    cfg = load_stack("dev", istio={"install": {"enabled": False}})
    cluster = ready_cluster(cfg)
    reader = FakeReader(cluster)
    _no_default_class(cluster, cfg)
    _no_sidecar(cluster, cfg)
    with pytest.raises(PreflightError) as e:
        preflight.run(cfg, preflight.KubeTarget(), False, reader=reader, warn=print, info=print)
    assert "a2V5" not in str(e.value) and "Y2VydA==" not in str(e.value)
    secret_reads = [q for q in reader.asked if isinstance(q, Get) and q.kind == "Secret"]
    assert secret_reads and all(q.metadata_only for q in secret_reads)


def test_the_error_is_one_line_per_problem_and_says_nothing_was_created() -> None:
    cfg = load_stack("prod")
    cluster = ready_cluster(cfg)
    _two_nodes(cluster, cfg)
    _tls_gone(cluster, cfg)
    with pytest.raises(PreflightError) as e:
        preflight.run(cfg, preflight.KubeTarget(), False, reader=FakeReader(cluster),
                      warn=print, info=print)
    lines = str(e.value).splitlines()
    assert lines[0] == "preflight: 2 problems in the fake cluster; nothing was created or changed:"
    assert [ln.split(":")[0] for ln in lines[1:]] == ["  - tls", "  - redis-nodes"]
    assert isinstance(e.value, __import__("pulumi").RunError)  # printed without a traceback


def test_an_unreachable_cluster_is_one_line() -> None:
    class Down(FakeReader):
        def read(self, q: Any) -> Result:
            return Result("error", detail="ConnectError: [Errno 111] Connection refused")

    cfg = load_stack("dev")
    with pytest.raises(PreflightError) as e:
        preflight.run(cfg, preflight.KubeTarget(), True, reader=Down(Cluster([])), warn=print, info=print)
    assert len(e.value.failures) == 1
    assert "Connection refused" in str(e.value) and "kubernetes:kubeconfig" in str(e.value)
    assert "authproxy:preflight.enabled false" in str(e.value)


def test_skip_and_unknown_names() -> None:
    cfg = load_stack("dev", istio={"install": {"enabled": False}}, preflight={"skip": ["keycloak"]})
    cluster = ready_cluster(cfg)
    _keycloak_down(cluster, cfg)
    assert run(cfg, cluster) == ([], [])
    bad = load_stack("dev", preflight={"skip": ["keycloak", "no-such-check"]})
    errors, _ = run(bad, cluster)
    assert errors[0].check == "config" and "no-such-check" in errors[0].message


def test_the_pods_are_read_after_their_service() -> None:
    """Reads may depend on earlier reads: the Service's own selector picks the pods."""
    cfg = load_stack("dev", istio={"install": {"enabled": False}})
    cluster = ready_cluster(cfg)
    cluster.find("Service", "echo")[0]["spec"]["selector"] = {"app.kubernetes.io/name": "echo"}
    cluster.find("Pod", "echo-app-0")[0]["metadata"]["labels"] = {"app.kubernetes.io/name": "echo"}
    reader = FakeReader(cluster)
    preflight.run(cfg, preflight.KubeTarget(), False, reader=reader, warn=print, info=print)
    pods = List("v1", "Pod", "demo", (("app.kubernetes.io/name", "echo"),))
    svc = Get("v1", "Service", "echo", "demo")
    assert reader.asked.index(svc) < reader.asked.index(pods)
    assert reader.asked[0] == ServerVersion()


def test_revisions() -> None:
    cfg = load_stack("dev", istio={"install": {"enabled": False}})
    cluster = ready_cluster(cfg)
    canary = cluster.copy().find("Deployment", "istiod")[0]
    canary["metadata"].update(name="istiod-canary")
    canary["metadata"]["labels"]["istio.io/rev"] = "canary"
    cluster.objects.append(canary)
    assert run(cfg, cluster) == ([], [])  # the default revision is chosen
    cluster.find("Deployment", "istiod")[0]["metadata"]["labels"]["istio.io/rev"] = "stable"
    errors, _ = run(cfg, cluster)
    assert "authproxy:preflight.istioRevision" in errors[0].message and "canary, stable" in errors[0].message
    pinned = load_stack("dev", istio={"install": {"enabled": False}}, preflight={"istioRevision": "canary"})
    errors, _ = run(pinned, cluster)  # a revision's mesh config is the ConfigMap istio-<revision>
    assert [f.message.split(":")[0] for f in errors] == [
        "istiod's mesh config ConfigMap istio-system/istio-canary does not exist"]
    mesh = cluster.copy().find("ConfigMap", "istio")[0]
    mesh["metadata"]["name"] = "istio-canary"
    cluster.objects.append(mesh)
    assert run(pinned, cluster) == ([], [])


def test_provider_fields_left_at_istios_default_are_equal() -> None:
    cfg = load_stack("prod")
    from components.authz import extension_provider
    from components.stack import provider_args

    wanted = extension_provider(provider_args(cfg))
    found = {"name": wanted["name"], "envoyExtAuthzHttp": {
        k: v for k, v in wanted["envoyExtAuthzHttp"].items() if k != "failOpen"}}
    found["envoyExtAuthzHttp"]["port"] = str(found["envoyExtAuthzHttp"]["port"])
    assert pc.provider_differences(found, wanted) == []
    found["envoyExtAuthzHttp"]["pathPrefix"] = "/check"
    found["envoyExtAuthzHttp"]["headersToUpstreamOnAllow"] = ["authorization"]
    assert pc.provider_differences(found, wanted) == ["headersToUpstreamOnAllow", "pathPrefix"]


def test_the_version_comes_from_the_image_when_unlabelled() -> None:
    d = obj("apps/v1", "Deployment", "istiod", "istio-system", {"app": "istiod"},
            spec={"template": {"spec": {"containers": [
                {"name": "discovery", "image": "registry.local:5000/istio/pilot:1.24.2-distroless"}]}}})
    assert pc.istio_version(d) == (1, 24, 2)
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.local:5000/pilot@sha256:ab"
    assert pc.istio_version(d) is None


def test_installing_istio_refuses_a_cluster_that_already_runs_it() -> None:
    cfg = load_stack("dev", istio={"install": {"enabled": True}})
    cluster = ready_cluster(cfg)
    errors, _ = run(cfg, cluster)
    assert [f.check for f in errors] == ["istio-control-plane"]
    assert "authproxy:istio.install.enabled false" in errors[0].message
    # istiod from the stack's own release (a later `up`): fine; no Istio at all: fine
    cluster.find("Deployment", "istiod")[0]["metadata"]["annotations"] = {
        "meta.helm.sh/release-name": "istiod", "meta.helm.sh/release-namespace": "istio-system"}
    assert run(cfg, cluster) == ([], [])
    cluster.drop("Deployment", "istiod")
    cluster.objects = [o for o in cluster.objects if o["kind"] != "Pod" or o["metadata"]["namespace"] == "demo"]
    assert run(cfg, cluster) == ([], [])


def test_native_sidecars_count() -> None:
    p = pod("a", "demo", {"app": "a"}, sidecar=False)
    p["spec"]["initContainers"] = [{"name": "istio-proxy", "restartPolicy": "Always"}]
    assert pc.has_sidecar(p)
    p["spec"]["initContainers"] = [{"name": "istio-proxy"}]
    assert not pc.has_sidecar(p)


def test_existing_realm_missing() -> None:
    cfg = load_stack("prod")
    cluster = ready_cluster(cfg)
    url = pc.discovery_query(cfg).url
    assert "/realms/corp/" in url
    cluster.http[url] = Result("ok", {"status": 404, "json": {"error": "Realm does not exist"}})
    errors, _ = run(cfg, cluster)
    assert "no realm 'corp'" in errors[0].message


def test_switched_off() -> None:
    cfg = load_stack("dev")
    assert preflight.switched_off(cfg, {}) is None
    assert "AUTHPROXY_PREFLIGHT=off" in (preflight.switched_off(cfg, {"AUTHPROXY_PREFLIGHT": "off"}) or "")
    off = load_stack("dev", preflight={"enabled": False})
    assert preflight.switched_off(off, {}) == "authproxy:preflight.enabled is false"


def test_under_mocks_the_program_does_not_read_a_cluster() -> None:
    from authproxy_local.render.mockrun import run_program

    # Would raise PreflightError (no cluster) if the preflight ran under the mocks.
    assert run_program("prod").of_type("kubernetes:core/v1:Namespace")


# ------------------------------------------------------------------ kubeconfig (the provider's rules)
def kubeconfig(server: str, context: str = "ctx", ca: str = "ca.crt") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority": ca}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            "users": [{"name": context, "user": {"token": "t0ken"}}]}


def test_kubeconfig_from_config_path_home_and_inline(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "kube").mkdir(parents=True)
    (home / "kube" / "cfg").write_text(yaml.safe_dump(kubeconfig("https://a:6443")))
    single, where = rd.single_config(rd.KubeTarget(kubeconfig="~/kube/cfg"), {}, home)
    assert single.cluster.server == "https://a:6443"
    assert single.cluster.certificate_auth == str(home / "kube" / "ca.crt")  # relative to its file
    assert where == "context 'ctx' (https://a:6443)"
    inline = yaml.safe_dump(kubeconfig("https://b:6443", ca="/etc/ca.crt"))
    single, _ = rd.single_config(rd.KubeTarget(kubeconfig=inline), {}, home)
    assert single.cluster.server == "https://b:6443"


def test_kubeconfig_env_list_merges_first_wins_and_context_override(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text(yaml.safe_dump(kubeconfig("https://a:6443", "one")))
    second = kubeconfig("https://b:6443", "two")
    second["clusters"].append({"name": "one", "cluster": {"server": "https://shadowed:1"}})
    b.write_text(yaml.safe_dump(second))
    env = {"KUBECONFIG": f"{a}:{tmp_path / 'missing'}:{b}"}
    single, _ = rd.single_config(rd.KubeTarget(), env, tmp_path)
    assert (single.context_name, single.cluster.server) == ("one", "https://a:6443")
    single, _ = rd.single_config(rd.KubeTarget(context="two"), env, tmp_path)
    assert single.cluster.server == "https://b:6443"
    single, _ = rd.single_config(rd.KubeTarget(context="two", cluster="one"), env, tmp_path)
    assert single.cluster.server == "https://a:6443"
    with pytest.raises(rd.TargetError, match="Context 'three' not found"):
        rd.single_config(rd.KubeTarget(context="three"), env, tmp_path)


def test_no_kubeconfig_at_all(tmp_path: Path) -> None:
    with pytest.raises(rd.TargetError, match="no kubeconfig"):
        rd.single_config(rd.KubeTarget(), {}, tmp_path)
    with pytest.raises(rd.TargetError, match="neither a file nor a kubeconfig"):
        rd.single_config(rd.KubeTarget(kubeconfig="/no/such/file"), {}, tmp_path)


# ------------------------------------------------------------------ the reader against an API server stand-in
def api_server(objects: dict[str, Any], seen: list[httpx.Request]) -> httpx.MockTransport:
    """Answers like kube-apiserver: named 404s for missing objects, bare 404s for unserved kinds,
    403 for secrets in `locked`, pages of one item for lists."""

    def handle(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        path = req.url.path
        if path == "/version":
            return httpx.Response(200, json={"gitVersion": "v1.35.4"})
        if path.startswith("/apis/cert-manager.io"):
            return httpx.Response(404, text="404 page not found")
        if "/namespaces/locked/" in path:
            return httpx.Response(403, json={"kind": "Status", "reason": "Forbidden"})
        if path.endswith("/pods"):
            items = [o for o in objects.values() if o["kind"] == "Pod"]
            start = int(req.url.params.get("continue") or 0)
            meta = {"continue": str(start + 1)} if start + 1 < len(items) else {}
            return httpx.Response(200, json={"items": items[start:start + 1], "metadata": meta})
        if path in objects:
            body = objects[path]
            if "as=PartialObjectMetadata" in req.headers.get("accept", ""):
                body = {"kind": "PartialObjectMetadata", "metadata": body["metadata"]}
            return httpx.Response(200, json=body)
        name = path.rsplit("/", 1)[1]
        return httpx.Response(404, json={"kind": "Status", "reason": "NotFound", "details": {"name": name}})

    return httpx.MockTransport(handle)


def write_tls(folder: Path) -> str:
    """A private CA and a `localhost` server certificate (cert.pem, key.pem in ``folder``); the
    CA's PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    return ca_pem


def test_the_live_reader_gets_only(tmp_path: Path) -> None:
    objects = {
        "/api/v1/namespaces/istio-ingress/secrets/tls": obj("v1", "Secret", "tls", "istio-ingress",
                                                           data={"tls.key": "c2VjcmV0"}),
        "/api/v1/namespaces/demo/pods/a": pod("a", "demo", {"app": "x"}),
        "/api/v1/namespaces/demo/pods/b": pod("b", "demo", {"app": "x"}),
    }
    seen: list[httpx.Request] = []
    (tmp_path / "ca").write_text(write_tls(tmp_path))
    single, where = rd.single_config(rd.KubeTarget(kubeconfig=yaml.safe_dump(
        kubeconfig("https://kube.test:6443", ca=str(tmp_path / "ca")))), {}, tmp_path)
    reader = rd.LiveReader(single, where, 5, transport=api_server(objects, seen))
    assert reader.read(ServerVersion()) == Result("ok", {"gitVersion": "v1.35.4"})
    secret = reader.read(Get("v1", "Secret", "tls", "istio-ingress", metadata_only=True))
    assert secret.state == "ok" and "data" not in secret.value
    assert reader.read(Get("v1", "Secret", "other", "istio-ingress", metadata_only=True)).state == "absent"
    assert reader.read(Get("v1", "Secret", "tls", "locked", metadata_only=True)).state == "forbidden"
    assert reader.read(Get("cert-manager.io/v1", "ClusterIssuer", "le")).state == "unserved"
    pods = reader.read(List("v1", "Pod", "demo", (("app", "x"),)))
    assert [p["metadata"]["name"] for p in pods.value] == ["a", "b"]  # two pages
    assert {r.method for r in seen} == {"GET"}
    assert all(r.headers["authorization"] == "Bearer t0ken" for r in seen)
    assert any(r.url.params.get("labelSelector") == "app=x" for r in seen)


def test_loopback_is_never_proxied() -> None:
    assert rd.loopback("https://127.0.0.1:6443") and rd.loopback("https://localhost/x")
    assert rd.loopback("https://[::1]:8443/realms/master")
    assert not rd.loopback("https://k8s.example.com:6443") and not rd.loopback("https://10.0.0.1")


def test_http_get_trusts_a_private_ca_only_when_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keycloak behind a private CA: refused with the system store, accepted with
    keycloak.caCertificate (a real TLS server on loopback)."""
    ca_pem = write_tls(tmp_path)

    class Discovery(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"issuer": "https://localhost/realms/master"}).encode()
            self.send_response(200 if self.path.startswith("/realms/master/") else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Discovery)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # a proxy would refuse: loopback bypasses it
    try:
        url = f"https://localhost:{server.server_address[1]}/realms/master/.well-known/openid-configuration"
        untrusted = rd.http_get(HttpGet(url), 5)
        assert untrusted.state == "error" and "CERTIFICATE_VERIFY_FAILED" in untrusted.detail
        trusted = rd.http_get(HttpGet(url, ca_pem), 5)
        assert trusted == Result("ok", {"status": 200, "json": {"issuer": "https://localhost/realms/master"}})
        missing = rd.http_get(HttpGet(url.replace("/master/", "/corp/"), ca_pem), 5)
        assert missing.value["status"] == 404
    finally:
        server.shutdown()


# ------------------------------------------------------------------ the mesh config to merge before `up`
def test_the_merged_mesh_config_satisfies_the_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """What docs/deploy.md tells a user to run turns the failing mesh-config check into a pass,
    keeping istiod's other settings and providers."""
    from preflight import meshconfig

    cfg = load_stack("prod")
    cluster = ready_cluster(cfg)
    cm = cluster.find("ConfigMap", "istio")[0]
    current = {"accessLogFile": "/dev/stdout", "trustDomain": "cluster.local",
               "extensionProviders": [{"name": "otel", "opentelemetry": {"service": "otel.obs", "port": 4317}},
                                      {"name": "authproxy-oauth2-proxy",
                                       "envoyExtAuthzHttp": {"service": "old", "port": 1}}]}
    cm["data"]["mesh"] = yaml.safe_dump(current)
    assert [f.check for f in run(cfg, cluster)[0]] == ["istio-mesh-config"] * 2
    (tmp_path / "current.yaml").write_text(cm["data"]["mesh"])
    assert meshconfig.main(["--stack", "prod", "--merge", str(tmp_path / "current.yaml"),
                            "--format", "configmap-patch"]) == 0
    cm["data"].update(json.loads(capsys.readouterr().out)["data"])
    assert run(cfg, cluster) == ([], [])
    merged = yaml.safe_load(cm["data"]["mesh"])
    assert merged["accessLogFile"] == "/dev/stdout"
    assert [p["name"] for p in merged["extensionProviders"]] == ["otel", "authproxy-oauth2-proxy"]
    assert meshconfig.main(["--stack", "prod", "--format", "helm-values"]) == 0
    values = yaml.safe_load(capsys.readouterr().out)
    from authproxy_local.render.mockrun import run_program
    assert values["meshConfig"] == yaml.safe_load(run_program("prod").plain_output("meshConfig"))


def test_meshconfig_errors_name_the_problem(capsys: pytest.CaptureFixture[str]) -> None:
    from preflight import meshconfig

    assert meshconfig.main(["--stack", "no-such-stack"]) == 2
    assert "Pulumi.no-such-stack.yaml does not exist" in capsys.readouterr().err
