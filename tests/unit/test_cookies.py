"""oauth2-proxy's cookies kept away from the apps: the names (one definition shared with
oauth2-proxy's flags), the gateway's Lua filter run on the real Envoy, the EnvoyFilter both modes
create, the per-app opt-out and its validation."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authproxy_local.core.processes import free_port
from authproxy_local.render.mockrun import deep_merge, project_config, run_program
from components import config as C
from components.authz import COOKIE_STRIP_PRIORITY, EXT_AUTHZ_PRIORITY, ROUTER_FILTER
from components.cookies import (
    LUA_FILTER_NAME,
    LUA_PER_ROUTE_TYPE,
    LUA_TYPE,
    SessionCookies,
    lua_filter,
    lua_source,
)
from components.ingress import COOKIES_FORWARDED_ANNOTATION, HTTP_PORT, HTTPS_PORT, vhost_name
from tests.envoy_proc import running_envoy

CI = os.environ.get("CI", "").lower() == "true"
SECRETS = {"keycloakAdminPassword", "keycloakAdminClientSecret", "externalRedisPassword"}
EF = "kubernetes:networking.istio.io/v1alpha3:EnvoyFilter"
VS = "kubernetes:networking.istio.io/v1:VirtualService"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
MODES = ("extension-provider", "envoy-filter")
N = SessionCookies("_authproxy")


# ---------------------------------------------------------------- names (oauth2-proxy v7)
@pytest.mark.parametrize("name", [
    "_authproxy", "_authproxy_0", "_authproxy_1", "_authproxy_12",       # session, split parts
    "_authproxy_csrf", "_authproxy_AbC-_123_csrf", "_authproxy__csrf",   # CSRF, fixed and per request
])
def test_oauth2_proxys_cookies_are_owned(name: str) -> None:
    assert N.owns(name)


@pytest.mark.parametrize("name", [
    "_authproxyX", "_authproxy_", "_authproxy_x", "_authproxy_1a", "_authproxy_csrfX", "authproxy",
    "x_authproxy", "_AUTHPROXY", "_authproxy_\u0661",  # a non-ASCII digit is not a split part
    "_oauth2_proxy", "other_csrf",
])
def test_lookalikes_are_not_owned(name: str) -> None:
    assert not N.owns(name)


def test_a_name_the_script_could_not_quote_is_refused() -> None:
    with pytest.raises(ValueError, match="cookie name"):
        SessionCookies('x"); os.exit() --')


def test_oauth2_proxy_flags_and_the_gateway_filter_name_the_same_cookie() -> None:
    run = run_program("dev", overrides={"session": {"cookieName": "_corp_sso"}})
    args = run.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--cookie-name=_corp_sso" in args and "--cookie-csrf-per-request=true" in args
    [strip] = [e for e in run.of_type(EF) if e.inputs["metadata"]["name"].endswith("-session-cookie-strip")]
    code = strip.inputs["spec"]["configPatches"][0]["patch"]["value"]["typed_config"][
        "default_source_code"]["inline_string"]
    assert code == lua_source(SessionCookies("_corp_sso")) and '"_corp_sso"' in code


# ---------------------------------------------------------------- the Lua filter on the real Envoy
ECHO_COOKIES = """
function envoy_on_request(h)
  local out = {}
  for i = 0, h:headers():getNumValues("cookie") - 1 do out[#out + 1] = h:headers():getAtIndex("cookie", i) end
  h:respond({[":status"] = "200", ["x-cookie-headers"] = tostring(#out)}, table.concat(out, "\\n"))
end
"""


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Upstream Envoy with the generated cookie filter, then a Lua filter answering with the
    Cookie header(s) it got. Yields the base URL."""
    port = free_port()
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "t",
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 404}}]}]},
        "http_filters": [
            lua_filter(N),
            {"name": "echo", "typed_config": {"@type": LUA_TYPE,
                                              "default_source_code": {"inline_string": ECHO_COOKIES}}},
            {"name": ROUTER_FILTER, "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    boot = {"static_resources": {"listeners": [{
        "name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}]}]}}
    url = f"http://127.0.0.1:{port}/"
    with running_envoy(boot, tmp_path_factory.mktemp("envoy"), port,
                       lambda: urllib.request.urlopen(url, timeout=1)):
        yield url


def through(url: str, cookie: str | None = None) -> list[str]:
    """The Cookie header values the upstream gets for a request with this Cookie header."""
    req = urllib.request.Request(url)
    if cookie is not None:
        req.add_header("Cookie", cookie)
    with urllib.request.urlopen(req, timeout=10) as r:
        count = int(r.headers["x-cookie-headers"])
        body = r.read().decode()
    return body.split("\n") if count else []


LONG = "v" * 16_000


@pytest.mark.parametrize(("sent", "received"), [
    ("a=1; _authproxy=x; b=2", ["a=1; b=2"]),
    ("_authproxy=x", []),                                             # nothing left: no header
    ("_authproxy=x; ", []),
    ("_authproxyX=1; _authproxy_0=a; _authproxy_1=b", ["_authproxyX=1"]),
    ('q="a b";_authproxy=x;b=2', ['q="a b";b=2']),                    # quoted, no spaces
    ("x=1; x=2; _authproxy=1; _authproxy=2", ["x=1; x=2"]),           # duplicates
    ("_authproxy_AbCdEfGh_csrf=v; _authproxy_csrf=z; keep=1", ["keep=1"]),
    ("a=1;b=2", ["a=1;b=2"]),                                         # untouched, byte for byte
    ("a=1 ;  b=2 ;c", ["a=1 ;  b=2 ;c"]),
    ("first=1;  _authproxy=s;  last=2", ["first=1;  last=2"]),
    (f"_authproxy=s; big={LONG}; _authproxy_csrf=c", [f"big={LONG}"]),  # 16 KiB
])
def test_the_filter_removes_exactly_oauth2_proxys_cookies(envoy: str, sent: str, received: list[str]) -> None:
    assert through(envoy, sent) == received


def test_without_a_cookie_header_nothing_is_added(envoy: str) -> None:
    assert through(envoy) == []


_names = st.sampled_from(["_authproxy", "_authproxy_0", "_authproxy_7", "_authproxy_csrf",
                          "_authproxy_Ab9-_xyz_csrf", "_authproxyX", "_authproxy_x", "sid", "a",
                          "_authproxy_csrf2"])
_values = st.text(alphabet=st.sampled_from("abcXYZ019-_.=/+ \""), max_size=12).map(str.strip)


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(_names, _values), min_size=1, max_size=8),
       seps=st.lists(st.sampled_from([";", "; ", ";  "]), min_size=8, max_size=8))
