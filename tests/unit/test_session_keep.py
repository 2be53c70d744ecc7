"""A session outlives a session-store outage (components/session_keep.py): the rule, the Lua
filter on the real Envoy (it must see a denial that a later filter answers with, as ext_authz
does), and the EnvoyFilter both modes create. Live: the Redis failover scenario (`make soak`,
`make e2e`) counts the sessions a failover costs."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authproxy_local import install
from authproxy_local.core.processes import free_port
from authproxy_local.render.mockrun import run_program
from components.authz import (
    COOKIE_STRIP_PRIORITY,
    EXT_AUTHZ_FILTER,
    EXT_AUTHZ_PRIORITY,
    ROUTER_FILTER,
    SESSION_KEEP_PRIORITY,
)
from components.cookies import LUA_PER_ROUTE_TYPE, LUA_TYPE, SessionCookies
from components.ingress import AUTH_ROUTE, HTTP_PORT, HTTPS_PORT, vhost_name
from components.session_keep import (
    CALLBACK_PATH,
    KEEP_FILTER_NAME,
    callback_lua_source,
    callback_strips_ticket,
    deletes_session_cookie,
    keep_filter,
    keep_lua_source,
    keep_on_proxy_routes,
)

CI = os.environ.get("CI", "").lower() == "true"
EF = "kubernetes:networking.istio.io/v1alpha3:EnvoyFilter"
N = SessionCookies("_authproxy")
PAST = "Expires=Thu, 01 Jan 1970 00:00:00 GMT"


# ---------------------------------------------------------------- the rule
@pytest.mark.parametrize("set_cookie", [
    f"_authproxy=; Path=/; Domain=.authproxy.test; {PAST}; HttpOnly; Secure; SameSite=Lax",  # oauth2-proxy's clear
    "_authproxy=",
    '_authproxy=""; Path=/',
    "_authproxy_0=; Path=/",
    "_authproxy_12=x; Max-Age=0",
    "_authproxy=x; path=/; max-age=-1",
    " _authproxy = ; Path=/",
])
def test_deletions_of_the_session_cookie(set_cookie: str) -> None:
    assert deletes_session_cookie(N, set_cookie)


@pytest.mark.parametrize("set_cookie", [
    "_authproxy=abc.def|123|sig; Path=/; Max-Age=28800; HttpOnly; Secure",  # a (refreshed) session
    "_authproxy_AbCdEfGh_csrf=xyz; Path=/; Max-Age=900",                    # the sign-in's CSRF cookie
    f"_authproxy_AbCdEfGh_csrf=; Path=/; {PAST}",                           # CSRF clean-up passes
    "_authproxyX=; Path=/",
    "_authproxy_x=; Path=/",
    "app_session=; Max-Age=0",
    "_authproxy=x; Max-Age=30",
    "_authproxy=x; Max-Age=soon",
    "garbage",
])
def test_everything_else_passes(set_cookie: str) -> None:
    assert not deletes_session_cookie(N, set_cookie)


# ---------------------------------------------------------------- on the real Envoy
def _answer_with(cookies: list[str]) -> str:
    """A Lua filter that answers every request itself, with these Set-Cookie values and the
    Cookie header it received (``x-seen-cookie``): a local reply, as ext_authz's denial is."""
    values = ", ".join(json.dumps(c) for c in cookies)
    return f"""
function envoy_on_request(h)
  local seen = {{}}
  for i = 0, h:headers():getNumValues("cookie") - 1 do seen[#seen + 1] = h:headers():getAtIndex("cookie", i) end
  h:respond({{[":status"] = "302", ["location"] = "https://sso.example.com/auth",
              ["x-seen-cookie"] = table.concat(seen, " | "), ["set-cookie"] = {{{values}}}}}, "")
end
"""


@dataclass
class Answer:
    set_cookies: list[str]
    seen_cookie: str | None
    """The Cookie header(s) the answering filter received (None: none)."""


