"""Gateway, VirtualServices and Certificate: the route plan, the specs, and the program under mocks
for the dev and prod stacks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authproxy_local.render.mockrun import Run, deep_merge, project_config, run_program
from components import config as C
from components.headers import HEADERS, identity_headers
from components.ingress import (
    AUTH_ROUTE,
    BEARER_PREFIX,
    CHECKED_MARK,
    HTTP_PORT,
    HTTPS_PORT,
    IngressArgs,
    RoutedApp,
    app_routes,
    certificate_spec,
    gateway_spec,
    public_path_match,
    vhost_name,
)
from components.oauth2_proxy import service_fqdn

SECRETS = {"keycloakAdminPassword", "keycloakAdminClientSecret", "externalRedisPassword"}


def load_stack(stack: str, overrides: dict | None = None) -> C.StackConfig:
    raw = project_config(stack)
    return C.load(deep_merge(raw, overrides or {}), SECRETS)


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    return {s: run_program(s) for s in ("dev", "prod")}


def vs_by_host(run: Run) -> dict[str, dict[str, Any]]:
    out = {}
    for r in run.kube("VirtualService"):
        for h in r.inputs["spec"]["hosts"]:
            assert h not in out, f"two VirtualServices for {h}"
            out[h] = r.inputs
    return out


def uri_matches(match: dict[str, Any], path: str) -> bool:
    uri = match["uri"]
    return path.startswith(uri["prefix"]) if "prefix" in uri else path == uri["exact"]


# ---------------------------------------------------------------- route plan (pure)
APP: RoutedApp = {"name": "shop", "public_paths": ["/healthz", "/static/*"], "api_clients": True,
                  "strip_session_cookies": True}


def test_routes_are_named_and_ordered_most_specific_first():
    routes = app_routes(APP)
    assert [r.name for r in routes] == [
        "shop-oauth2", "shop-public-0", "shop-public-1", "shop-bearer", "shop-default"]
    assert routes[0].match == ({"uri": {"prefix": "/oauth2/"}},) and routes[0].backend == "proxy"
    assert routes[-1].match == () and routes[-1].ext_authz
    assert [r.ext_authz for r in routes] == [False, False, False, False, True]
    bearer = routes[3]
    # only a Bearer token the client sent: oauth2-proxy's checked requests carry CHECKED_MARK and
    # are routed again after jwt_authn verifies the token the check added (route cache cleared)
    assert bearer.match == ({"headers": {"authorization": {"prefix": BEARER_PREFIX}},
                             "withoutHeaders": {CHECKED_MARK: {}}},)
    assert CHECKED_MARK in HEADERS.upstream_on_allow


def test_no_bearer_route_without_api_clients_and_no_public_routes_without_paths():
    routes = app_routes({"name": "wiki", "public_paths": [], "api_clients": False,
                         "strip_session_cookies": True})
    assert [r.name for r in routes] == ["wiki-oauth2", "wiki-default"]


def test_routes_without_ext_authz_drop_every_identity_header_but_the_token():
    for r in app_routes(APP):
        if r.backend == "app" and not r.ext_authz:
            assert set(r.remove) == set(identity_headers())
            assert "authorization" not in r.remove
    default = app_routes(APP)[-1]
    # after ext_authz, oauth2-proxy's headers must survive the route's removal
    assert set(default.remove).isdisjoint(HEADERS.upstream_on_allow)
    assert "x-auth-request-access-token" in default.remove


@given(
    st.sampled_from(["/healthz", "/static/*", "/public/*", "/a*", "/api/v1/status"]),
    st.from_regex(r"/[A-Za-z0-9/._-]{0,20}", fullmatch=True),
)
def test_public_path_route_match_equals_the_policy_path_semantics(pattern, path):
    """The VirtualService match of a public path covers exactly what the AuthorizationPolicy path
    (and config's public_path_covers) covers."""
    assert uri_matches(public_path_match(pattern), path) == C.public_path_covers(pattern, path)
    assert uri_matches(public_path_match(pattern), pattern.rstrip("*"))


def test_gateway_redirects_http_and_terminates_tls_with_the_credential():
    spec = gateway_spec({"name": "gw", "namespace": "ing", "selector": {"istio": "x"},
                         "tls_credential_name": "cred", "hosts": ["a.example.com", "*.example.com"]})
    http, https = spec["servers"]
    assert spec["selector"] == {"istio": "x"}
    assert http["port"]["protocol"] == "HTTP" and http["tls"] == {"httpsRedirect": True}
    assert https["port"] == {"number": 443, "name": "https", "protocol": "HTTPS"}
    assert https["tls"]["mode"] == "SIMPLE" and https["tls"]["credentialName"] == "cred"
    # only VirtualServices of the gateway's namespace may bind to these hosts
    assert http["hosts"] == https["hosts"] == ["./a.example.com", "./*.example.com"]
    # the server ports name Istio's virtual hosts (host:80, host:443), which the envoy-filter
    # mode's per-route exemptions address
    assert (http["port"]["number"], https["port"]["number"]) == (HTTP_PORT, HTTPS_PORT) == (80, 443)
    assert (vhost_name("a.example.com"), vhost_name("a.example.com", HTTP_PORT)) == (
        "a.example.com:443", "a.example.com:80")


def test_certificate_only_with_an_issuer():
    args: IngressArgs = {"api": "istio",
                         "gateway": {"name": "gw", "namespace": "ing", "selector": {"a": "b"},
                                     "tls_credential_name": "cred",
                                     "hosts": ["a.example.com", "b.example.com"]},
                         "gateway_api": {"class_name": "istio", "create": True,
                                         "http_listener": "http", "https_listener": "https"},
                         "auth_host": "a.example.com",
                         "proxy": {"host": "p", "port": 1, "name": "p", "namespace": "n"},
                         "apps": [], "certificate": None}
    assert certificate_spec(args) is None
    args["certificate"] = {"issuer": "le", "issuer_kind": "ClusterIssuer"}
    cert = certificate_spec(args)
    assert cert is not None
    assert cert["secretName"] == "cred"
    assert cert["dnsNames"] == ["a.example.com", "b.example.com"]
    assert cert["issuerRef"] == {"name": "le", "kind": "ClusterIssuer", "group": "cert-manager.io"}


# ---------------------------------------------------------------- program under mocks
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_one_gateway_with_the_configured_hosts_selector_and_credential(stack, runs):
    cfg = load_stack(stack)
    (gw,) = runs[stack].kube("Gateway")
    assert gw.type == "kubernetes:networking.istio.io/v1:Gateway"
    meta, spec = gw.inputs["metadata"], gw.inputs["spec"]
    assert (meta["namespace"], meta["name"]) == (cfg.istio.gateway.namespace, cfg.istio.gateway.name)
    assert spec["selector"] == cfg.istio.gateway.selector
    assert spec["servers"][0]["hosts"] == [f"./{h}" for h in cfg.gateway_hosts]
    assert spec["servers"][1]["tls"]["credentialName"] == cfg.istio.gateway.tls_credential_name
    assert runs[stack].plain_output("gateway") == f"{meta['namespace']}/{meta['name']}"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_host_has_a_virtual_service_on_the_gateway(stack, runs):
    cfg = load_stack(stack)
    vs = vs_by_host(runs[stack])
    assert set(vs) == {cfg.auth_hostname, *(a.host for a in cfg.apps)}
    gw_ref = f"{cfg.istio.gateway.namespace}/{cfg.istio.gateway.name}"
    for v in vs.values():
        assert v["spec"]["gateways"] == [gw_ref]
        assert v["metadata"]["namespace"] == cfg.istio.gateway.namespace
    proxy = {"host": service_fqdn("oauth2-proxy", cfg.namespace), "port": {"number": 4180}}
    (auth_route,) = vs[cfg.auth_hostname]["spec"]["http"]
    assert auth_route["name"] == AUTH_ROUTE and "match" not in auth_route
    assert auth_route["route"] == [{"destination": proxy}]
    for app in cfg.apps:
        http = vs[app.host]["spec"]["http"]
        backend = {"host": f"{app.service.name}.{app.service.namespace}.svc.cluster.local",
                   "port": {"number": app.service.port}}
        assert http[0]["name"] == f"{app.name}-oauth2"
        assert http[0]["match"] == [{"uri": {"prefix": "/oauth2/"}}]
        assert http[0]["route"] == [{"destination": proxy}]
        assert http[-1]["name"] == f"{app.name}-default" and "match" not in http[-1]
        assert http[-1]["route"] == [{"destination": backend}]
        names = [r["name"] for r in http]
        assert (f"{app.name}-bearer" in names) == app.api_clients
        publics = [r for r in http if r["name"].startswith(f"{app.name}-public-")]
        assert [public_path_match(p) for p in app.public_paths] == [r["match"][0] for r in publics]
        assert all(r["route"] == [{"destination": backend}] for r in publics)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_route_names_are_unique_on_the_gateway(stack, runs):
    names = [r["name"] for v in vs_by_host(runs[stack]).values() for r in v["spec"]["http"]]
    assert len(names) == len(set(names))


def test_prod_gets_a_certificate_for_every_gateway_host_and_dev_none(runs):
    assert runs["dev"].kube("Certificate") == []
    cfg = load_stack("prod")
    (cert,) = runs["prod"].kube("Certificate")
    assert cert.type == "kubernetes:cert-manager.io/v1:Certificate"
    spec = cert.inputs["spec"]
    assert cert.inputs["metadata"]["namespace"] == cfg.istio.gateway.namespace
    assert spec["secretName"] == cfg.istio.gateway.tls_credential_name
    assert spec["dnsNames"] == list(cfg.gateway_hosts) == ["*.example.com"]
    assert spec["issuerRef"]["name"] == "letsencrypt"


def test_forged_identity_headers_are_removed_on_routes_that_skip_the_check(runs):
    vs = vs_by_host(runs["dev"])
    http = {r["name"]: r for r in vs["echo.authproxy.test"]["spec"]["http"]}
    for name in ("echo-public-0", "echo-bearer"):
        removed = http[name]["headers"]["request"]["remove"]
        assert {"x-auth-request-user", "x-auth-request-groups", "x-forwarded-user"} <= set(removed)
    default_removed = http["echo-default"]["headers"]["request"]["remove"]
    assert "x-auth-request-user" not in default_removed  # set by oauth2-proxy on allow
    assert "x-forwarded-user" in default_removed


# ---------------------------------------------------------------- bad input
def bad_keys(stack: str, overrides: dict) -> list[str]:
    with pytest.raises(C.ConfigError) as e:
        load_stack(stack, overrides)
    return [k for k, _ in e.value.problems]


def test_app_host_outside_the_gateway_hosts_is_rejected_before_anything_is_created():
    over = {"istio": {"gateway": {"hosts": ["auth.example.com", "grafana.example.com"]}}}
    assert bad_keys("prod", over) == ["authproxy:apps[1].host"]
    with pytest.raises(C.ConfigError, match=r"authproxy:apps\[1\]\.host"):
        run_program("prod", overrides=over)


def test_gateway_hosts_must_cover_the_auth_host():
    over = {"istio": {"gateway": {"hosts": ["echo.authproxy.test", "admin.authproxy.test"]}}}
    assert bad_keys("dev", over) == ["authproxy:istio.gateway.hosts"]


def test_empty_gateway_selector_is_rejected():
    over: dict[str, Any] = {"istio": {"gateway": {"selector": {}}}}
    assert bad_keys("dev", over) == ["authproxy:istio.gateway.selector"]
    with pytest.raises(C.ConfigError, match=r"authproxy:istio\.gateway\.selector"):
        run_program("dev", overrides=over)


def test_invalid_gateway_label_is_rejected():
    assert bad_keys("dev", {"istio": {"gateway": {"selector": {"istio": "in gress"}}}}) == [
        "authproxy:istio.gateway.selector"]
