"""istio.ingressApi=gateway-api: the Gateway API objects (Gateway, HTTPRoutes, ReferenceGrants),
the same route plan as the Istio ingress (names, backends, header removals), and the gateway's
policies and EnvoyFilters attached by targetRefs. The render of the default ingress is unchanged
(tests/unit/test_render.py); Istio's own translation of these objects runs in the e2e suite."""

from __future__ import annotations

from typing import Any

import pytest

from authproxy_local.render.mockrun import Run, run_program
from components.authz import vhost_ports
from components.config import GATEWAY_NAME_LABEL
from components.headers import identity_headers, never_upstream
from components.ingress import (
    BEARER_PREFIX,
    CHECKED_MARK,
    GATEWAY_API_GROUP,
    RoutedApp,
    app_routes,
    gateway_api_match,
    re2_literal,
)

APP: RoutedApp = {"name": "shop", "public_paths": ["/healthz", "/static/*"], "api_clients": True,
                  "strip_session_cookies": True}


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    return {m: run_program("gateway-api", overrides={"istio": {"extAuthzMode": m}})
            for m in ("extension-provider", "envoy-filter")}


def objs(run: Run, kind: str) -> list[dict[str, Any]]:
    return [r.inputs for r in run.kube(kind)]


def by_name(run: Run, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs(run, kind)}


# ---------------------------------------------------------------- route plan and matches (pure)
def test_the_plan_splits_bearer_and_signed_in_requests_without_a_negative_match():
    routes = app_routes(APP, "gateway-api")
    assert [r.name for r in routes] == [
        "shop-oauth2", "shop-public-0", "shop-public-1", "shop-signed-in", "shop-bearer", "shop-default"]
    signed_in, bearer = routes[3], routes[4]
    assert all("withoutHeaders" not in m for r in routes for m in r.match)
    # The request oauth2-proxy checked (CHECKED_MARK set, its token in Authorization) keeps the
    # default route's behaviour; one more header match = higher Gateway API precedence.
    assert set(signed_in.match[0]["headers"]) == {"authorization", CHECKED_MARK}
    assert (signed_in.ext_authz, signed_in.remove) == (True, never_upstream())
    assert set(bearer.match[0]["headers"]) == {"authorization"}
    assert (bearer.ext_authz, bearer.remove) == (False, identity_headers())
    # The Istio plan is unchanged.
    assert [r.name for r in app_routes(APP)] == [
        "shop-oauth2", "shop-public-0", "shop-public-1", "shop-bearer", "shop-default"]


def test_matches_in_gateway_api_form():
    assert gateway_api_match({}) == {"path": {"type": "PathPrefix", "value": "/"}}
    assert gateway_api_match({"uri": {"exact": "/healthz"}}) == {"path": {"type": "Exact", "value": "/healthz"}}
    m = gateway_api_match({"headers": {"authorization": {"prefix": BEARER_PREFIX}}})
    # no prefix type in the Gateway API: an RE2 pattern, matched whole by Envoy
    assert m["headers"] == [{"type": "RegularExpression", "name": "authorization", "value": "Bearer .*"}]
    with pytest.raises(ValueError, match="absence"):
        gateway_api_match({"withoutHeaders": {CHECKED_MARK: {}}})
    assert re2_literal("a.b*c (d)") == r"a\.b\*c \(d\)"


# ---------------------------------------------------------------- the objects under mocks
def test_gateway_api_objects_replace_the_istio_ingress(runs):
    for run in runs.values():
        assert objs(run, "VirtualService") == []
        gws = objs(run, "Gateway")
        assert [g["apiVersion"] for g in gws] == [f"{GATEWAY_API_GROUP}/v1"]
        spec = gws[0]["spec"]
        assert spec["gatewayClassName"] == "istio"
        http, https = spec["listeners"]
        assert (http["name"], http["port"], http["protocol"]) == ("http", 80, "HTTP")
        assert (https["name"], https["port"], https["protocol"]) == ("https", 443, "HTTPS")
        assert https["tls"] == {"mode": "Terminate", "certificateRefs": [
            {"group": "", "kind": "Secret", "name": "authproxy-tls"}]}
        # routes only from the Gateway's own namespace (the Istio mode's ./host)
        assert http["allowedRoutes"]["namespaces"] == https["allowedRoutes"]["namespaces"] == {"from": "Same"}


def test_http_routes_carry_the_plan(runs):
    run = runs["extension-provider"]
    routes = by_name(run, "HTTPRoute")
    assert sorted(routes) == ["authproxy-app-admin", "authproxy-app-echo", "authproxy-auth-host",
                              "authproxy-https-redirect"]
    redirect = routes["authproxy-https-redirect"]["spec"]
    assert redirect["parentRefs"][0]["sectionName"] == "http"
    assert redirect["hostnames"] == ["auth.authproxy.test", "echo.authproxy.test", "admin.authproxy.test"]
    assert redirect["rules"][0]["filters"] == [
        {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]
    assert "backendRefs" not in redirect["rules"][0]
    echo = routes["authproxy-app-echo"]
    assert echo["metadata"]["namespace"] == "istio-ingress"
    assert echo["spec"]["parentRefs"] == [{"group": GATEWAY_API_GROUP, "kind": "Gateway", "name": "authproxy",
                                           "namespace": "istio-ingress", "sectionName": "https"}]
    rules = {r["name"]: r for r in echo["spec"]["rules"]}
    assert list(rules) == ["echo-oauth2", "echo-public-0", "echo-signed-in", "echo-bearer", "echo-default"]
    assert rules["echo-oauth2"]["backendRefs"][0]["name"] == "oauth2-proxy"
    assert rules["echo-default"]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "echo", "namespace": "demo", "port": 8080, "weight": 1}]
    assert rules["echo-default"]["filters"][0]["requestHeaderModifier"]["remove"] == list(never_upstream())
    assert rules["echo-bearer"]["filters"][0]["requestHeaderModifier"]["remove"] == list(identity_headers())
    assert "filters" not in rules["echo-oauth2"]