@pytest.fixture(scope="module")
def envoy_for(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A function: Set-Cookie values a denial carries -> those the client gets, through an Envoy
    whose chain is [keep filter (unless keep=False), the answering filter, router];
    ``proxy_route=True`` puts the request on a route with oauth2-proxy's per-route config."""
    try:
        exe = install.ensure("envoy")
    except install.InstallError as e:
        if CI:
            pytest.fail(f"CI=true and envoy cannot be installed: {e}")
        pytest.skip(f"envoy is not installed and could not be installed: {e}")
    procs: list[subprocess.Popen[str]] = []

    def run(cookies: list[str], keep: bool = True, *, path: str = "/",
            cookie: str | None = None, proxy_route: bool = False) -> Answer:
        port = free_port()
        filters = [keep_filter(N)] if keep else []
        filters += [
            {"name": "answer", "typed_config": {"@type": LUA_TYPE, "default_source_code": {
                "inline_string": _answer_with(cookies)}}},
            {"name": ROUTER_FILTER, "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ]
        route: dict[str, object] = {"match": {"prefix": "/"}, "direct_response": {"status": 404}}
        if proxy_route:
            route["typed_per_filter_config"] = keep_on_proxy_routes(N)
        hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
                        ".v3.HttpConnectionManager",
               "stat_prefix": "t",
               "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [route]}]},
               "http_filters": filters}
        boot = {"static_resources": {"listeners": [{
            "name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}]}}
        conf: Path = tmp_path_factory.mktemp("envoy") / "envoy.json"
        conf.write_text(json.dumps(boot))
        p = subprocess.Popen([str(exe), "-c", str(conf), "--base-id", str(port), "-l", "error"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"cookie": cookie} if cookie else {})
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.build_opener(_NoRedirect).open(req, timeout=1) as r:
                    headers = r.headers
                    break
            except urllib.error.HTTPError as e:
                headers = e.headers
                break
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"envoy did not start: {p.stderr and p.stderr.read()}") from None
                time.sleep(0.1)
        p.terminate()
        p.wait(timeout=20)
        return Answer(headers.get_all("set-cookie") or [], headers.get("x-seen-cookie") or None)

    yield run
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=20)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a: object, **k: object) -> None:
        return None


CLEAR = f"_authproxy=; Path=/; Domain=.authproxy.test; {PAST}; HttpOnly; Secure; SameSite=Lax"
CSRF = "_authproxy_AbCdEfGh_csrf=state; Path=/; Max-Age=900; HttpOnly; Secure"


def test_a_denial_that_deletes_the_session_cookie_keeps_it(envoy_for) -> None:
    # without the filter the browser is told to delete its session cookie (oauth2-proxy's answer
    # while Redis fails over); with it the deletion is gone and the CSRF cookie still set
    assert envoy_for([CLEAR, CSRF], keep=False).set_cookies == [CLEAR, CSRF]
    assert envoy_for([CLEAR, CSRF]).set_cookies == [CSRF]
    assert envoy_for(["_authproxy_0=; Max-Age=0", "_authproxy_1=; Max-Age=0"]).set_cookies == []


def test_other_cookies_pass_unchanged_in_order(envoy_for) -> None:
    others = ["a=1; Path=/", "_authproxy=ticket; Max-Age=28800", "_authproxyX=; Max-Age=0"]
    assert envoy_for(others).set_cookies == others


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from([CLEAR, CSRF, "_authproxy=", "_authproxy=t; Max-Age=5",
                                 "_authproxy_3=; Max-Age=-1", "x=1", "_authproxy_x=", "y=; Max-Age=0"]),
                min_size=1, max_size=5))
def test_the_script_agrees_with_the_python_rule(envoy_for, cookies: list[str]) -> None:
    assert envoy_for(cookies).set_cookies == [c for c in cookies if not deletes_session_cookie(N, c)]


# ---------------------------------------------------------------- the EnvoyFilter, both modes
@pytest.mark.parametrize("overrides", [{}, {"istio": {"extAuthzMode": "envoy-filter"}}])
def test_both_modes_keep_the_cookie_before_ext_authz_and_strip_tickets_on_oauth2_proxys_routes(overrides) -> None:
    run = run_program("dev", overrides=overrides)
    [ef] = [e.inputs for e in run.of_type(EF) if e.inputs["metadata"]["name"].endswith("-session-cookie-keep")]
    spec = ef["spec"]
    assert spec["workloadSelector"] == {"labels": {"istio": "ingressgateway"}}
    # applied after the ext_authz EnvoyFilter (envoy-filter mode inserts the filter it anchors on)
    assert EXT_AUTHZ_PRIORITY < spec["priority"] == SESSION_KEEP_PRIORITY < COOKIE_STRIP_PRIORITY
    insert, *per_route = spec["configPatches"]
    assert insert["match"]["listener"]["filterChain"]["filter"]["subFilter"] == {"name": EXT_AUTHZ_FILTER}
    assert insert["patch"]["operation"] == "INSERT_BEFORE"
    assert insert["patch"]["value"] == keep_filter(N)
    assert "envoy_on_request" not in keep_lua_source(N)  # responses only
    vhosts = [p["match"]["routeConfiguration"]["vhost"] for p in per_route]
    off = {(v["name"], v["route"]["name"]) for v in vhosts}
    assert all(p["patch"]["value"]["typed_per_filter_config"] == {
        KEEP_FILTER_NAME: {"@type": LUA_PER_ROUTE_TYPE,
                           "source_code": {"inline_string": callback_lua_source(N)}}} for p in per_route)
    assert "envoy_on_response" not in callback_lua_source(N)  # sign-out's deletion passes there
    want = {(vhost_name("auth.authproxy.test", port), AUTH_ROUTE) for port in (HTTPS_PORT, HTTP_PORT)}
    for app in ("echo", "admin"):
        want |= {(vhost_name(f"{app}.authproxy.test", port), f"{app}-oauth2") for port in (HTTPS_PORT, HTTP_PORT)}
    assert off == want  # sign-out (and only oauth2-proxy's routes) may delete the cookie; callbacks there


# ---------------------------------------------------------------- sign-in callbacks: a new ticket
TICKET = "_authproxy=dGlja2V0.c2VjcmV0|1700000000|c2ln"


@pytest.mark.parametrize(("path", "header", "left"), [
    (CALLBACK_PATH + "?code=c&state=s", f"{TICKET}; _authproxy_AbCdEfGh_csrf=x", "_authproxy_AbCdEfGh_csrf=x"),
    (CALLBACK_PATH, f"a=1;{TICKET};b=2", "a=1;b=2"),
    (CALLBACK_PATH, f"_authproxy_0=p0; _authproxy_1=p1; {TICKET}", None),
    (CALLBACK_PATH, " _authproxy = t ; keep=me", "keep=me"),
    (CALLBACK_PATH, "_authproxy; x=1", "x=1"),  # a pair without '=': Go reads it as that name
    (CALLBACK_PATH, "_authproxyX=1; _authproxy_x=2", "_authproxyX=1; _authproxy_x=2"),
    ("/oauth2/sign_out", TICKET, TICKET),  # sign-out needs the ticket (it DELs the session)
    ("/oauth2/auth", TICKET, TICKET),
    ("/oauth2/start?rd=/", TICKET, TICKET),
])
def test_the_callback_rule(path: str, header: str, left: str | None) -> None:
    assert callback_strips_ticket(N, path, header) == left


def test_a_callback_reaches_oauth2_proxy_without_the_ticket(envoy_for) -> None:
    # without the per-route script oauth2-proxy's callback gets the old ticket (and would save the
    # new session under it: persistence.Manager.Save reuses a ticket that decodes)
    cookie = f"{TICKET}; _authproxy_AbCdEfGh_csrf=state; app=1"
    path = CALLBACK_PATH + "?code=c&state=s"
    assert envoy_for([], path=path, cookie=cookie).seen_cookie == cookie  # the app route's script
    got = envoy_for([], path=path, cookie=cookie, proxy_route=True)
    assert got.seen_cookie == "_authproxy_AbCdEfGh_csrf=state; app=1"
    assert envoy_for([], path=CALLBACK_PATH, cookie=TICKET, proxy_route=True).seen_cookie is None


def test_sign_out_on_oauth2_proxys_routes_keeps_the_ticket_and_deletes_the_cookie(envoy_for) -> None:
    got = envoy_for([CLEAR, CSRF], path="/oauth2/sign_out", cookie=TICKET, proxy_route=True)
    assert got.seen_cookie == TICKET
    assert got.set_cookies == [CLEAR, CSRF]


@settings(max_examples=20, deadline=None)
@given(st.lists(st.sampled_from([TICKET, "_authproxy_0=a", "_authproxy_1=b", "_authproxy_Ab_csrf=c", "x=1",
                                 "_authproxyX=2", " y = 3 ", "_authproxy", ""]), min_size=1, max_size=5),
       st.sampled_from(["; ", ";"]))
def test_the_callback_script_agrees_with_the_python_rule(envoy_for, pairs: list[str], sep: str) -> None:
    header = sep.join(pairs).strip()  # HTTP trims a header value's ends on the wire
    if not header.strip(" ;"):
        return  # no Cookie header worth sending
    got = envoy_for([], path=CALLBACK_PATH, cookie=header, proxy_route=True).seen_cookie
    assert got == callback_strips_ticket(N, CALLBACK_PATH, header)