def test_the_filter_agrees_with_the_python_definition(envoy: str, pairs: list[tuple[str, str]],
                                                      seps: list[str]) -> None:
    """Whatever the mix, the upstream gets the pairs the Python definition does not own, in order,
    each byte for byte."""
    sent = pairs[0][0] + "=" + pairs[0][1]
    for (name, value), sep in zip(pairs[1:], seps, strict=False):
        sent += f"{sep}{name}={value}"
    got = through(envoy, sent)
    kept = [f"{n}={v}" for n, v in pairs if not N.owns(n)]
    if not kept:
        assert got == []
        return
    assert len(got) == 1
    assert [p.strip() for p in got[0].split(";")] == kept
    if len(kept) == len(pairs):
        assert got == [sent]


# ---------------------------------------------------------------- the EnvoyFilter, both modes
def _strip_filter(run) -> dict:
    [ef] = [e for e in run.of_type(EF) if e.inputs["metadata"]["name"].endswith("-session-cookie-strip")]
    return ef.inputs


@pytest.mark.parametrize("mode", MODES)
def test_both_modes_insert_the_filter_after_ext_authz_before_the_router(mode: str) -> None:
    spec = _strip_filter(run_program("dev", overrides={"istio": {"extAuthzMode": mode}}))["spec"]
    assert spec["workloadSelector"] == {"labels": {"istio": "ingressgateway"}}
    # an explicit priority above the ext_authz EnvoyFilter's: applied later, so its INSERT_BEFORE
    # the router lands between ext_authz and the router
    assert spec["priority"] == COOKIE_STRIP_PRIORITY > EXT_AUTHZ_PRIORITY
    insert = spec["configPatches"][0]
    assert insert["applyTo"] == "HTTP_FILTER" and insert["patch"]["operation"] == "INSERT_BEFORE"
    assert insert["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == ROUTER_FILTER
    typed = insert["patch"]["value"]["typed_config"]
    assert insert["patch"]["value"]["name"] == LUA_FILTER_NAME
    assert typed["clear_route_cache"] is False  # the route ext_authz checked is the route taken


def _disabled(spec: dict) -> set[tuple[str, str]]:
    out = set()
    for p in spec["configPatches"][1:]:
        assert p["applyTo"] == "HTTP_ROUTE"
        assert p["patch"]["value"]["typed_per_filter_config"] == {
            LUA_FILTER_NAME: {"@type": LUA_PER_ROUTE_TYPE, "disabled": True}}
        vhost = p["match"]["routeConfiguration"]["vhost"]
        out.add((vhost["name"], vhost["route"]["name"]))
    return out


def _both_ports(host: str, route: str) -> set[tuple[str, str]]:
    return {(vhost_name(host, port), route) for port in (HTTPS_PORT, HTTP_PORT)}


def test_only_the_routes_to_oauth2_proxy_keep_the_cookies() -> None:
    spec = _strip_filter(run_program("dev"))["spec"]
    assert _disabled(spec) == (
        _both_ports("auth.authproxy.test", "auth-host")
        | _both_ports("echo.authproxy.test", "echo-oauth2")
        | _both_ports("admin.authproxy.test", "admin-oauth2")
    )


def _opt_out(stack: str, app: str) -> dict:
    apps = [dict(a) for a in project_config(stack)["apps"]]
    for a in apps:
        if a["name"] == app:
            a["stripSessionCookies"] = False
    return {"apps": apps}


def test_an_app_that_opts_out_keeps_the_cookies_on_every_route_and_says_so() -> None:
    run = run_program("dev", overrides=_opt_out("dev", "echo"))
    disabled = _disabled(_strip_filter(run)["spec"])
    echo_routes = {r for v, r in disabled if v.startswith("echo.")}
    assert echo_routes == {"echo-oauth2", "echo-public-0", "echo-bearer", "echo-default"}
    assert not any(r == "admin-default" for _, r in disabled)
    notes = {v.inputs["spec"]["hosts"][0]: v.inputs["metadata"].get("annotations") for v in run.of_type(VS)}
    assert notes["echo.authproxy.test"] == {COOKIES_FORWARDED_ANNOTATION: "forwarded"}
    assert notes["admin.authproxy.test"] is None and notes["auth.authproxy.test"] is None


def test_strip_session_cookies_must_be_a_boolean() -> None:
    raw = deep_merge(project_config("dev"), {})
    raw["apps"][0]["stripSessionCookies"] = "sometimes"
    with pytest.raises(C.ConfigError) as e:
        C.load(raw, SECRETS)
    assert [k for k, _ in e.value.problems] == ["authproxy:apps[0].stripSessionCookies"]
    assert "bool" in e.value.problems[0][1]
