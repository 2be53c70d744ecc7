"""ext_authz in both modes, gateway hardening, JWT and group policies, the exported mesh config and
the optional Istio install: pure spec builders, and the dev and prod stacks under mocks in both
modes. Two small evaluators (Istio's policy matching, Envoy's route matching) let the tests ask
"does this request go through oauth2-proxy?" of the objects each mode actually produces."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from authproxy_local.mockrun import Run, deep_merge, project_config, run_program, stack_config
from components import config as C
from components.authz import (
    EXT_AUTHZ_FILTER,
    EXT_AUTHZ_PER_ROUTE_TYPE,
    EXT_AUTHZ_TYPE,
    ROUTER_FILTER,
    AuthzArgs,
    ProviderArgs,
    ext_authz_filter_config,
    extension_provider,
    mesh_config,
    outbound_cluster,
)
from components.headers import HEADERS, early_header_mutation, list_matcher
from components.ingress import vhost_name

SECRETS = {"keycloakAdminPassword", "keycloakAdminClientSecret", "externalRedisPassword"}
MODES = {
    "extension-provider": {},
    "envoy-filter": {"istio": {"extAuthzMode": "envoy-filter"}},
}
AP = "kubernetes:security.istio.io/v1:AuthorizationPolicy"
RA = "kubernetes:security.istio.io/v1:RequestAuthentication"
EF = "kubernetes:networking.istio.io/v1alpha3:EnvoyFilter"
RELEASE = "kubernetes:helm.sh/v3:Release"


def load_stack(stack: str, overrides: dict | None = None) -> C.StackConfig:
    raw = project_config(stack)
    return C.load(deep_merge(raw, overrides or {}), SECRETS)


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, str], Run]:
    return {(s, m): run_program(s, overrides=o) for s in ("dev", "prod") for m, o in MODES.items()}


def plain(value: Any) -> Any:
    """Undo the mocks' number widening (4180 -> 4180.0) for comparisons."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def named(run: Run, type_: str, name: str) -> dict[str, Any]:
    found = [r.inputs for r in run.of_type(type_) if r.inputs["metadata"]["name"] == name]
    assert len(found) == 1, f"{type_} {name}: {len(found)}"
    return plain(found[0])


def specs(run: Run, type_: str) -> list[dict[str, Any]]:
    return [plain(r.inputs) for r in run.of_type(type_)]


def custom_policy(run: Run) -> dict[str, Any]:
    (p,) = [a["spec"] for a in specs(run, AP) if a["spec"].get("action") == "CUSTOM"]
    return p


def ext_authz_filter(run: Run) -> dict[str, Any]:
    return named(run, EF, "authproxy-ext-authz")["spec"]


def virtual_services(run: Run) -> list[dict[str, Any]]:
    """VirtualService specs in a stable order (registration order is not)."""
    vss = [plain(r.inputs["spec"]) for r in run.kube("VirtualService")]
    return sorted(vss, key=lambda v: v["hosts"])