def test_reference_grants_exactly_where_routes_cross_namespaces(runs):
    grants = {g["metadata"]["namespace"]: g for g in objs(runs["extension-provider"], "ReferenceGrant")}
    assert sorted(grants) == ["authproxy", "demo"]
    for g in grants.values():
        assert g["spec"]["from"] == [{"group": GATEWAY_API_GROUP, "kind": "HTTPRoute", "namespace": "istio-ingress"}]
    assert grants["authproxy"]["spec"]["to"] == [{"group": "", "kind": "Service", "name": "oauth2-proxy"}]
    assert grants["demo"]["spec"]["to"] == [{"group": "", "kind": "Service", "name": "admin"},
                                            {"group": "", "kind": "Service", "name": "echo"}]
    # A backend in the Gateway's namespace needs none.
    run = run_program("gateway-api", overrides={"apps": [
        {"name": "local", "host": "local.authproxy.test",
         "service": {"name": "local", "namespace": "istio-ingress", "port": 80},
         "workloadLabels": {"app": "local"}}],
        "keycloak": {"demoUsers": []}})
    assert [g["metadata"]["namespace"] for g in objs(run, "ReferenceGrant")] == ["authproxy"]


def test_gateway_policies_attach_by_target_refs_and_sidecars_keep_selectors(runs):
    target = [{"group": GATEWAY_API_GROUP, "kind": "Gateway", "name": "authproxy"}]
    for mode, run in runs.items():
        at_gateway = [o for k in ("AuthorizationPolicy", "RequestAuthentication", "EnvoyFilter")
                      for o in objs(run, k) if o["metadata"]["namespace"] == "istio-ingress"]
        assert len(at_gateway) >= 4, mode
        for o in at_gateway:
            assert o["spec"]["targetRefs"] == target, o["metadata"]["name"]
            assert "selector" not in o["spec"] and "workloadSelector" not in o["spec"]
        in_apps = [o for k in ("AuthorizationPolicy", "RequestAuthentication", "PeerAuthentication")
                   for o in objs(run, k) if o["metadata"]["namespace"] == "demo"]
        assert in_apps and all("selector" in o["spec"] and "targetRefs" not in o["spec"] for o in in_apps)
        # oauth2-proxy admits the pods istiod deploys for the Gateway
        peers = [f for o in objs(run, "NetworkPolicy") for rule in o["spec"].get("ingress", [])
                 for f in rule.get("from", []) if "namespaceSelector" in f and "podSelector" in f
                 and f["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "istio-ingress"}}]
        assert peers and all(f["podSelector"] == {"matchLabels": {GATEWAY_NAME_LABEL: "authproxy"}}
                             for f in peers)


def test_per_route_switches_address_the_https_virtual_hosts_by_rule_name(runs):
    ef = by_name(runs["envoy-filter"], "EnvoyFilter")
    patches = [p for p in ef["authproxy-ext-authz"]["spec"]["configPatches"] if p["applyTo"] == "HTTP_ROUTE"]
    vhosts = {(p["match"]["routeConfiguration"]["vhost"]["name"],
               p["match"]["routeConfiguration"]["vhost"]["route"]["name"]) for p in patches}
    assert ("echo.authproxy.test:443", "echo-bearer") in vhosts
    assert ("auth.authproxy.test:443", "auth-host") in vhosts
    # the HTTP listener only holds the redirect route: nothing to address there
    assert not any(v.endswith(":80") for v, _ in vhosts)
    assert ("echo.authproxy.test:443", "echo-signed-in") not in vhosts
    assert vhost_ports({"name": "g", "namespace": "n", "api": "gateway-api", "selector": {},
                        "http_ports": [80], "https_ports": [443], "principal": None,
                        "hsts": "max-age=1", "underscore_headers": "reject"}) == (443,)


def test_an_existing_gateway_is_attached_to_not_created():
    run = run_program("gateway-api", overrides={"istio": {"gatewayApi": {
        "create": False, "httpListener": "web", "httpsListener": "websecure"}, "gateway": {
        "name": "shared", "namespace": "edge"}}})
    assert objs(run, "Gateway") == []
    routes = by_name(run, "HTTPRoute")
    assert routes["shared-https-redirect"]["spec"]["parentRefs"][0] == {
        "group": GATEWAY_API_GROUP, "kind": "Gateway", "name": "shared", "namespace": "edge",
        "sectionName": "web"}
    assert routes["shared-app-echo"]["spec"]["parentRefs"][0]["sectionName"] == "websecure"
    assert all(o["spec"]["targetRefs"][0]["name"] == "shared"
               for o in objs(run, "EnvoyFilter"))


def test_the_gateway_api_stack_file_is_the_dev_stack_behind_the_gateway_api():
    from authproxy_local.render.mockrun import project_config

    dev, ga = project_config("dev"), project_config("gateway-api")
    # Same apps, users, realm and session store: the e2e suite runs both with the same tests.
    assert {k: v for k, v in ga.items() if k != "istio"} == {k: v for k, v in dev.items() if k != "istio"}
    assert ga["istio"]["ingressApi"] == "gateway-api"
    assert "install" not in ga["istio"]  # Istio and the Gateway API CRDs are installed beforehand
    assert ga["istio"]["extAuthzMode"] == dev["istio"]["extAuthzMode"]
