"""ext_authz in both modes, gateway hardening, JWT and group policies, the exported mesh config and
the optional Istio install: pure spec builders, and the dev and prod stacks under mocks in both
modes. Two small evaluators (Istio's policy matching, Envoy's route matching) let the tests ask
"does this request go through oauth2-proxy?" of the objects each mode actually produces."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from authproxy_local.render.mockrun import (
    Run,
    deep_merge,
    project_config,
    run_program,
    stack_config,
)
from components import common
from components import config as C
from components.authz import (
    EXT_AUTHZ_FILTER,
    EXT_AUTHZ_PER_ROUTE_TYPE,
    EXT_AUTHZ_TYPE,
    HEADER_TO_METADATA_FILTER,
    AuthzArgs,
    ProviderArgs,
    ext_authz_filter_config,
    extension_provider,
    mesh_config,
    outbound_cluster,
)
from components.headers import CHECK_PATH_PREFIX, HEADERS, early_header_mutation, list_matcher
from components.ingress import HTTP_PORT, HTTPS_PORT, vhost_name

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
    return {(s, m): run_program(s, overrides=o) for s in ("dev", "prod", "throwaway")
            for m, o in MODES.items()}


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


def ext_authz_insert(ef: dict[str, Any]) -> dict[str, Any]:
    """The patch that inserts the ext_authz filter (the others only adjust it)."""
    (p,) = [p for p in ef["configPatches"] if p["applyTo"] == "HTTP_FILTER"
            and p["patch"]["operation"] == "INSERT_FIRST" and p["patch"]["value"]["name"] == EXT_AUTHZ_FILTER]
    return p


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


def operation_matches(op: dict[str, Any], host: str, path: str, port: int = 443) -> bool:
    """Istio's operation match; ``port`` is the gateway pod's container port the request came in
    on (what ``ports`` and ``destination.port`` see at a gateway)."""
    if "hosts" in op and not any(pattern_matches(h, host, True) for h in op["hosts"]):
        return False
    if "paths" in op and not any(pattern_matches(p, path) for p in op["paths"]):
        return False
    if "notPaths" in op and any(pattern_matches(p, path) for p in op["notPaths"]):
        return False
    if "ports" in op and str(port) not in op["ports"]:
        return False
    if "notPorts" in op and str(port) in op["notPorts"]:
        return False
    assert set(op) <= {"hosts", "paths", "notPaths", "ports", "notPorts"}, op
    return True


def condition_holds(cond: dict[str, Any], headers: dict[str, str], port: int = 443) -> bool:
    key = cond["key"]
    if key == "destination.port":
        value: str | None = str(port)
    else:
        assert key.startswith("request.headers[") and key.endswith("]"), key
        value = headers.get(key[len("request.headers["):-1].lower())
    if "values" in cond and (value is None or not any(pattern_matches(v, value) for v in cond["values"])):
        return False
    return not ("notValues" in cond and value is not None
                and any(pattern_matches(v, value) for v in cond["notValues"]))


def custom_checks(policy: dict[str, Any], host: str, path: str, headers: dict[str, str],
                  port: int = 443) -> bool:
    """Whether a CUSTOM policy sends the request to the provider."""
    for rule in policy["rules"]:
        assert "from" not in rule
        targets = rule.get("to", [{"operation": {}}])
        if any(operation_matches(t["operation"], host, path, port) for t in targets) and all(
            condition_holds(c, headers, port) for c in rule.get("when", [])
        ):
            return True
    return False


def deny_may_match(policy: dict[str, Any], host: str, path: str, headers: dict[str, str],
                   port: int) -> bool:
    """Whether some rule of a gateway DENY policy can refuse the request for *some* token: its
    target and header conditions hold (sources and claim conditions are assumed to match)."""
    for rule in policy["rules"]:
        targets = rule.get("to", [{"operation": {}}])
        conds = [c for c in rule.get("when", []) if not c["key"].startswith("request.auth.")]
        if any(operation_matches(t["operation"], host, path, port) for t in targets) and all(
            condition_holds(c, headers, port) for c in conds
        ):
            return True
    return False


def redirected(cfg: C.StackConfig, port: int, headers: dict[str, str]) -> bool:
    """Whether the gateway's router answers the request with the redirect to HTTPS: it came in on
    the HTTP server (``require_tls: ALL``) and ``X-Forwarded-Proto`` is not exactly ``https``."""
    return port in cfg.istio.gateway.http_target_ports and headers.get("x-forwarded-proto") != "https"


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


def ext_authz_enabled_on_listener(ef: dict[str, Any], port: int, headers: dict[str, str]) -> bool:
    """envoy-filter mode: whether the ext_authz filter on the gateway listener of container port
    ``port`` runs for the request, from the filter's HTTP_FILTER patches: inserted on every
    listener, possibly merged with ``filter_enabled_metadata`` on this one, whose metadata a
    ``header_to_metadata`` filter inserted before it records from a request header."""
    recorded: dict[tuple[str, str], str] = {}
    enabled = False
    for p in ef["configPatches"]:
        if p["applyTo"] != "HTTP_FILTER":
            continue
        listener = p["match"]["listener"]
        if listener.get("portNumber", port) != port:
            continue
        op, value = p["patch"]["operation"], p["patch"]["value"]
        if op == "INSERT_FIRST" and value["name"] == EXT_AUTHZ_FILTER:
            assert "subFilter" not in listener["filterChain"]["filter"]  # the HCM's chain itself
            enabled = True
        elif op == "INSERT_BEFORE" and value["name"] == HEADER_TO_METADATA_FILTER:
            assert listener["filterChain"]["filter"]["subFilter"] == {"name": EXT_AUTHZ_FILTER}
            for r in value["typed_config"]["request_rules"]:
                got = headers.get(r["header"])
                if got is not None:
                    md = r["on_header_present"]
                    recorded[md["metadata_namespace"], md["key"]] = got
        elif op == "MERGE":
            assert value["name"] == EXT_AUTHZ_FILTER and enabled
            m = value["typed_config"]["filter_enabled_metadata"]
            (key,) = m["path"]
            enabled = recorded.get((m["filter"], key["key"])) == m["value"]["string_match"]["exact"]
        else:
            raise AssertionError(p)
    return enabled


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
    vss: list[dict[str, Any]], ef: dict[str, Any], host: str, path: str, headers: dict[str, str],
    port: int = 443, cfg: C.StackConfig | None = None,
) -> bool | None:
    """Whether the gateway's ext_authz runs (envoy-filter mode): the gateway ignores the port and
    the case of the host when it picks the virtual host, then takes the first matching route.
    ``port`` is the container port; with ``cfg`` its listener serves the Gateway's HTTP server
    (virtual hosts ``host:80``) if it is one of the HTTP target ports. None: no route (404)."""
    if not ext_authz_enabled_on_listener(ef, port, headers):
        return False
    server = HTTP_PORT if cfg is not None and port in cfg.istio.gateway.http_target_ports else HTTPS_PORT
    bare = host.split(":")[0].lower()
    found = [v for v in vss if bare in v["hosts"]]
    if not found:
        return None
    (vs,) = found
    for route in vs["http"]:
        if route_matches(route, path, headers):
            return (vhost_name(bare, server), route["name"]) not in disabled_routes(ef)
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


def listener_strategy(cfg: C.StackConfig):
    """(container port, X-Forwarded-Proto): every listed gateway port, with what Envoy sets
    (http/https) or what a trusted proxy in front may send."""
    gw = cfg.istio.gateway
    ports = st.sampled_from([*gw.https_target_ports, *gw.http_target_ports])
    return st.tuples(ports, st.sampled_from([None, "http", "https", "HTTPS", "https, http"]))


def headers_of(auth: str | None, proto: str | None = None) -> dict[str, str]:
    h = {} if auth is None else {"authorization": auth}
    if proto is not None:
        h["x-forwarded-proto"] = proto
    return h


# ---------------------------------------------------------------- the provider (pure)
PROVIDER: ProviderArgs = {"name": "p", "service_host": "oauth2-proxy.ns.svc.cluster.local", "port": 4180,
            "timeout_seconds": 3}


def test_provider_entry_is_fail_closed_with_the_shared_header_lists():
    e = extension_provider(PROVIDER)["envoyExtAuthzHttp"]
    assert e["service"] == PROVIDER["service_host"] and e["port"] == 4180
    assert e["timeout"] == "3s" and e["failOpen"] is False and e["statusOnError"] == "503"
    # The checked path is the request's under a prefix outside oauth2-proxy's own endpoints.
    assert e["pathPrefix"] == CHECK_PATH_PREFIX == "/authproxy-check"
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
    assert svc["path_prefix"] == CHECK_PATH_PREFIX
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
    typed = ext_authz_insert(ef)["patch"]["value"]["typed_config"]
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
    typed = ext_authz_insert(ef)["patch"]["value"]["typed_config"]
    assert typed["failure_mode_allow"] is False and typed["status_on_error"] == {"code": 503}
    cfg = load_stack(stack)
    assert typed["http_service"]["server_uri"]["timeout"] == e["timeout"] == common.format_duration(
        cfg.istio.ext_authz_timeout)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_mode_creates_only_its_own_ext_authz_objects(stack, runs):
    ep, ef = runs[stack, "extension-provider"], runs[stack, "envoy-filter"]
    assert [p["metadata"]["name"] for p in specs(ep, EF) if "ext-authz" in p["metadata"]["name"]] == []
    assert [a for a in specs(ef, AP) if a["spec"].get("action") == "CUSTOM"] == []
    cfg = load_stack(stack)
    spec = ext_authz_filter(ef)
    assert spec["workloadSelector"] == {"labels": cfg.istio.gateway.selector}
    insert = ext_authz_insert(spec)
    assert insert["match"]["context"] == "GATEWAY"
    assert "portNumber" not in insert["match"]["listener"]  # every listener; see the HTTP ones below
    # First in every HTTP connection manager, like istiod's own ext_authz: before jwt_authn and
    # RBAC, which then check the token oauth2-proxy returns (groups at the gateway in this mode).
    assert insert["match"]["listener"]["filterChain"]["filter"] == {
        "name": "envoy.filters.network.http_connection_manager"}
    assert insert["patch"]["operation"] == "INSERT_FIRST"
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
        rules = [r for r in policy["rules"] if app.host in r["to"][0]["operation"]["hosts"]]
        assert len(rules) == 2 and rules[0]["to"] == rules[1]["to"]
        assert "/oauth2/*" in rules[0]["to"][0]["operation"]["notPaths"]
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

    @settings(max_examples=800, deadline=None)
    @given(request_strategy(cfg), listener_strategy(cfg))
    def check(req, listener):
        (host, path, auth), (port, proto) = req, listener
        h = headers_of(auth, proto)
        assert custom_checks(policy, host, path, h, port) == envoy_filter_checks(
            vss, filt, host, path, h, port, cfg), (req, listener)

    check()


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("mode", list(MODES))
def test_plain_http_gets_the_redirect_before_any_check(stack, mode, runs):
    """A request the router will redirect to HTTPS meets neither ext_authz nor a gateway DENY rule
    (so no 302 to Keycloak with a Secure cookie over plain HTTP, no 403 instead of the 301); every
    other request is treated exactly as on the HTTPS listener, also on the HTTP port behind a
    TLS-terminating proxy that says X-Forwarded-Proto: https."""
    over = MODES[mode]
    run = run_program(stack, overrides=over)
    cfg = load_stack(stack, over)
    denies = [a["spec"] for a in specs(run, AP) if a["spec"]["action"] == "DENY"
              and a["metadata"]["namespace"] == cfg.istio.gateway.namespace]
    # bearer tokens, oauth2-proxy's health endpoints, and one group/principal check per app
    # (authorizeAt both, the default, in both modes)
    assert len(denies) == 2 + len(cfg.apps)

    def checked(host: str, path: str, h: dict[str, str], port: int) -> bool | None:
        if mode == "extension-provider":
            return custom_checks(custom_policy(run), host, path, h, port)
        return envoy_filter_checks(virtual_services(run), ext_authz_filter(run), host, path, h, port, cfg)

    https_port = cfg.istio.gateway.https_target_ports[0]

    @settings(max_examples=400, deadline=None)
    @given(request_strategy(cfg), listener_strategy(cfg))
    def check(req, listener):
        (host, path, auth), (port, proto) = req, listener
        h = headers_of(auth, proto)
        if redirected(cfg, port, h):
            assert not checked(host, path, h, port), (req, listener)
            assert not any(deny_may_match(d, host, path, h, port) for d in denies), (req, listener)
        else:
            as_https = {**h, "x-forwarded-proto": "https"}
            assert checked(host, path, h, port) == checked(host, path, as_https, https_port)
            assert [deny_may_match(d, host, path, h, port) for d in denies] == [
                deny_may_match(d, host, path, as_https, https_port) for d in denies]

    check()
    # the properties are not vacuous: app hosts are checked and denied on HTTPS
    for app in cfg.apps:
        assert checked(app.host, "/", headers_of(None, "https"), https_port)
        for port in cfg.istio.gateway.http_target_ports:
            assert not checked(app.host, "/", headers_of(None, "http"), port)
            assert checked(app.host, "/", headers_of(None, "https"), port)
    api = next(a for a in cfg.apps if a.api_clients)
    assert any(deny_may_match(d, api.host, "/", headers_of("Bearer x", "https"), https_port)
               for d in denies)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_envoy_filter_mode_limits_ext_authz_on_the_http_listener_ports(stack, runs):
    cfg = load_stack(stack)
    ef = ext_authz_filter(runs[stack, "envoy-filter"])
    patches = [p for p in ef["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
    assert patches[0] == ext_authz_insert(ef)  # the filter exists before it is adjusted
    ports = sorted({p["match"]["listener"].get("portNumber") for p in patches[1:]})
    assert ports == sorted(cfg.istio.gateway.http_target_ports)
    for port in cfg.istio.gateway.http_target_ports:
        ops = [p["patch"]["operation"] for p in patches if p["match"]["listener"].get("portNumber") == port]
        assert ops == ["INSERT_BEFORE", "MERGE"]
        assert not ext_authz_enabled_on_listener(ef, port, {"x-forwarded-proto": "http"})
        assert not ext_authz_enabled_on_listener(ef, port, {})
        assert ext_authz_enabled_on_listener(ef, port, {"x-forwarded-proto": "https"})
    for port in cfg.istio.gateway.https_target_ports:  # HTTPS: always, whatever the header says
        assert ext_authz_enabled_on_listener(ef, port, {"x-forwarded-proto": "http"})
    # only the ext_authz filter is switched; the merge keeps it fail-closed
    merge = next(p for p in patches if p["patch"]["operation"] == "MERGE")["patch"]["value"]["typed_config"]
    assert set(merge) == {"@type", "filter_enabled_metadata"} and merge["@type"] == EXT_AUTHZ_TYPE


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_exempt_route_names_match_the_virtual_service_routes(stack, runs):
    run = runs[stack, "envoy-filter"]
    servers = (HTTPS_PORT, HTTP_PORT)  # the Gateway's two servers (virtual hosts host:443, host:80)
    routes = {(vhost_name(v["hosts"][0], s), r["name"])
              for v in virtual_services(run) for r in v["http"] for s in servers}
    disabled = disabled_routes(ext_authz_filter(run))
    assert disabled <= routes  # a patch naming no route would silently not exempt it
    cfg = load_stack(stack)
    expected: set[tuple[str, str]] = set()
    for s in servers:
        expected.add((vhost_name(cfg.auth_hostname, s), "auth-host"))
        for a in cfg.apps:
            expected.add((vhost_name(a.host, s), f"{a.name}-oauth2"))
            expected |= {(vhost_name(a.host, s), f"{a.name}-public-{i}") for i in range(len(a.public_paths))}
            if a.api_clients:
                expected.add((vhost_name(a.host, s), f"{a.name}-bearer"))
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
                    if ap["metadata"]["name"] == "authproxy-deny-proxy-health":
                        # the only rule on the auth host: oauth2-proxy's probe endpoints
                        assert to["operation"]["paths"] == ["/oauth2/ping", "/oauth2/ready"]
                        continue
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
    every, *rest = spec["configPatches"]
    assert every["applyTo"] == "NETWORK_FILTER" and every["patch"]["operation"] == "MERGE"
    assert "portNumber" not in every["match"]["listener"]
    hcm = every["patch"]["value"]["typed_config"]
    assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True
    assert hcm["path_with_escaped_slashes_action"] == "UNESCAPE_AND_FORWARD"
    assert hcm["early_header_mutation_extensions"] == [early_header_mutation()]
    # X_Auth_Request_Groups is X-Auth-Request-Groups to WSGI/CGI/Rack/PHP: refused at the edge
    assert hcm["common_http_protocol_options"] == {"headers_with_underscores_action": "REJECT_REQUEST"}
    hsts = {"header": {"key": "strict-transport-security", "value": "max-age=31536000"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    hosts = [cfg.auth_hostname, *(a.host for a in cfg.apps)]
    local = [p for p in rest if p["applyTo"] == "NETWORK_FILTER"]
    assert sorted(p["match"]["listener"]["portNumber"] for p in local) == sorted(
        cfg.istio.gateway.https_target_ports)  # HTTPS listeners only (never HSTS over plain HTTP)
    for p in local:
        (mapper,) = p["patch"]["value"]["typed_config"]["local_reply_config"]["mappers"]
        assert mapper["headers_to_add"] == [hsts]
        regex = mapper["filter"]["header_filter"]["header"]["string_match"]["safe_regex"]["regex"]
        assert mapper["filter"]["header_filter"]["header"]["name"] == ":authority"
        for h in hosts:  # RE2 and Python agree on this subset (literal alternation, (?i), anchors)
            assert re.fullmatch(regex, h) and re.fullmatch(regex, h.upper() + ":443")
        assert not re.fullmatch(regex, "other.example.org") and not re.fullmatch(regex, "x" + hosts[0])
    vhosts = [p for p in rest if p["applyTo"] == "VIRTUAL_HOST"]
    assert [p["match"]["routeConfiguration"]["vhost"]["name"] for p in vhosts] == [
        vhost_name(h, HTTPS_PORT) for h in hosts]
    assert all(p["patch"] == {"operation": "MERGE", "value": {"response_headers_to_add": [hsts]}}
               for p in vhosts)
    assert len(rest) == len(local) + len(vhosts)


def test_hsts_and_underscore_handling_follow_the_config():
    over = {"istio": {"gateway": {"hsts": {"maxAge": "720h", "includeSubdomains": True},
                                  "underscoreHeaders": "drop"}}}
    spec = named(run_program("prod", overrides=over), EF, "authproxy-gateway-hardening")["spec"]
    hcm = spec["configPatches"][0]["patch"]["value"]["typed_config"]
    assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "DROP_HEADER"
    values = {h["header"]["value"] for p in spec["configPatches"] for _, h in _headers_to_add(p)}
    assert values == {"max-age=2592000; includeSubDomains"}
    assert bad_keys("prod", {"istio": {"gateway": {"hsts": {"preload": True}}}}) == [
        "authproxy:istio.gateway.hsts.preload"]
    assert bad_keys("prod", {"istio": {"gateway": {"hsts": {"maxAge": "20000h"}}}}) == [
        "authproxy:istio.gateway.hsts.maxAge"]
    assert bad_keys("prod", {"istio": {"gateway": {"underscoreHeaders": "allow"}}}) == [
        "authproxy:istio.gateway.underscoreHeaders"]


def _headers_to_add(patch: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    value = patch["patch"]["value"]
    out = [("vhost", h) for h in value.get("response_headers_to_add", [])]
    for m in value.get("typed_config", {}).get("local_reply_config", {}).get("mappers", []):
        out += [("local", h) for h in m["headers_to_add"]]
    return out


def test_oauth2_proxys_health_endpoints_are_refused_from_outside(runs):
    cfg = load_stack("dev")
    spec = named(runs["dev", "extension-provider"], AP, "authproxy-deny-proxy-health")["spec"]
    assert spec["action"] == "DENY"
    hosts = [cfg.auth_hostname, *(a.host for a in cfg.apps)]
    for host in hosts:
        for path in ("/oauth2/ping", "/oauth2/ready"):
            assert deny_may_match(spec, host, path, {}, 443)
            assert deny_may_match(spec, host.upper() + ":443", path, {"x-forwarded-proto": "https"}, 80)
            assert not deny_may_match(spec, host, path, {}, 80)  # plain HTTP: the redirect first
        for path in ("/oauth2/start", "/oauth2/callback", "/ping", "/"):
            assert not deny_may_match(spec, host, path, {}, 443)


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
        assert app.selector_labels == app.workload_labels  # configured, never guessed
        signed_in = spec["rules"][0]
        # a user's token, only from the gateway's workload identity (replayed by another app
        # straight at this sidecar, it comes from that app's identity and is refused)
        assert signed_in["from"] == [{"source": {
            "principals": [f"cluster.local/ns/{cfg.istio.gateway.namespace}/sa/istio-ingressgateway"],
            "requestPrincipals": [issuer_principal]}}]
        if app.groups:
            # full group paths, as the token carries them (`sre` is the top-level /sre)
            assert signed_in["when"] == [{"key": "request.auth.claims[groups]",
                                          "values": ["/" + g for g in app.groups]}]
        else:
            assert "when" not in signed_in
        pa = named(run, "kubernetes:security.istio.io/v1:PeerAuthentication", f"authproxy-{app.name}-mtls")
        assert pa["metadata"]["namespace"] == app.service.namespace
        assert pa["spec"] == {"selector": {"matchLabels": app.selector_labels}, "mtls": {"mode": "STRICT"}}
        dr = named(run, "kubernetes:networking.istio.io/v1:DestinationRule", f"authproxy-{app.name}-mtls")
        assert dr["metadata"]["namespace"] == cfg.istio.gateway.namespace
        assert dr["spec"] == {
            "host": f"{app.service.name}.{app.service.namespace}.svc.cluster.local",
            "exportTo": ["."], "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}
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
    assert len(deny["rules"]) == 4 * len(api_apps)
    gw = cfg.istio.gateway
    bearer = {"key": "request.headers[authorization]", "values": ["Bearer *"]}
    as_https = {"key": "request.headers[x-forwarded-proto]", "values": ["https"]}
    # a client-sent token issued to oauth2-proxy's own client: an app's ID token, replayed
    replayed = [{"key": "request.auth.claims[azp]", "values": [cfg.keycloak.client_id]},
                {"key": "request.headers[x-auth-request-user]", "notValues": ["*"]}]
    for i, app in enumerate(api_apps):
        https_rule, https_replay, http_rule, http_replay = deny["rules"][4 * i:4 * i + 4]
        for rule in (https_rule, http_rule, https_replay, http_replay):
            op = rule["to"][0]["operation"]
            assert op["hosts"] == [app.host, f"{app.host}:*"]
            assert op["notPaths"] == ["/oauth2/*", *app.public_paths]
        for rule in (https_rule, http_rule):
            assert rule["from"] == [{"source": {"notRequestPrincipals": [cfg.keycloak.issuer + "/*"]}}]
        assert "from" not in https_replay and "from" not in http_replay
        # scoped to the HTTP(S) listeners, so raw TCP servers of a shared gateway are untouched;
        # on the HTTP listener only for requests the router does not redirect
        for rule in (https_rule, https_replay):
            assert rule["to"][0]["operation"]["ports"] == [str(p) for p in gw.https_target_ports]
        for rule in (http_rule, http_replay):
            assert rule["to"][0]["operation"]["ports"] == [str(p) for p in gw.http_target_ports]
        assert https_rule["when"] == [bearer]
        assert http_rule["when"] == [bearer, as_https]
        assert https_replay["when"] == [bearer, *replayed]
        assert http_replay["when"] == [bearer, *replayed, as_https]
        # the replay rule never touches a request oauth2-proxy checked (it carries the mark)
        assert deny_may_match({"rules": [https_replay]}, app.host, "/x", {"authorization": "Bearer t"}, 443)
        assert not deny_may_match({"rules": [https_replay]}, app.host, "/x", {
            "authorization": "Bearer t", "x-auth-request-user": "u"}, 443)
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
         "workloadLabels": {"app.kubernetes.io/name": "grafana"},
         "groups": ["sre"], "authorizeAt": "sidecar"}]})
    names = {r.inputs["metadata"]["name"] for r in run.of_type(RA) + run.of_type(AP)}
    assert names == {"authproxy-ext-authz", "authproxy-grafana-jwt", "authproxy-grafana-require-jwt",
                     "authproxy-deny-proxy-health"}


def test_by_default_every_app_is_authorized_at_the_gateway_and_at_its_sidecar():
    for stack in ("dev", "prod", "gateway-api"):
        cfg = load_stack(stack)
        assert {a.authorize_at for a in cfg.apps} == {"both"}
    assert C.App.model_fields["authorize_at"].default == "both"


def test_a_sidecar_only_app_is_announced_in_preview(monkeypatch):
    import pulumi

    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warned.append(msg))
    apps = stack_config("prod")["authproxy:apps"]
    run_program("prod", overrides={"apps": [{**apps[0], "authorizeAt": "sidecar"}, apps[1]]})
    (msg,) = [w for w in warned if "authorizeAt: sidecar" in w]
    assert msg.startswith("app grafana: groups ['/sre'] are enforced only by the app's sidecar")
    warned.clear()
    run_program("prod")
    assert not [w for w in warned if "authorizeAt" in w]


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
    def op(ports: list[str]) -> dict[str, Any]:
        return {"operation": {"hosts": ["grafana.example.com", "grafana.example.com:*"],
                              "ports": ports, "notPaths": ["/oauth2/*", "/public/*"]}}

    no_principal = {"source": {"notRequestPrincipals": [cfg.keycloak.issuer + "/*"]}}
    groups = {"key": "request.auth.claims[groups]", "notValues": ["/sre"]}
    assert list(grafana.group_paths) == ["/sre"]
    as_https = {"key": "request.headers[x-forwarded-proto]", "values": ["https"]}
    assert spec["rules"] == [
        {"from": [no_principal], "to": [op(["443", "8443"])]},
        {"to": [op(["443", "8443"])], "when": [groups]},
        {"from": [no_principal], "to": [op(["80", "8080"])], "when": [as_https]},
        {"to": [op(["80", "8080"])], "when": [groups, as_https]},
    ]
    named(run, RA, "authproxy-jwt")  # the gateway verifies the token it checks
    sidecar = [r for r in run.of_type(AP) if r.inputs["metadata"]["name"] == "authproxy-grafana-require-jwt"]
    assert len(sidecar) == (1 if where == "both" else 0)
    mtls = [r for r in run.kube("PeerAuthentication") + run.kube("DestinationRule")
            if r.inputs["metadata"]["name"] == "authproxy-grafana-mtls"]
    assert len(mtls) == (2 if where == "both" else 0)


# ---------------------------------------------------------------- Istio install
def test_throwaway_installs_istio_with_the_exported_mesh_config(runs):
    cfg = load_stack("throwaway")
    run = runs["throwaway", "extension-provider"]
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
    ef_rels = [plain(r.inputs) for r in runs["throwaway", "envoy-filter"].of_type(RELEASE)
               if r.inputs["chart"] == "istiod"]
    assert "extensionProviders" not in ef_rels[0]["values"]["meshConfig"]


def test_an_installed_istiod_trusts_a_private_keycloak_ca_for_the_jwks():
    """keycloak.caCertificate reaches the istiod it installs: the chart's jwksResolverExtraRootCA
    (ConfigMap pilot-jwks-extra-cacerts at /cacerts/extra.pem, read by istiod's JWKS resolver)."""
    pem = "-----BEGIN CERTIFICATE-----\nMIIBprivate\n-----END CERTIFICATE-----\n"
    run = run_program("throwaway", overrides={"keycloak": {"caCertificate": pem}})
    (istiod,) = [plain(r.inputs) for r in run.of_type(RELEASE) if r.inputs["chart"] == "istiod"]
    assert istiod["values"]["jwksResolverExtraRootCA"] == pem
    assert set(istiod["values"]) == {"meshConfig", "jwksResolverExtraRootCA"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_examples_for_clusters_with_istio_do_not_install_it(runs, stack):
    charts = {r.inputs["chart"] for r in runs[stack, "extension-provider"].of_type(RELEASE)}
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
    run_program("throwaway")
    releases = ["authproxy-istio-base", "authproxy-istio-istiod", "authproxy-istio-gateway"]
    assert deps[releases[0]] == []
    assert deps[releases[1]] == releases[:1]
    assert deps[releases[2]] == releases[1:2]
    assert seen == {"authproxy-ingress": releases, "authproxy-authz": releases}


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


@pytest.mark.parametrize("where", ["gateway", "both"])
def test_group_checks_at_the_gateway_work_in_envoy_filter_mode(where):
    """ext_authz is inserted first there too, so the gateway's jwt_authn and RBAC see the token
    oauth2-proxy returns: the same DENY policy as in extension-provider mode."""
    apps = stack_config("prod")["authproxy:apps"]
    apps = [{**apps[0], "authorizeAt": where}, apps[1]]  # grafana: groups [sre]
    runs_ = {m: run_program("prod", overrides=deep_merge(o, {"apps": apps})) for m, o in MODES.items()}
    policies = {m: named(r, AP, "authproxy-grafana-gateway-authz") for m, r in runs_.items()}
    assert policies["envoy-filter"] == policies["extension-provider"]
    insert = ext_authz_insert(ext_authz_filter(runs_["envoy-filter"]))
    assert insert["patch"]["operation"] == "INSERT_FIRST"


def test_sidecar_checks_need_the_pods_labels_and_the_gateway_identity():
    apps = stack_config("prod")["authproxy:apps"]
    unlabelled = [{k: v for k, v in apps[0].items() if k != "workloadLabels"}, apps[1]]
    assert bad_keys("prod", {"apps": unlabelled}) == ["authproxy:apps[0].workloadLabels"]
    with pytest.raises(C.ConfigError, match="no label is guessed"):
        load_stack("prod", {"apps": unlabelled})
    # gateway-only apps need no labels (no policy selects their pods)
    load_stack("prod", {"apps": [{**unlabelled[0], "authorizeAt": "gateway"}, apps[1]]})
    assert bad_keys("prod", {"apps": [{**apps[0], "workloadLabels": {}}, apps[1]]}) == [
        "authproxy:apps[0].workloadLabels"]
    # prod's Istio is not the stack's: the gateway's service account must be named
    raw = project_config("prod")
    del raw["istio"]["gateway"]["serviceAccount"]
    with pytest.raises(C.ConfigError) as e:
        C.load(raw, SECRETS)
    assert [k for k, _ in e.value.problems] == ["authproxy:istio.gateway.serviceAccount"]
    # ...but it is known when the stack installs Istio, and with the Gateway API
    assert load_stack("dev").gateway_principal == "cluster.local/ns/istio-ingress/sa/istio-ingressgateway"
    assert load_stack("gateway-api").gateway_principal == "cluster.local/ns/istio-ingress/sa/authproxy-istio"
    from components.istio_install import GATEWAY_RELEASE
    assert C.INSTALLED_GATEWAY_SERVICE_ACCOUNT == GATEWAY_RELEASE  # the chart names it so


@pytest.mark.parametrize("groups,ok", [
    (["sre"], True), (["/sre"], True), (["/platform/sre"], True), (["sre", "/platform/sre"], True),
    (["sre", "/sre"], False), (["platform/sre"], False), (["/platform/"], False), (["//sre"], False),
])
def test_groups_are_names_or_full_paths(groups, ok):
    apps = stack_config("prod")["authproxy:apps"]
    over = {"apps": [{**apps[0], "groups": groups}, apps[1]]}
    if ok:
        assert [g.startswith("/") for g in load_stack("prod", over).apps[0].group_paths] == [True] * len(groups)
    else:
        assert bad_keys("prod", over) == ["authproxy:apps[0].groups"]


def test_timeout_out_of_range_is_rejected():
    assert bad_keys("dev", {"istio": {"extAuthzTimeout": "0s"}}) == ["authproxy:istio.extAuthzTimeout"]


def test_timeout_must_end_before_oauth2_proxy_deletes_a_session_waiting_for_its_refresh_lock():
    """oauth2-proxy deletes a session whose refresh lock it waited 5 s for; the check timeout must
    cancel that wait first (docs/reliability.md, Keycloak restart)."""
    assert load_stack("prod", {"istio": {"extAuthzTimeout": "4s"}}).istio.ext_authz_timeout == 4
    assert bad_keys("prod", {"istio": {"extAuthzTimeout": "5s"}}) == ["authproxy:istio.extAuthzTimeout"]
    no_refresh = {"istio": {"extAuthzTimeout": "10s"}, "session": {"cookieRefresh": "0s", "cookieExpire": "5m"}}
    assert load_stack("prod", no_refresh).istio.ext_authz_timeout == 10


LEGACY_PORTS = {"istio": {"gateway": {"httpTargetPorts": [8080], "httpsTargetPorts": [8443]}}}


@pytest.mark.parametrize("mode", list(MODES))
def test_gateway_target_ports_scope_every_gateway_check(mode):
    over = deep_merge(MODES[mode], LEGACY_PORTS)
    run = run_program("prod", overrides=over)
    deny = named(run, AP, "authproxy-bearer-requires-jwt")["spec"]
    assert [r["to"][0]["operation"]["ports"] for r in deny["rules"]] == [["8443"], ["8443"], ["8080"], ["8080"]]
    if mode == "extension-provider":
        ports = [c for r in custom_policy(run)["rules"] for c in r["when"] if c["key"] == "destination.port"]
        assert ports and all(c == {"key": "destination.port", "notValues": ["8080"]} for c in ports)
    else:
        ef = ext_authz_filter(run)
        listeners = {p["match"]["listener"].get("portNumber") for p in ef["configPatches"]
                     if p["applyTo"] == "HTTP_FILTER"}
        assert listeners == {None, 8080}


def test_gateway_target_ports_are_validated_naming_the_key():
    def gw(**ports: Any) -> dict[str, Any]:
        return {"istio": {"gateway": ports}}

    key = "authproxy:istio.gateway."
    assert bad_keys("prod", gw(httpTargetPorts=[])) == [key + "httpTargetPorts"]
    assert bad_keys("prod", gw(httpsTargetPorts=[])) == [key + "httpsTargetPorts"]
    assert bad_keys("prod", gw(httpsTargetPorts=[443, 443])) == [key + "httpsTargetPorts"]
    assert bad_keys("prod", gw(httpTargetPorts=[0])) == [key + "httpTargetPorts[0]"]
    # a port both HTTP (no check before the redirect) and HTTPS would lose its check
    assert bad_keys("prod", gw(httpTargetPorts=[80, 8443])) == [key + "httpTargetPorts"]
    with pytest.raises(C.ConfigError, match="one or the other"):
        load_stack("prod", gw(httpTargetPorts=[80, 8443]))
    # the old single list is gone; it is reported as an unknown key, not silently ignored
    assert bad_keys("prod", gw(targetPorts=[80, 443])) == [key + "targetPorts"]
    # throwaway installs the gateway chart, which serves on 80/443
    assert bad_keys("throwaway", LEGACY_PORTS) == [key + "httpTargetPorts", key + "httpsTargetPorts"]
    load_stack("prod", LEGACY_PORTS)  # an existing legacy gateway: fine


def test_ext_authz_envoy_filter_has_a_priority():
    # Its header_to_metadata patch is relative (INSERT_BEFORE ext_authz): istioctl analyze
    # (IST0151) wants an explicit priority.
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
