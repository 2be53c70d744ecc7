"""Ambient apps (apps[].dataplane: ambient): config validation by key, the spec builders of
components/ambient.py and the ambient app-side policies of components/authz.py, and the ambient
stack under mocks in both ingress APIs (objects, attachment, the order in which they are applied)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from authproxy_local.render import mockrun
from authproxy_local.render.mockrun import project_config, run_program
from components import ambient as A
from components import config as C
from components.authz import (
    AppAuthzArgs,
    app_attachment,
    app_authorization_policy_spec,
    app_deny_policy_spec,
)

SECRETS = {"keycloakAdminPassword", "keycloakAdminClientSecret", "externalRedisPassword"}
AP = "kubernetes:security.istio.io/v1:AuthorizationPolicy"
RA = "kubernetes:security.istio.io/v1:RequestAuthentication"
GW_API = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
SERVICE_PATCH = "kubernetes:core/v1:ServicePatch"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
ISSUER = "https://keycloak.authproxy.test/realms/authproxy"

L7_SOURCE = {"requestPrincipals", "notRequestPrincipals", "remoteIpBlocks", "notRemoteIpBlocks"}
L7_OPERATION = {"hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"}
L4_WHEN = {"source.ip", "source.namespace", "source.principal", "destination.ip", "destination.port"}
"""What istiod's ambient translation treats as HTTP attributes that ztunnel cannot evaluate
(pilot/pkg/serviceregistry/ambient/authorization.go: httpOperations, httpSources,
l4WhenAttributes)."""


def base(**app: Any) -> dict[str, Any]:
    return {
        "domain": "example.test",
        "apps": [{"name": "one", "host": "one.example.test",
                  "service": {"name": "one", "namespace": "apps", "port": 80},
                  "workloadLabels": {"app": "one"}, "dataplane": "ambient", **app}],
        "keycloak": {"url": "https://sso.example.test"},
        "istio": {"version": "1.31.0", "gateway": {"serviceAccount": "ingress"}},
    }


def load(raw: dict[str, Any]) -> C.StackConfig:
    return C.load(raw, SECRETS)


def problems(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(C.ConfigError) as e:
        load(raw)
    return dict(e.value.problems)


# ---------------------------------------------------------------- config


def test_ambient_app_defaults_to_the_gateway_and_the_waypoint_the_stack_creates():
    app = load(base()).apps[0]
    assert app.ambient and app.authorize_at == "both" and not app.sidecar_checks
    assert app.waypoint_ref == C.AppWaypoint(name="authproxy-waypoint", create=True)
    assert app.waypoint_namespace == "apps"


def test_ambient_app_may_be_checked_only_at_the_waypoint_or_the_gateway():
    assert load(base(authorizeAt="waypoint")).apps[0].authorize_at == "waypoint"
    assert load(base(authorizeAt="gateway")).apps[0].authorize_at == "gateway"


def test_ambient_app_needs_its_pods_labels_by_key():
    """ztunnel's L4 policy selects the pods: no label is guessed, whatever authorizeAt says."""
    for where in ("both", "waypoint", "gateway"):
        raw = base(authorizeAt=where)
        del raw["apps"][0]["workloadLabels"]
        p = problems(raw)
        assert list(p) == ["authproxy:apps[0].workloadLabels"], p
        assert "L4 policy" in p["authproxy:apps[0].workloadLabels"]


def test_sidecar_only_options_are_refused_for_ambient_apps_by_key():
    p = problems(base(authorizeAt="sidecar"))
    assert list(p) == ["authproxy:apps[0].authorizeAt"]
    assert "waypoint" in p["authproxy:apps[0].authorizeAt"]


def test_waypoint_options_are_refused_for_sidecar_apps_by_key():
    raw = base(authorizeAt="waypoint", waypoint={"name": "w"})
    raw["apps"][0]["dataplane"] = "sidecar"
    assert set(problems(raw)) == {"authproxy:apps[0].authorizeAt", "authproxy:apps[0].waypoint"}


def test_waypoint_checks_need_the_gateways_identity_by_key():
    """The waypoint admits a user's token only from the gateway's workload identity, so it must
    be known; an app checked only at the gateway needs none."""
    for where in ("both", "waypoint"):
        raw = base(authorizeAt=where)
        del raw["istio"]["gateway"]
        p = problems(raw)
        assert list(p) == ["authproxy:istio.gateway.serviceAccount"], p
    raw = base(authorizeAt="gateway")
    del raw["istio"]["gateway"]
    assert load(raw).gateway_principal is None


