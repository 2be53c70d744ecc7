"""The gateway's edge protections on the real Envoy, built from the very config the stack
generates: the cookie filter on responses (an app cannot set or clear oauth2-proxy's cookies,
oauth2-proxy's own refreshed cookie still arrives), HSTS on upstream responses *and* on the
gateway's local replies (the ext_authz redirect), and header names with underscores refused.

One Envoy runs an HTTP connection manager assembled from the stack's pieces: the hardening
EnvoyFilter's HCM merge and local-reply config (components/authz.py), the ext_authz filter as
envoy-filter mode inserts it (first), the cookie filter (components/cookies.py), a virtual host
with the HSTS ``response_headers_to_add``; behind it one small Python server plays oauth2-proxy
(``/authproxy-check/...``: the check) and the app (everything else). Istio's translation of the
same objects is tests/conformance/test_translation.py; the live suite runs the whole stack.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from authproxy_local.core.processes import free_port
from components.authz import (
    EXT_AUTHZ_FILTER,
    HCM_FILTER,
    ROUTER_FILTER,
    AuthzArgs,
    ext_authz_filter_config,
    extension_provider,
    gateway_hardening_envoy_filter_spec,
)
from components.config import HSTS_HEADER
from components.cookies import SessionCookies, lua_filter, set_cookie_name
from components.headers import CHECK_PATH_PREFIX
from components.stack import authz_args
from tests.envoy_proc import running_envoy
from tests.unit.stacks import load_stack

HOST = "echo.authproxy.test"
N = SessionCookies("_authproxy")


class _Backend(BaseHTTPRequestHandler):
    """oauth2-proxy (the check: 302 without ``cookie: ok``, 200 with a refreshed session cookie
    with it) and the app (answers with the ``Set-Cookie`` headers the request's ``x-set`` headers
    ask for, and its own HSTS header)."""

    seen: ClassVar[list[dict[str, str]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith(CHECK_PATH_PREFIX + "/"):
            if self.headers.get("cookie") == "ok":
                self.send_response(200)
                self.send_header("Set-Cookie", "_authproxy=refreshed; Path=/; Secure; HttpOnly")
            else:
                self.send_response(302)
                self.send_header("Location", "https://keycloak.authproxy.test/auth")
                self.send_header("Set-Cookie", "_authproxy_abc_csrf=c; Path=/; Secure")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        _Backend.seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        for v in self.headers.get_all("x-set") or []:
            self.send_header("Set-Cookie", v)
        self.send_header(HSTS_HEADER, "max-age=0")  # an app trying to switch HSTS off
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


def _args() -> AuthzArgs:
    return authz_args(load_stack("dev", istio={"extAuthzMode": "envoy-filter"}))


def _bootstrap(port: int, backend: int) -> dict[str, Any]:
    args = _args()
    hardening = gateway_hardening_envoy_filter_spec(args)["configPatches"]
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "edge",
        "use_remote_address": True,
    }
    for p in hardening:  # the HCM merges: every listener, then the HTTPS listener's local replies
        if p["applyTo"] == "NETWORK_FILTER":
            hcm.update({k: v for k, v in p["patch"]["value"]["typed_config"].items() if k != "@type"})
    vhost_headers = next(p["patch"]["value"]["response_headers_to_add"] for p in hardening
                         if p["applyTo"] == "VIRTUAL_HOST"
                         and p["match"]["routeConfiguration"]["vhost"]["name"] == f"{HOST}:443")
    provider = extension_provider(args["provider"])
    typed = ext_authz_filter_config(provider, "backend")
    hcm["route_config"] = {"virtual_hosts": [{
        "name": f"{HOST}:443", "domains": ["*"], "response_headers_to_add": vhost_headers,
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]}
    hcm["http_filters"] = [
        {"name": EXT_AUTHZ_FILTER, "typed_config": typed},
        lua_filter(N),
        {"name": ROUTER_FILTER, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ]
    backend_cluster = {"name": "backend", "type": "STATIC", "connect_timeout": "2s",
                       "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
                           {"endpoint": {"address": {"socket_address": {
                               "address": "127.0.0.1", "port_value": backend}}}}]}]}}
    return {"static_resources": {
        "listeners": [{"name": "l", "address": {"socket_address": {"address": "127.0.0.1",
                                                                    "port_value": port}},
                       "filter_chains": [{"filters": [{"name": HCM_FILTER, "typed_config": hcm}]}]}],
        "clusters": [backend_cluster]}}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    try:
        with running_envoy(_bootstrap(port, server.server_address[1]), tmp_path_factory.mktemp("edge"),
                           port, lambda: _get(port, "/", {"cookie": "ok"})):
            yield port
    finally:
        server.shutdown()


def _get(port: int, path: str, headers: dict[str, Any]) -> http.client.HTTPResponse:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.putrequest("GET", path, skip_host=True)
    c.putheader("Host", HOST)
    for k, v in headers.items():
        for one in v if isinstance(v, list) else [v]:
            c.putheader(k, one)
    c.endheaders()
    r = c.getresponse()
    r.read()
    c.close()
    return r


@pytest.mark.parametrize(("value", "name"), [
    ("_authproxy=x; Path=/", "_authproxy"), ("  _authproxy =x", "_authproxy"),
    ("_authproxy", "_authproxy"), ("_authproxy; Domain=.authproxy.test", "_authproxy"),
    ("a=_authproxy", "a"), ("_authproxy_0=; Max-Age=0", "_authproxy_0"), ("", ""),
    ("=_authproxy", ""), ("x=1=2; _authproxy=3", "x"),
])
def test_set_cookie_names_as_browsers_parse_them(value: str, name: str) -> None:
    assert set_cookie_name(value) == name


ATTACKS = [
    "_authproxy=attacker-session; Domain=.authproxy.test; Path=/; Secure",   # session fixation
    "_authproxy=; Domain=.authproxy.test; Max-Age=0",                        # forced sign-out
    "_authproxy_1=part; Domain=.authproxy.test",                             # a split part
    "_authproxy_0123abcd_csrf=x; Domain=.authproxy.test",                    # login CSRF
    "  _authproxy = spaced; Domain=.authproxy.test",
    "_authproxy; Domain=.authproxy.test",                                    # nameless: value = name
]
KEPT = ["app_session=1; Path=/; HttpOnly", "_authproxyX=1", "theme=dark"]


def test_an_app_cannot_set_or_clear_oauth2_proxys_cookies(edge: int) -> None:
    r = _get(edge, "/", {"cookie": "ok", "x-set": [*ATTACKS, *KEPT]})
    assert r.status == 200
    got = r.headers.get_all("set-cookie") or []
    # the app's own cookies pass, in order, byte for byte; oauth2-proxy's refreshed session cookie
    # (added by ext_authz on allow, after the filter ran on the response) arrives too
    assert got == [*KEPT, "_authproxy=refreshed; Path=/; Secure; HttpOnly"], got
    assert all(set_cookie_name(v) != "_authproxy" or v.endswith("HttpOnly") for v in got)


def test_hsts_on_app_responses_and_on_the_gateways_own_redirect(edge: int) -> None:
    expected = "max-age=31536000"
    ok = _get(edge, "/", {"cookie": "ok"})
    assert ok.status == 200 and ok.headers.get_all(HSTS_HEADER) == [expected]  # app's max-age=0 replaced
    redirect = _get(edge, "/page", {})  # no session: ext_authz's local reply (302 to sign-in)
    assert redirect.status == 302 and redirect.headers["location"].startswith("https://keycloak.")
    assert redirect.headers.get_all(HSTS_HEADER) == [expected]


def test_the_sign_in_redirect_keeps_oauth2_proxys_csrf_cookie(edge: int) -> None:
    """ext_authz's local reply passes the cookie filter's response side too (Envoy runs every
    encoder filter for it): the filter leaves it alone, or sign-in could never complete."""
    redirect = _get(edge, "/page", {"x-set": "_authproxy=from-the-app"})
    assert redirect.status == 302
    assert redirect.headers.get_all("set-cookie") == ["_authproxy_abc_csrf=c; Path=/; Secure"]


def test_header_names_with_underscores_are_refused_at_the_edge(edge: int) -> None:
    before = len(_Backend.seen)
    for name in ("X_Auth_Request_Groups", "X_Forwarded_Email", "x_auth_request_user"):
        r = _get(edge, "/", {"cookie": "ok", name: "admins"})
        assert r.status == 400, name
    assert len(_Backend.seen) == before  # none of them reached the app
    assert _get(edge, "/", {"cookie": "ok", "X-Custom-Header": "x"}).status == 200
