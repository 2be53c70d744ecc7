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
    KEEP_FILTER_NAME,
    deletes_session_cookie,
    keep_filter,
    keep_lua_source,
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
def _deny_with(cookies: list[str]) -> str:
    """A Lua filter that answers every request itself, with these Set-Cookie values: a local
    reply, as ext_authz's denial is, which only the filters before it see on the way out."""
    values = ", ".join(json.dumps(c) for c in cookies)
    return f"""
function envoy_on_request(h)
  h:respond({{[":status"] = "302", ["location"] = "https://sso.example.com/auth",
              ["set-cookie"] = {{{values}}}}}, "")
end
"""


@pytest.fixture(scope="module")
def envoy_for(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A function: Set-Cookie values a denial carries -> those the client gets, through an Envoy
    whose chain is [keep filter (unless keep=False), the denying filter, router]."""
    try:
        exe = install.ensure("envoy")
    except install.InstallError as e:
        if CI:
            pytest.fail(f"CI=true and envoy cannot be installed: {e}")
        pytest.skip(f"envoy is not installed and could not be installed: {e}")
    procs: list[subprocess.Popen[str]] = []

    def run(cookies: list[str], keep: bool = True) -> list[str]:
        port = free_port()
        filters = [keep_filter(N)] if keep else []
        filters += [
            {"name": "deny", "typed_config": {"@type": LUA_TYPE, "default_source_code": {
                "inline_string": _deny_with(cookies)}}},
            {"name": ROUTER_FILTER, "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ]
        hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
                        ".v3.HttpConnectionManager",
               "stat_prefix": "t",
               "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                   {"match": {"prefix": "/"}, "direct_response": {"status": 404}}]}]},
               "http_filters": filters}
        boot = {"static_resources": {"listeners": [{
            "name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}]}}
        path: Path = tmp_path_factory.mktemp("envoy") / "envoy.json"
        path.write_text(json.dumps(boot))
        p = subprocess.Popen([str(exe), "-c", str(path), "--base-id", str(port), "-l", "error"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.build_opener(_NoRedirect).open(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    return r.headers.get_all("set-cookie") or []
            except urllib.error.HTTPError as e:
                out = e.headers.get_all("set-cookie") or []
                p.terminate()
                p.wait(timeout=20)
                return out
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"envoy did not start: {p.stderr and p.stderr.read()}") from None
                time.sleep(0.1)

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
    assert envoy_for([CLEAR, CSRF], keep=False) == [CLEAR, CSRF]
    assert envoy_for([CLEAR, CSRF]) == [CSRF]
    assert envoy_for(["_authproxy_0=; Max-Age=0", "_authproxy_1=; Max-Age=0"]) == []


def test_other_cookies_pass_unchanged_in_order(envoy_for) -> None:
    others = ["a=1; Path=/", "_authproxy=ticket; Max-Age=28800", "_authproxyX=; Max-Age=0"]
    assert envoy_for(others) == others


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from([CLEAR, CSRF, "_authproxy=", "_authproxy=t; Max-Age=5",
                                 "_authproxy_3=; Max-Age=-1", "x=1", "_authproxy_x=", "y=; Max-Age=0"]),
                min_size=1, max_size=5))
def test_the_script_agrees_with_the_python_rule(envoy_for, cookies: list[str]) -> None:
    assert envoy_for(cookies) == [c for c in cookies if not deletes_session_cookie(N, c)]


# ---------------------------------------------------------------- the EnvoyFilter, both modes
@pytest.mark.parametrize("overrides", [{}, {"istio": {"extAuthzMode": "envoy-filter"}}])
def test_both_modes_keep_the_cookie_before_ext_authz_and_never_on_oauth2_proxys_routes(overrides) -> None:
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
        KEEP_FILTER_NAME: {"@type": LUA_PER_ROUTE_TYPE, "disabled": True}} for p in per_route)
    want = {(vhost_name("auth.authproxy.test", port), AUTH_ROUTE) for port in (HTTPS_PORT, HTTP_PORT)}
    for app in ("echo", "admin"):
        want |= {(vhost_name(f"{app}.authproxy.test", port), f"{app}-oauth2") for port in (HTTPS_PORT, HTTP_PORT)}
    assert off == want  # sign-out (and only oauth2-proxy's routes) may delete the cookie