def test_ambient_needs_a_known_istio_new_enough():
    raw = base()
    del raw["istio"]["version"]
    p = problems(raw)
    assert list(p) == ["authproxy:istio.version"] and "1.24" in p["authproxy:istio.version"]
    raw["istio"]["version"] = "1.23.4"
    p = problems(raw)
    assert list(p) == ["authproxy:istio.version"] and "ingress-use-waypoint" in p["authproxy:istio.version"]
    for ok in ("1.24.0", "1.24", "1.31.0-rc.0", "1.40.1"):
        raw["istio"]["version"] = ok
        assert load(raw).istio_version == ok
    raw["istio"]["version"] = "latest"
    assert list(problems(raw)) == ["authproxy:istio.version"]


def test_ambient_is_refused_with_the_stacks_istio_install():
    raw = base()
    raw["istio"] = {"install": {"enabled": True}}
    p = problems(raw)
    assert list(p) == ["authproxy:istio.install.enabled"]
    assert "ztunnel" in p["authproxy:istio.install.enabled"]


def test_only_an_existing_waypoint_may_live_in_another_namespace():
    p = problems(base(waypoint={"name": "w", "namespace": "mesh"}))
    assert list(p) == ["authproxy:apps[0].waypoint.namespace"]
    app = load(base(waypoint={"name": "w", "namespace": "mesh", "create": False})).apps[0]
    assert app.waypoint_namespace == "mesh"


def test_apps_sharing_a_waypoint_must_agree_on_it():
    raw = base(waypoint={"name": "w"})
    raw["apps"].append({**raw["apps"][0], "name": "two", "host": "two.example.test",
                        "waypoint": {"name": "w", "create": False}})
    assert list(problems(raw)) == ["authproxy:apps[1].waypoint"]
    raw["apps"][1]["waypoint"] = {"name": "w"}
    assert len(load(raw).ambient_apps) == 2


def test_nothing_is_created_for_a_bad_ambient_config(monkeypatch):
    created: list[str] = []
    original = mockrun._Monitor.RegisterResource

    def record(self, req):  # the gRPC request
        if req.type != "pulumi:pulumi:Stack":
            created.append(req.type)
        return original(self, req)

    monkeypatch.setattr(mockrun._Monitor, "RegisterResource", record)
    raw = project_config("ambient")
    raw["apps"] = [dict(a, authorizeAt="sidecar") for a in raw["apps"]]
    with pytest.raises(Exception, match=r"apps\[0\]\.authorizeAt"):
        run_program("ambient", config=raw)
    assert created == []


# ---------------------------------------------------------------- spec builders

WP: A.WaypointArgs = {"name": "wp", "namespace": "apps", "create": True, "service_account": "wp"}
APP: A.AmbientAppArgs = {"name": "one", "namespace": "apps", "service": "one-svc",
                         "selector": {"app.kubernetes.io/name": "one"}, "waypoint": WP}


def app(**changes: Any) -> A.AmbientAppArgs:
    return cast(A.AmbientAppArgs, {**APP, **changes})


def test_waypoint_is_the_gateway_istioctl_generates_for_service_traffic():
    assert A.waypoint_gateway_spec() == {
        "gatewayClassName": "istio-waypoint",
        "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
    }
    assert A.waypoint_labels()["istio.io/waypoint-for"] == "service"


def test_service_labels_send_mesh_and_ingress_traffic_through_the_waypoint():
    assert A.service_labels(APP) == {"istio.io/use-waypoint": "wp",
                                     "istio.io/ingress-use-waypoint": "true"}
    other = app(waypoint={**WP, "namespace": "mesh", "create": False})
    assert A.service_labels(other)["istio.io/use-waypoint-namespace"] == "mesh"


def l7_fields(spec: dict[str, Any]) -> set[str]:
    """Every field of an AuthorizationPolicy that ztunnel cannot evaluate."""
    found: set[str] = set()
    for rule in spec.get("rules", []):
        for f in rule.get("from", []):
            found |= L7_SOURCE & set(f["source"])
        for t in rule.get("to", []):
            found |= L7_OPERATION & set(t["operation"])
        found |= {w["key"] for w in rule.get("when", []) if w["key"] not in L4_WHEN}
    return found


def test_ztunnel_policy_denies_everything_but_the_waypoint_with_l4_fields_only():
    spec = A.waypoint_only_policy_spec(APP)
    assert spec == {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "one"}},
        "action": "DENY",
        "rules": [{"from": [{"source": {"notPrincipals": ["*/ns/apps/sa/wp"]}}]}],
    }
    assert not l7_fields(spec)
    # a custom service account of an existing waypoint is its identity
    custom: A.WaypointArgs = {**WP, "service_account": "custom", "namespace": "mesh"}
    assert A.waypoint_principal(custom) == "*/ns/mesh/sa/custom"