# ---------------------------------------------------------------- evaluators
def pattern_matches(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """Istio's string match: '*' (any), 'abc*' prefix, '*abc' suffix, else exact."""
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def operation_matches(op: dict[str, Any], host: str, path: str) -> bool:
    if "hosts" in op and not any(pattern_matches(h, host, True) for h in op["hosts"]):
        return False
    if "paths" in op and not any(pattern_matches(p, path) for p in op["paths"]):
        return False
    if "notPaths" in op and any(pattern_matches(p, path) for p in op["notPaths"]):
        return False
    if "ports" in op and "443" not in op["ports"]:  # requests arrive on the HTTPS listener
        return False
    assert set(op) <= {"hosts", "paths", "notPaths", "ports"}, op
    return True


def condition_holds(cond: dict[str, Any], headers: dict[str, str]) -> bool:
    key = cond["key"]
    assert key.startswith("request.headers[") and key.endswith("]"), key
    value = headers.get(key[len("request.headers["):-1].lower())
    if "values" in cond and (value is None or not any(pattern_matches(v, value) for v in cond["values"])):
        return False
    return not ("notValues" in cond and value is not None
                and any(pattern_matches(v, value) for v in cond["notValues"]))


def custom_checks(policy: dict[str, Any], host: str, path: str, headers: dict[str, str]) -> bool:
    """Whether a CUSTOM policy sends the request to the provider."""
    for rule in policy["rules"]:
        assert "from" not in rule
        targets = rule.get("to", [{"operation": {}}])
        if any(operation_matches(t["operation"], host, path) for t in targets) and all(
            condition_holds(c, headers) for c in rule.get("when", [])
        ):
            return True
    return False


def route_matches(route: dict[str, Any], path: str, headers: dict[str, str]) -> bool:
    if "match" not in route:
        return True
    for m in route["match"]:
        ok = True
        if "uri" in m:
            uri = m["uri"]
            ok &= path.startswith(uri["prefix"]) if "prefix" in uri else path == uri["exact"]
        for name, hm in m.get("headers", {}).items():
            value = headers.get(name.lower())
            ok &= value is not None and value.startswith(hm["prefix"])
        if ok:
            return True
    return False


def disabled_routes(ef: dict[str, Any]) -> set[tuple[str, str]]:
    out = set()
    for p in ef["configPatches"]:
        if p["applyTo"] != "HTTP_ROUTE":
            continue
        per = p["patch"]["value"]["typed_per_filter_config"][EXT_AUTHZ_FILTER]
        assert per == {"@type": EXT_AUTHZ_PER_ROUTE_TYPE, "disabled": True}
        vh = p["match"]["routeConfiguration"]["vhost"]
        out.add((vh["name"], vh["route"]["name"]))
    return out


def envoy_filter_checks(
    vss: list[dict[str, Any]], ef: dict[str, Any], host: str, path: str, headers: dict[str, str]
) -> bool | None:
    """Whether the gateway's ext_authz runs (envoy-filter mode): the gateway ignores the port and
    the case of the host when it picks the virtual host, then takes the first matching route.
    None: no route (404)."""
    bare = host.split(":")[0].lower()
    found = [v for v in vss if bare in v["hosts"]]
    if not found:
        return None
    (vs,) = found
    for route in vs["http"]:
        if route_matches(route, path, headers):
            return (vhost_name(bare), route["name"]) not in disabled_routes(ef)
    return None


def request_strategy(cfg: C.StackConfig):
    hosts = [cfg.auth_hostname, *(a.host for a in cfg.apps)]
    publics = [p for a in cfg.apps for p in a.public_paths]
    fixed = ["/", "/oauth2/start", "/oauth2/callback", "/oauth2/sign_out", "/oauth2", "/oauth2x",
             "/OAUTH2/start", "/api/v1/items", *[p.rstrip("*") for p in publics],
             *[p.rstrip("*") + "x/y" for p in publics], *[p + "/more" for p in publics]]
    host = st.tuples(st.sampled_from(hosts), st.booleans(), st.booleans()).map(
        lambda t: (t[0].upper() if t[1] else t[0]) + (":443" if t[2] else "")
    )
    path = st.one_of(
        st.sampled_from(fixed),
        st.from_regex(r"/[a-zA-Z0-9/._-]{0,16}", fullmatch=True),
        st.from_regex(r"/oauth2/[a-zA-Z0-9/._-]{0,12}", fullmatch=True),
    )
    auth = st.sampled_from([None, "Bearer abc.def.ghi", "bearer abc", "Basic dXNlcg==", "Bearerx"])
    return st.tuples(host, path, auth)


def headers_of(auth: str | None) -> dict[str, str]:
    return {} if auth is None else {"authorization": auth}


# ---------------------------------------------------------------- the provider (pure)
PROVIDER: ProviderArgs = {"name": "p", "service_host": "oauth2-proxy.ns.svc.cluster.local", "port": 4180,
            "timeout_seconds": 3}


def test_provider_entry_is_fail_closed_with_the_shared_header_lists():
    e = extension_provider(PROVIDER)["envoyExtAuthzHttp"]
    assert e["service"] == PROVIDER["service_host"] and e["port"] == 4180
    assert e["timeout"] == "3s" and e["failOpen"] is False and e["statusOnError"] == "503"
    assert "pathPrefix" not in e  # oauth2-proxy answers the original path (static://200)
    assert e["includeRequestHeadersInCheck"] == list(HEADERS.check_request)
    assert e["includeAdditionalHeadersInCheck"] == dict(HEADERS.check_additional)
    assert e["headersToUpstreamOnAllow"] == list(HEADERS.upstream_on_allow)
    assert e["headersToDownstreamOnAllow"] == list(HEADERS.downstream_on_allow)
    assert e["headersToDownstreamOnDeny"] == list(HEADERS.downstream_on_deny)


def test_envoy_config_is_the_translation_istiod_applies():
    entry = extension_provider(PROVIDER)
    cfg = ext_authz_filter_config(entry, outbound_cluster(PROVIDER["service_host"], 4180))
    assert cfg["@type"] == EXT_AUTHZ_TYPE and cfg["transport_api_version"] == "V3"
    assert cfg["failure_mode_allow"] is False and cfg["status_on_error"] == {"code": 503}
    assert cfg["allowed_headers"] == list_matcher(HEADERS.check_request)
    svc = cfg["http_service"]
    assert svc["server_uri"] == {"uri": "http://oauth2-proxy.ns.svc.cluster.local",
                                 "cluster": "outbound|4180||oauth2-proxy.ns.svc.cluster.local",
                                 "timeout": "3s"}
    assert "path_prefix" not in svc
    assert svc["authorization_request"]["headers_to_add"] == [
        {"key": k, "value": v} for k, v in HEADERS.check_additional]
    resp = svc["authorization_response"]
    assert resp["allowed_upstream_headers"] == list_matcher(HEADERS.upstream_on_allow)
    assert resp["allowed_client_headers"] == list_matcher(HEADERS.downstream_on_deny)
    assert resp["allowed_client_headers_on_success"] == list_matcher(HEADERS.downstream_on_allow)


def test_mesh_config_has_the_provider_only_in_extension_provider_mode():
    ep = mesh_config("extension-provider", PROVIDER)
    assert ep["extensionProviders"] == [extension_provider(PROVIDER)]
    assert ep["pathNormalization"] == {"normalization": "DECODE_AND_MERGE_SLASHES"}
    assert mesh_config("envoy-filter", PROVIDER) == {"pathNormalization": ep["pathNormalization"]}


# ---------------------------------------------------------------- both modes, dev and prod
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_header_lists_are_identical_between_modes(stack, runs):
    mesh = yaml.safe_load(runs[stack, "extension-provider"].plain_output("meshConfig"))
    e = mesh["extensionProviders"][0]["envoyExtAuthzHttp"]
    ef = ext_authz_filter(runs[stack, "envoy-filter"])
    (insert,) = [p for p in ef["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
    typed = insert["patch"]["value"]["typed_config"]
    resp = typed["http_service"]["authorization_response"]
    pairs = [
        (e["includeRequestHeadersInCheck"], typed["allowed_headers"], HEADERS.check_request),
        (e["headersToUpstreamOnAllow"], resp["allowed_upstream_headers"], HEADERS.upstream_on_allow),
        (e["headersToDownstreamOnDeny"], resp["allowed_client_headers"], HEADERS.downstream_on_deny),
        (e["headersToDownstreamOnAllow"], resp["allowed_client_headers_on_success"],
         HEADERS.downstream_on_allow),
    ]
    for mesh_list, envoy_matcher, defined in pairs:
        assert mesh_list == list(defined)
        assert envoy_matcher == list_matcher(defined)
    assert typed["http_service"]["authorization_request"]["headers_to_add"] == [
        {"key": k, "value": v} for k, v in sorted(e["includeAdditionalHeadersInCheck"].items())]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_fail_closed_in_both_modes(stack, runs):
    mesh = yaml.safe_load(runs[stack, "extension-provider"].plain_output("meshConfig"))
    e = mesh["extensionProviders"][0]["envoyExtAuthzHttp"]
    assert e["failOpen"] is False and e["statusOnError"] == "503"
    ef = ext_authz_filter(runs[stack, "envoy-filter"])
    (insert,) = [p for p in ef["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
    typed = insert["patch"]["value"]["typed_config"]
    assert typed["failure_mode_allow"] is False and typed["status_on_error"] == {"code": 503}
    cfg = load_stack(stack)
    assert typed["http_service"]["server_uri"]["timeout"] == e["timeout"] == C.format_duration(
        cfg.istio.ext_authz_timeout)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_mode_creates_only_its_own_ext_authz_objects(stack, runs):
    ep, ef = runs[stack, "extension-provider"], runs[stack, "envoy-filter"]
    assert [p["metadata"]["name"] for p in specs(ep, EF) if "ext-authz" in p["metadata"]["name"]] == []
    assert [a for a in specs(ef, AP) if a["spec"].get("action") == "CUSTOM"] == []
    cfg = load_stack(stack)
    spec = ext_authz_filter(ef)
    assert spec["workloadSelector"] == {"labels": cfg.istio.gateway.selector}
    (insert,) = [p for p in spec["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
    assert insert["match"]["context"] == "GATEWAY"
    assert insert["match"]["listener"]["filterChain"]["filter"]["subFilter"] == {"name": ROUTER_FILTER}
    assert insert["patch"]["operation"] == "INSERT_BEFORE"
    assert insert["patch"]["value"]["name"] == EXT_AUTHZ_FILTER
    ns = named(ef, EF, "authproxy-ext-authz")["metadata"]["namespace"]
    assert ns == cfg.istio.gateway.namespace
    custom = [a for a in specs(ep, AP) if a["spec"].get("action") == "CUSTOM"]
    assert len(custom) == 1 and custom[0]["metadata"]["namespace"] == cfg.istio.gateway.namespace
    assert custom[0]["spec"]["selector"] == {"matchLabels": cfg.istio.gateway.selector}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_exported_mesh_config_parses_and_names_the_provider_the_policy_uses(stack, runs):
    run = runs[stack, "extension-provider"]
    text = run.plain_output("meshConfig")
    mesh = yaml.safe_load(text)
    (provider,) = mesh["extensionProviders"]
    assert provider["name"] == custom_policy(run)["provider"]["name"]
    assert provider["name"] == load_stack(stack).istio.provider_name
    svc = run.plain_output("proxyService")  # oauth2-proxy's Service as the stack exports it
    assert provider["envoyExtAuthzHttp"]["service"] == svc["host"]
    assert provider["envoyExtAuthzHttp"]["port"] == plain(svc["port"]) == 4180
    assert mesh["pathNormalization"] == {"normalization": "DECODE_AND_MERGE_SLASHES"}
    ef_mesh = yaml.safe_load(runs[stack, "envoy-filter"].plain_output("meshConfig"))
    assert "extensionProviders" not in ef_mesh and ef_mesh["pathNormalization"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_protected_host_has_a_custom_rule_and_a_virtual_service(stack, runs):
    cfg = load_stack(stack)
    run = runs[stack, "extension-provider"]
    policy = custom_policy(run)
    vs_hosts = {h for v in virtual_services(run) for h in v["hosts"]}
    for app in cfg.apps:
        assert app.host in vs_hosts
        assert custom_checks(policy, app.host, "/", {})
        assert custom_checks(policy, app.host.upper() + ":443", "/some/page", {})
        (rule,) = [r for r in policy["rules"] if app.host in r["to"][0]["operation"]["hosts"]]
        assert "/oauth2/*" in rule["to"][0]["operation"]["notPaths"]
    # envoy-filter: the filter covers every app host's default route
    ef_run = runs[stack, "envoy-filter"]
    for app in cfg.apps:
        assert envoy_filter_checks(virtual_services(ef_run), ext_authz_filter(ef_run),
                                   app.host, "/", {}) is True


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_custom_policy_never_matches_oauth2_paths(stack, runs):
    cfg = load_stack(stack)
    policy = custom_policy(runs[stack, "extension-provider"])

    @settings(max_examples=300, deadline=None)
    @given(request_strategy(cfg), st.from_regex(r"[a-zA-Z0-9/._-]{0,16}", fullmatch=True))
    def check(req, rest):
        host, _, auth = req
        assert not custom_checks(policy, host, "/oauth2/" + rest, headers_of(auth))

    check()


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_both_modes_send_the_same_requests_through_oauth2_proxy(stack, runs):
    cfg = load_stack(stack)
    ep, ef = runs[stack, "extension-provider"], runs[stack, "envoy-filter"]
    assert virtual_services(ep) == virtual_services(ef)
    policy, vss, filt = custom_policy(ep), virtual_services(ef), ext_authz_filter(ef)

    @settings(max_examples=500, deadline=None)
    @given(request_strategy(cfg))
    def check(req):
        host, path, auth = req
        h = headers_of(auth)
        assert custom_checks(policy, host, path, h) == envoy_filter_checks(vss, filt, host, path, h), req

    check()


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_exempt_route_names_match_the_virtual_service_routes(stack, runs):
    run = runs[stack, "envoy-filter"]
    routes = {(vhost_name(v["hosts"][0]), r["name"]) for v in virtual_services(run) for r in v["http"]}
    disabled = disabled_routes(ext_authz_filter(run))
    assert disabled <= routes  # a patch naming no route would silently not exempt it
    cfg = load_stack(stack)
    expected = {(vhost_name(cfg.auth_hostname), "auth-host")}
    for a in cfg.apps:
        expected.add((vhost_name(a.host), f"{a.name}-oauth2"))
        expected |= {(vhost_name(a.host), f"{a.name}-public-{i}") for i in range(len(a.public_paths))}
        if a.api_clients:
            expected.add((vhost_name(a.host), f"{a.name}-bearer"))
    assert disabled == expected


@pytest.mark.parametrize("mode", list(MODES))
def test_unprotected_hosts_get_no_ext_authz_and_no_jwt_requirement(mode, runs):
    cfg = load_stack("prod")
    run = runs["prod", mode]
    unprotected = [cfg.auth_hostname, "other.example.com"]  # both served by the *.example.com gateway
    for host in unprotected:
        for path in ("/", "/oauth2/callback", "/admin"):
            for auth in (None, "Bearer x"):
                if mode == "extension-provider":
                    assert not custom_checks(custom_policy(run), host, path, headers_of(auth))
                else:
                    decision = envoy_filter_checks(virtual_services(run), ext_authz_filter(run),
                                                   host, path, headers_of(auth))
                    assert decision is (False if host == cfg.auth_hostname else None)
        for ap in specs(run, AP):
            for rule in ap["spec"].get("rules", []):
                for to in rule.get("to", []):
                    hosts = to["operation"].get("hosts", [])
                    assert not any(pattern_matches(h, host, True) for h in hosts), (host, ap)
    # JWT policies select only the apps' pods (in their namespaces) or the gateway
    app_selectors = {(a.service.namespace, tuple(sorted(a.selector_labels.items()))) for a in cfg.apps}
    for ra in specs(run, RA):
        key = (ra["metadata"]["namespace"], tuple(sorted(ra["spec"]["selector"]["matchLabels"].items())))
        gw = (cfg.istio.gateway.namespace, tuple(sorted(cfg.istio.gateway.selector.items())))
        assert key in app_selectors or key == gw


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("mode", list(MODES))
def test_gateway_is_hardened_in_both_modes(stack, mode, runs):
    cfg = load_stack(stack)
    spec = named(runs[stack, mode], EF, "authproxy-gateway-hardening")["spec"]
    assert spec["workloadSelector"] == {"labels": cfg.istio.gateway.selector}
    (patch,) = spec["configPatches"]
    assert patch["applyTo"] == "NETWORK_FILTER" and patch["patch"]["operation"] == "MERGE"
    hcm = patch["patch"]["value"]["typed_config"]
    assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True
    assert hcm["path_with_escaped_slashes_action"] == "UNESCAPE_AND_FORWARD"
    assert hcm["early_header_mutation_extensions"] == [early_header_mutation()]


# ---------------------------------------------------------------- JWT, API clients, groups
def jwt_rule_ok(rule: dict[str, Any], cfg: C.StackConfig) -> None:
    assert rule == {
        "issuer": cfg.keycloak.issuer,
        "jwksUri": cfg.keycloak.jwks_uri,
        "audiences": [cfg.keycloak.client_id],
        "forwardOriginalToken": True,
    }


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("mode", list(MODES))
def test_sidecar_policies_per_app_with_the_configured_groups(stack, mode, runs):
    cfg = load_stack(stack)
    run = runs[stack, mode]
    issuer_principal = cfg.keycloak.issuer + "/*"
    for app in cfg.apps:
        ra = named(run, RA, f"authproxy-{app.name}-jwt")
        assert ra["metadata"]["namespace"] == app.service.namespace
        assert ra["spec"]["selector"] == {"matchLabels": app.selector_labels}
        (rule,) = ra["spec"]["jwtRules"]
        jwt_rule_ok(rule, cfg)
        ap = named(run, AP, f"authproxy-{app.name}-require-jwt")
        assert ap["metadata"]["namespace"] == app.service.namespace
        spec = ap["spec"]
        assert spec["action"] == "ALLOW" and spec["selector"] == {"matchLabels": app.selector_labels}
        signed_in = spec["rules"][0]
        assert signed_in["from"] == [{"source": {"requestPrincipals": [issuer_principal]}}]
        if app.groups:
            assert signed_in["when"] == [{"key": "request.auth.claims[groups]", "values": list(app.groups)}]
        else:
            assert "when" not in signed_in
        if app.public_paths:
            assert spec["rules"][1] == {"to": [{"operation": {"paths": list(app.public_paths)}}]}
        else:
            assert len(spec["rules"]) == 1


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("mode", list(MODES))
def test_bearer_requests_are_verified_at_the_gateway_in_both_modes(stack, mode, runs):
    cfg = load_stack(stack)
    run = runs[stack, mode]
    api_apps = [a for a in cfg.apps if a.api_clients]
    assert api_apps  # both stacks have one
    gw_ns = cfg.istio.gateway.namespace
    ra = named(run, RA, "authproxy-jwt")
    assert ra["metadata"]["namespace"] == gw_ns
    assert ra["spec"]["selector"] == {"matchLabels": cfg.istio.gateway.selector}
    jwt_rule_ok(ra["spec"]["jwtRules"][0], cfg)
    deny = named(run, AP, "authproxy-bearer-requires-jwt")["spec"]
    assert deny["action"] == "DENY"
    assert len(deny["rules"]) == len(api_apps)
    for app, rule in zip(api_apps, deny["rules"], strict=True):
        assert rule["from"] == [{"source": {"notRequestPrincipals": [cfg.keycloak.issuer + "/*"]}}]
        assert rule["when"] == [{"key": "request.headers[authorization]", "values": ["Bearer *"]}]
        op = rule["to"][0]["operation"]
        assert op["hosts"] == [app.host, f"{app.host}:*"]
        assert op["notPaths"] == ["/oauth2/*", *app.public_paths]
        # scoped to the HTTP listeners, so raw TCP servers of a shared gateway are untouched
        assert op["ports"] == [str(p) for p in cfg.istio.gateway.target_ports]
    # the browser flow is skipped for bearer requests to API apps only
    if mode == "extension-provider":
        policy = custom_policy(run)
        for app in cfg.apps:
            checked = custom_checks(policy, app.host, "/x", {"authorization": "Bearer t"})
            assert checked is (not app.api_clients)


def test_no_gateway_jwt_objects_without_api_clients_or_gateway_authorization():
    run = run_program("prod", overrides={"apps": [
        {"name": "grafana", "host": "grafana.example.com",
         "service": {"name": "grafana", "namespace": "monitoring", "port": 3000},
         "groups": ["sre"]}]})
    names = {r.inputs["metadata"]["name"] for r in run.of_type(RA) + run.of_type(AP)}
    assert names == {"authproxy-ext-authz", "authproxy-grafana-jwt", "authproxy-grafana-require-jwt"}


@pytest.mark.parametrize("where", ["gateway", "both"])
def test_gateway_group_checks_for_apps_authorized_at_the_gateway(where):
    apps = stack_config("prod")["authproxy:apps"]
    apps = [{**apps[0], "authorizeAt": where}, apps[1]]
    run = run_program("prod", overrides={"apps": apps})
    cfg = load_stack("prod", {"apps": apps})
    grafana = cfg.apps[0]
    spec = named(run, AP, "authproxy-grafana-gateway-authz")["spec"]
    assert spec["action"] == "DENY"
    assert spec["selector"] == {"matchLabels": cfg.istio.gateway.selector}
    op = {"operation": {"hosts": ["grafana.example.com", "grafana.example.com:*"],
                        "ports": ["80", "443", "8080", "8443"],
                        "notPaths": ["/oauth2/*", "/public/*"]}}
    assert spec["rules"] == [
        {"from": [{"source": {"notRequestPrincipals": [cfg.keycloak.issuer + "/*"]}}], "to": [op]},
        {"to": [op], "when": [{"key": "request.auth.claims[groups]", "notValues": list(grafana.groups)}]},
    ]
    named(run, RA, "authproxy-jwt")  # the gateway verifies the token it checks
    sidecar = [r for r in run.of_type(AP) if r.inputs["metadata"]["name"] == "authproxy-grafana-require-jwt"]
    assert len(sidecar) == (1 if where == "both" else 0)


# ---------------------------------------------------------------- Istio install
def test_dev_installs_istio_with_the_exported_mesh_config(runs):
    cfg = load_stack("dev")
    run = runs["dev", "extension-provider"]
    rels = {r.inputs["name"]: plain(r.inputs) for r in run.of_type(RELEASE)
            if r.inputs["chart"] in ("base", "istiod", "gateway")}
    assert set(rels) == {"istio-base", "istiod", "istio-ingressgateway"}
    for r in rels.values():
        assert r["version"] == cfg.istio.install.version == "1.31.0"
        assert r["repositoryOpts"]["repo"] == cfg.istio.install.repository
    assert rels["istio-base"]["namespace"] == rels["istiod"]["namespace"] == "istio-system"
    assert rels["istio-ingressgateway"]["namespace"] == cfg.istio.gateway.namespace
    assert rels["istio-ingressgateway"]["values"] == {"labels": cfg.istio.gateway.selector}
    exported = yaml.safe_load(run.plain_output("meshConfig"))
    assert rels["istiod"]["values"] == {"meshConfig": exported}
    # envoy-filter mode: istiod gets no provider
    ef_rels = [plain(r.inputs) for r in runs["dev", "envoy-filter"].of_type(RELEASE)
               if r.inputs["chart"] == "istiod"]
    assert "extensionProviders" not in ef_rels[0]["values"]["meshConfig"]


def test_prod_does_not_install_istio(runs):
    charts = {r.inputs["chart"] for r in runs["prod", "extension-provider"].of_type(RELEASE)}
    assert charts.isdisjoint({"base", "istiod", "gateway"})


def test_install_order_and_istio_objects_wait_for_it(monkeypatch):
    """base -> istiod -> gateway, and the ingress and authz components depend on the releases
    (CRDs and istiod's validating webhook must exist before Istio objects are applied)."""
    import pulumi_kubernetes as k8s

    from components import stack as stack_module

    real_release: Any = k8s.helm.v3.Release
    deps: dict[str, list[str]] = {}

    def recording_release(resource_name: str, *args: Any, opts: Any = None, **kwargs: Any) -> Any:
        deps[resource_name] = [d._name for d in (opts.depends_on or [])] if opts else []
        return real_release(resource_name, *args, opts=opts, **kwargs)

    seen: dict[str, list[str]] = {}
    for comp in ("Ingress", "Authz"):
        real = getattr(stack_module, comp)

        def wrapper(name: str, args: Any, opts: Any = None, _real: Any = real) -> Any:
            seen[name] = [d._name for d in (opts.depends_on or [])]
            return _real(name, args, opts=opts)

        monkeypatch.setattr(stack_module, comp, wrapper)
    monkeypatch.setattr(k8s.helm.v3, "Release", recording_release)
    run_program("dev")
    assert deps["istio-base"] == []
    assert deps["istio-istiod"] == ["istio-base"]
    assert deps["istio-gateway"] == ["istio-istiod"]
    assert seen == {"ingress": ["istio-base", "istio-istiod", "istio-gateway"],
                    "authz": ["istio-base", "istio-istiod", "istio-gateway"]}


# ---------------------------------------------------------------- bad input
def bad_keys(stack: str, overrides: dict) -> list[str]:
    with pytest.raises(C.ConfigError) as e:
        load_stack(stack, overrides)
    return [k for k, _ in e.value.problems]


def test_unknown_mode_is_rejected_naming_the_key():
    assert bad_keys("dev", {"istio": {"extAuthzMode": "lua"}}) == ["authproxy:istio.extAuthzMode"]
    with pytest.raises(C.ConfigError, match=r"authproxy:istio\.extAuthzMode"):
        run_program("dev", overrides={"istio": {"extAuthzMode": "lua"}})


@pytest.mark.parametrize("path", ["/oauth2/*", "/oauth2", "/oauth2/sign_in", "/*", "/oauth*", "/OAuth2/x"])
def test_public_path_exposing_oauth2_is_rejected(path):
    apps = stack_config("dev")["authproxy:apps"]
    apps = [{**apps[0], "publicPaths": ["/healthz", path]}, apps[1]]
    assert bad_keys("dev", {"apps": apps}) == ["authproxy:apps[0].publicPaths"]


def test_group_checks_at_the_gateway_are_rejected_in_envoy_filter_mode():
    apps = stack_config("prod")["authproxy:apps"]
    apps = [{**apps[0], "authorizeAt": "gateway"}, apps[1]]  # grafana: groups [sre]
    over = {"apps": apps, "istio": {"extAuthzMode": "envoy-filter"}}
    assert bad_keys("prod", over) == ["authproxy:apps[0].authorizeAt"]
    with pytest.raises(C.ConfigError, match=r"authproxy:apps\[0\]\.authorizeAt"):
        run_program("prod", overrides=over)


def test_timeout_out_of_range_is_rejected():
    assert bad_keys("dev", {"istio": {"extAuthzTimeout": "0s"}}) == ["authproxy:istio.extAuthzTimeout"]


def test_gateway_target_ports_scope_the_deny_policies():
    run = run_program("prod", overrides={"istio": {"gateway": {"targetPorts": [8443]}}})
    deny = named(run, AP, "authproxy-bearer-requires-jwt")["spec"]
    assert all(r["to"][0]["operation"]["ports"] == ["8443"] for r in deny["rules"])
    assert bad_keys("prod", {"istio": {"gateway": {"targetPorts": []}}}) == [
        "authproxy:istio.gateway.targetPorts"]
    assert bad_keys("prod", {"istio": {"gateway": {"targetPorts": [443, 443]}}}) == [
        "authproxy:istio.gateway.targetPorts"]
    assert bad_keys("prod", {"istio": {"gateway": {"targetPorts": [0]}}}) == [
        "authproxy:istio.gateway.targetPorts[0]"]


def test_ext_authz_envoy_filter_has_a_priority():
    # INSERT_BEFORE is a relative patch: istioctl analyze (IST0151) wants an explicit priority.
    run = run_program("dev", overrides=MODES["envoy-filter"])
    assert named(run, EF, "authproxy-ext-authz")["spec"]["priority"] == 10


def test_istio_version_must_be_exact():
    assert bad_keys("dev", {"istio": {"install": {"version": "1.31"}}}) == [
        "authproxy:istio.install.version"]


def test_authz_args_type_is_the_one_the_stack_builds():
    from components.stack import authz_args

    args: AuthzArgs = authz_args(load_stack("dev"))
    assert args["mode"] == "extension-provider" and args["auth_host"] == "auth.authproxy.test"
    assert [a["name"] for a in args["apps"]] == ["echo", "admin"]