def test_network_policy_admits_hbone_from_the_waypoint_and_kubelet_probes():
    spec = A.network_policy_spec(APP)
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "one"}}
    assert spec["policyTypes"] == ["Ingress"]
    hbone, probes = spec["ingress"]
    assert hbone["ports"] == [{"protocol": "TCP", "port": 15008}]
    assert hbone["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}},
        "podSelector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "wp"}}}]
    assert probes == {"from": [{"ipBlock": {"cidr": "169.254.7.127/32"}},
                               {"ipBlock": {"cidr": "fd16:9254:7127:1337:ffff:ffff:ffff:ffff/128"}}]}


def test_a_shared_waypoint_is_created_once():
    two = app(name="two")
    existing = app(name="three", waypoint={**WP, "name": "theirs", "create": False})
    assert A.waypoints_to_create({"prefix": "p", "apps": [APP, two, existing], "policies": []}) == [WP]


AUTHZ_APP: AppAuthzArgs = {
    "name": "one", "host": "one.example.test", "namespace": "apps", "selector": {"app": "one"},
    "groups": ["admins"], "public_paths": ["/healthz"], "api_clients": False,
    "strip_session_cookies": True, "authorize_at": "waypoint", "dataplane": "ambient",
    "service": "one-svc", "service_host": "one-svc.apps.svc.cluster.local",
}


def authz_app(**changes: Any) -> AppAuthzArgs:
    return cast(AppAuthzArgs, {**AUTHZ_APP, **changes})


GATEWAY_SA = "cluster.local/ns/istio-ingress/sa/gw"
AUTHZ_ARGS: Any = {"jwt": {"issuer": ISSUER, "jwks_uri": ISSUER + "/certs", "audiences": ["c"]},
                   "gateway": {"principal": GATEWAY_SA}}


def test_ambient_app_policies_attach_to_the_service_and_the_sidecar_ones_to_the_pods():
    assert app_attachment(AUTHZ_APP) == {
        "targetRefs": [{"group": "", "kind": "Service", "name": "one-svc"}]}
    assert app_attachment(authz_app(dataplane="sidecar")) == {
        "selector": {"matchLabels": {"app": "one"}}}


def test_waypoint_deny_holds_the_principal_gateway_and_group_rules_outside_public_paths():
    spec = app_deny_policy_spec(AUTHZ_ARGS, AUTHZ_APP)
    assert spec["action"] == "DENY" and "selector" not in spec
    no_principal, not_gateway, no_group = spec["rules"]
    assert no_principal == {"from": [{"source": {"notRequestPrincipals": [ISSUER + "/*"]}}],
                            "to": [{"operation": {"notPaths": ["/healthz"]}}]}
    assert not_gateway == {"from": [{"source": {"notPrincipals": [GATEWAY_SA]}}],
                           "to": [{"operation": {"notPaths": ["/healthz"]}}]}
    assert no_group == {"to": [{"operation": {"notPaths": ["/healthz"]}}],
                        "when": [{"key": "request.auth.claims[groups]", "notValues": ["admins"]}]}
    plain = app_deny_policy_spec(AUTHZ_ARGS, authz_app(groups=[], public_paths=[]))
    assert plain["rules"] == [{"from": [{"source": {"notRequestPrincipals": [ISSUER + "/*"]}}]},
                              {"from": [{"source": {"notPrincipals": [GATEWAY_SA]}}]}]
    allow = app_authorization_policy_spec(AUTHZ_ARGS, AUTHZ_APP)
    assert allow["action"] == "ALLOW" and allow["targetRefs"] == spec["targetRefs"]


def test_waypoint_admits_a_users_token_only_from_the_gateways_identity():
    """A token an app received (the user's ID token), replayed from inside the mesh at another
    app's waypoint, comes from the replaying workload's identity: neither ALLOW nor DENY lets it
    through, as at a sidecar (issue 22)."""
    allow = app_authorization_policy_spec(AUTHZ_ARGS, AUTHZ_APP)
    signed_in, public = allow["rules"]
    assert signed_in["from"] == [{"source": {"principals": [GATEWAY_SA],
                                             "requestPrincipals": [ISSUER + "/*"]}}]
    assert public == {"to": [{"operation": {"paths": ["/healthz"]}}]}
    sidecar = app_authorization_policy_spec(AUTHZ_ARGS, authz_app(dataplane="sidecar"))
    assert sidecar["rules"][0]["from"] == signed_in["from"]
    with pytest.raises(ValueError, match="gateway's workload identity"):
        no_gateway: Any = {**AUTHZ_ARGS, "gateway": {"principal": ""}}
        app_deny_policy_spec(no_gateway, AUTHZ_APP)


# ---------------------------------------------------------------- the ambient stack under mocks


@pytest.fixture(scope="module", params=["istio", "gateway-api"])
def run(request) -> tuple[mockrun.Run, dict[str, list[str]]]:
    """The ambient stack under mocks in one ingress API, with each resource's dependencies."""
    deps: dict[str, list[str]] = {}
    original = mockrun._Monitor.RegisterResource

    def record(self, req):  # the gRPC request
        resp = original(self, req)
        deps[resp.urn] = list(req.dependencies)
        return resp

    mp = pytest.MonkeyPatch()
    mp.setattr(mockrun._Monitor, "RegisterResource", record)
    try:
        overrides = {"istio": {"ingressApi": request.param}} if request.param != "istio" else {}
        r = run_program("ambient", overrides=overrides)
    finally:
        mp.undo()
    return r, deps


def of(r: mockrun.Run, type_: str) -> list[mockrun.Registered]:
    return [x for x in r.resources if x.type == type_]


def named(r: mockrun.Run, type_: str, name: str) -> dict[str, Any]:
    (obj,) = [x.inputs for x in of(r, type_) if x.inputs["metadata"]["name"] == name]
    return obj


def test_stack_creates_one_waypoint_for_the_namespace(run):
    r, _ = run
    waypoints = [x.inputs for x in of(r, GW_API)
                 if x.inputs["spec"]["gatewayClassName"] == "istio-waypoint"]
    assert len(waypoints) == 1
    (wp,) = waypoints
    assert wp["metadata"]["name"] == "authproxy-waypoint" and wp["metadata"]["namespace"] == "demo"


def test_stack_labels_the_users_services_by_patch(run):
    r, _ = run
    patches = {x.inputs["metadata"]["name"]: x.inputs for x in of(r, SERVICE_PATCH)}
    assert set(patches) == {"echo", "admin"}
    for p in patches.values():
        assert p["metadata"]["namespace"] == "demo"
        assert p["metadata"]["labels"] == {"istio.io/use-waypoint": "authproxy-waypoint",
                                           "istio.io/ingress-use-waypoint": "true"}
        assert "spec" not in p  # the Service's spec stays the user's
    # the stack never owns an app Service
    assert not [x for x in r.resources if x.type == "kubernetes:core/v1:Service"
                and x.inputs["metadata"]["namespace"] == "demo"]


def test_app_side_policies_attach_to_the_services_never_by_selector(run):
    r, _ = run
    cfg = C.load(project_config("ambient"), SECRETS)
    for app in cfg.apps:
        target = [{"group": "", "kind": "Service", "name": app.service.name}]
        for type_, name in ((RA, f"authproxy-{app.name}-jwt"), (AP, f"authproxy-{app.name}-require-jwt"),
                            (AP, f"authproxy-{app.name}-deny-unsigned")):
            spec = named(r, type_, name)["spec"]
            assert spec["targetRefs"] == target and "selector" not in spec, name
        # the only selector policy in the app namespace is ztunnel's, with L4 fields only
    in_demo = [x.inputs for x in of(r, AP) + of(r, RA) if x.inputs["metadata"]["namespace"] == "demo"]
    selector = [p for p in in_demo if "selector" in p["spec"]]
    assert sorted(p["metadata"]["name"] for p in selector) == [
        "authproxy-admin-waypoint-only", "authproxy-echo-waypoint-only"]
    assert all(not l7_fields(p["spec"]) for p in selector)


def test_services_switch_to_the_waypoint_after_its_policies_and_routes_after_that(run):
    r, deps = run
    urn = {(x.type, x.inputs.get("metadata", {}).get("name"), x.inputs.get("metadata", {}).get("namespace")): x.urn
           for x in r.resources if x.custom}
    for svc in ("echo", "admin"):
        before = set(deps[urn[SERVICE_PATCH, svc, "demo"]])
        for type_, name in ((RA, f"authproxy-{svc}-jwt"), (AP, f"authproxy-{svc}-require-jwt"),
                            (AP, f"authproxy-{svc}-deny-unsigned"), (AP, f"authproxy-{svc}-waypoint-only"),
                            (NETPOL, f"authproxy-{svc}-ambient-hbone"), (GW_API, "authproxy-waypoint")):
            assert urn[type_, name, "demo"] in before, (svc, name)
    routes = [x for x in r.resources if x.type.endswith((":VirtualService", ":HTTPRoute"))]
    assert routes
    for route in routes:
        assert {urn[SERVICE_PATCH, s, "demo"] for s in ("echo", "admin")} <= set(deps[route.urn])


def test_gateway_side_is_unchanged_by_ambient(run):
    """The ingress gateway is an ordinary Envoy in ambient: the same ext_authz, hardening and
    cookie filter as the dev stack's."""
    r, _ = run
    dev = run_program("dev")
    ef = "kubernetes:networking.istio.io/v1alpha3:EnvoyFilter"
    assert sorted(x.inputs["metadata"]["name"] for x in of(r, ef)) == sorted(
        x.inputs["metadata"]["name"] for x in of(dev, ef))
    custom = [x.inputs for x in of(r, AP) if x.inputs["spec"].get("action") == "CUSTOM"]
    assert len(custom) == 1
