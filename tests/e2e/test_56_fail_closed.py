"""Fail closed where a cluster or an app differs from the happy path (docs/security.md), in both
ext_authz modes and both ingress APIs. Every attack asserts *who* refused it: the gateway itself
(no upstream answered), unless the case is about a sidecar.

- oauth2-proxy's own paths (ping, ready, robots.txt) on every app host get the sign-in redirect;
  its probe endpoints under /oauth2/ are refused from outside;
- the app with groups has, behind its Service, a pod the sidecar policies miss (other labels) and
  a pod without a sidecar: a user outside the group reaches none of them, a member never reaches
  the pod without a sidecar (the gateway speaks mTLS only);
- a group of the same name elsewhere in the realm does not count (full group paths);
- the ID token an app received opens nothing else: not another app through the gateway, not an
  API-client app, not another app's sidecar directly, also after sign-out;
- header names with underscores never reach an app;
- an app's Set-Cookie for oauth2-proxy's cookies never reaches the browser;
- HSTS on every answer of every host;
- oauth2-proxy logs the client address the gateway saw, not a forged one;
- with every sidecar policy removed, the gateway alone still refuses all of the above.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import requests

from authproxy_local.harness import Harness
from authproxy_local.mesh.workloads import app_pods, exposed_app
from components.cookies import SessionCookies, set_cookie_name
from tests.e2e.browser import Browser
from tests.e2e.conftest import Attacks, echo_json, gateway_answered, signed_in
from tests.e2e.kc_fixtures import forge
from tests.e2e.mesh import call_sidecar

HSTS = "strict-transport-security"


def _sign_in_redirect(h: Harness, r: Any) -> bool:
    loc = r.headers.get("Location", "")
    return r.status_code == 302 and (h.config.keycloak.host in loc or "/oauth2/start" in loc)


def _app_requests(h: Harness) -> dict[str, int]:
    return {name: e.requests for name, e in h.echo.items()}


def _bearer(h: Harness, url: str, token: str) -> requests.Response:
    return requests.get(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                        verify=h.ca_file, allow_redirects=False, timeout=30)


# ---- 1. nothing oauth2-proxy answers itself passes the check ----------------------------------

SELF_ANSWERED = ("/ping", "/ready", "/robots.txt")
PROBES = ("/oauth2/ping", "/oauth2/ready")


def test_oauth2_proxys_own_paths_get_the_sign_in_redirect(live: Harness, attacks: Attacks) -> None:
    before = _app_requests(live)
    for app in live.config.apps:
        for path in SELF_ANSWERED:
            r = Browser(live.ca_file).get(live.app_url(app.name, path))
            attacks.by_gateway(f"{app.name}{path} without a session", r, 302)
            assert _sign_in_redirect(live, r), r.headers.get("Location")
    for host in [live.config.auth_hostname, *(a.host for a in live.config.apps)]:
        for path in PROBES:
            r = Browser(live.ca_file).get(f"https://{host}{path}")
            attacks.by_gateway(f"{host}{path} from outside", r, 403)
    assert _app_requests(live) == before, "a request reached an app"


# ---- 2. pods the sidecar policies miss ------------------------------------------------------------


def test_a_user_outside_the_group_reaches_no_pod_of_the_app(live: Harness, attacks: Attacks) -> None:
    app = exposed_app(live.config)
    assert app, "the stack has an app with groups checked at its sidecar"
    pods = {p.name: p for p in app_pods(live.config) if p.app == app}
    assert {p.sidecar for p in pods.values()} == {True, False} and len(pods) == 3
    group = next(a for a in live.config.apps if a.name == app).groups
    outsider = next(u for u in live.users.values() if not set(u.groups) & set(group))
    member = next(u for u in live.users.values() if set(u.groups) & set(group))
    b = signed_in(live, outsider.username, "echo")
    before = _app_requests(live)
    for i in range(12):  # round robin over the three endpoints, several times
        r = b.get(live.app_url(app, f"/page-{i}"))
        attacks.by_gateway(f"{outsider.username} (not in {list(group)}) at {app}", r, 403)
    after = _app_requests(live)
    assert {p: after[p] - before[p] for p in pods} == dict.fromkeys(pods, 0)
    # A member reaches the pods with a sidecar (the one the policies miss too: the gateway
    # checked the groups), never the pod without one: the gateway speaks Istio mTLS only.
    m = signed_in(live, member.username, app)
    served = set()
    for i in range(12):
        r = m.get(live.app_url(app, f"/page-{i}"))
        doc = echo_json(r)
        assert r.status_code == 200 and doc is not None, r.status_code
        served.add(doc["pod"])
    bare = next(p for p in pods.values() if not p.sidecar)
    assert served == {p.name for p in pods.values() if p.sidecar}, served
    assert _app_requests(live)[bare.name] == before[bare.name], "a request reached the pod without a sidecar"


def test_a_same_named_group_elsewhere_in_the_realm_does_not_count(live: Harness, attacks: Attacks) -> None:
    app = next(a for a in live.config.apps if a.groups)
    user = live.users["e2e-lookalike"]
    assert [g.rsplit("/", 1)[1] for g in user.groups] == [app.groups[0]]  # same leaf name
    b = signed_in(live, user.username, "echo")
    r = b.get(live.app_url(app.name))
    attacks.by_gateway(f"member of {user.groups[0]} at {app.name} (needs /{app.groups[0]})", r, 403)


# ---- 3. the ID token an app received opens nothing else --------------------------------------


def _replays(h: Harness, attacks: Attacks, token: str, when: str) -> None:
    target = next(a for a in h.config.apps if a.groups)  # admin: the token's user is a member
    api = next(a for a in h.config.apps if a.api_clients)
    r = _bearer(h, h.app_url(target.name, "/"), token)
    attacks.by_gateway(f"ID token at {target.name} through the gateway ({when})", r, 401)
    r = _bearer(h, h.app_url(api.name, "/api/items"), token)
    attacks.by_gateway(f"ID token as an API client of {api.name} ({when})", r, 403)
    origin = next(a for a in h.config.apps if a.api_clients)
    sa = origin.service.name
    a = call_sidecar(h, target.name, "/", token, identity=sa)
    attacks.refused(f"ID token at {target.name}'s sidecar from {origin.name}'s identity ({when})",
                    a.status == 403 and "RBAC: access denied" in a.body, a)
    a = call_sidecar(h, target.name, "/", token, identity=None)
    attacks.refused(f"ID token at {target.name}'s sidecar in plain text ({when})", bool(a.refused), a)


def test_the_id_token_an_app_received_opens_nothing_else(live: Harness, attacks: Attacks) -> None:
    member = next(u for u in live.users.values() if u.groups)
    b = signed_in(live, member.username, "echo")
    doc = echo_json(b.get(live.app_url("echo", "/where-the-token-lands")))
    assert doc is not None
    token = doc["headers"]["authorization"].split(" ", 1)[1]
    target = next(a for a in live.config.apps if a.groups)
    # Control: from the gateway's identity the same token is admitted, so every refusal below is
    # about where the token comes from, not about the token.
    ok = call_sidecar(live, target.name, "/", token, identity="gateway")
    assert ok.status == 200 and '"app"' in ok.body, ok
    _replays(live, attacks, token, "signed in")
    assert b.get(f"{live.auth_url}/oauth2/sign_out").status_code == 302
    _replays(live, attacks, token, "after sign-out")


# ---- 4. header names with underscores --------------------------------------------------------

UNDERSCORED = {
    "X_Auth_Request_Groups": "admins",
    "X_Auth_Request_User": "alice",
    "X_Auth_Request_Email": "alice@evil.example",
    "X_Auth_Request_Preferred_Username": "alice",
    "X_Forwarded_Email": "alice@evil.example",
    "X_Forwarded_User": "alice",
}


def test_underscore_headers_never_reach_an_app(live: Harness, attacks: Attacks) -> None:
    bob = signed_in(live, "bob", "echo")
    public = next(a for a in live.config.apps if a.public_paths)
    path = public.public_paths[0].rstrip("*")
    before = _app_requests(live)
    for name, value in UNDERSCORED.items():
        attacks.by_gateway(f"{name} signed in", bob.get(live.app_url("echo"), headers={name: value}), 400)
        attacks.by_gateway(f"{name} on a public path", Browser(live.ca_file).get(
            live.app_url(public.name, path), headers={name: value}), 400)
    assert _app_requests(live) == before


# ---- 5. an app's Set-Cookie for oauth2-proxy's cookies ----------------------------------------


def test_an_app_cannot_set_or_clear_oauth2_proxys_cookies(live: Harness, attacks: Attacks) -> None:
    name = live.config.session.cookie_name
    owned = SessionCookies(name).owns
    d = live.config.domain
    b = signed_in(live, "alice", "echo")
    session = b.cookie(name)
    cases = {
        "fixation": f"{name}=attacker-session; Domain=.{d}; Path=/; Secure; HttpOnly",
        "sign-out": f"{name}=; Domain=.{d}; Path=/; Max-Age=0",
        "split part": f"{name}_1=x; Domain=.{d}; Path=/",
        "CSRF cookie": f"{name}_0123abcd_csrf=x; Domain=.{d}; Path=/",
        "nameless": f"{name}; Domain=.{d}; Path=/",
    }
    for label, value in cases.items():
        r = b.get(live.app_url("echo"), headers={"x-echo-set-cookie": value})
        got = r.raw.headers.getlist("Set-Cookie")
        attacks.refused(f"app's Set-Cookie: {label}", echo_json(r) is not None
                        and not any(owned(set_cookie_name(v)) for v in got), got)
    assert b.cookie(name) == session, "the browser's session cookie changed"
    again = echo_json(b.get(live.app_url("echo")))
    assert again is not None and again["headers"]["x-auth-request-preferred-username"] == "alice"
    # The app's own cookies pass.
    r = b.get(live.app_url("echo"), headers={"x-echo-set-cookie": "app_pref=dark; Path=/"})
    assert r.raw.headers.getlist("Set-Cookie") == ["app_pref=dark; Path=/"]


# ---- 6. HSTS -------------------------------------------------------------------------------------


def test_hsts_on_every_answer_of_every_host(live: Harness) -> None:
    expected = f"max-age={live.config.istio.gateway.hsts.max_age}"
    alice = signed_in(live, "alice", "echo")
    bob = signed_in(live, "bob", "echo")
    public = next(a for a in live.config.apps if a.public_paths)
    answers = {
        "app (200)": alice.get(live.app_url("echo")),
        "app: the app's own header replaced": alice.get(live.app_url("echo")),
        "sign-in redirect (gateway, 302)": Browser(live.ca_file).get(live.app_url("echo")),
        "group refusal (gateway, 403)": bob.get(live.app_url(next(a for a in live.config.apps if a.groups).name)),
        "public path (200)": Browser(live.ca_file).get(live.app_url(public.name, public.public_paths[0].rstrip("*"))),
        "auth host (oauth2-proxy)": Browser(live.ca_file).get(f"{live.auth_url}/oauth2/sign_in"),
    }
    got = {k: r.headers.get(HSTS) for k, r in answers.items()}
    assert got == dict.fromkeys(answers, expected), got


# ---- 7. the client address oauth2-proxy logs --------------------------------------------------


def test_oauth2_proxy_logs_the_client_address_the_gateway_saw(live: Harness, attacks: Attacks) -> None:
    """A sign-in whose every request carries forged forwarding headers: oauth2-proxy's auth log
    names the address the gateway saw (this test's, 127.0.0.1), never the forged one."""
    forged = "203.0.113.77"
    log = live.run_dir / "oauth2-proxy.log"
    start = log.stat().st_size
    b = Browser(live.ca_file)
    b.session.headers.update({"X-Forwarded-For": forged, "X-Real-IP": forged,
                              "X-Envoy-External-Address": forged})
    u = live.users["bob"]
    assert echo_json(b.login(live.app_url("echo"), u.username, u.password)) is not None
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline and not lines:
        with open(log, "rb") as f:
            f.seek(start)
            lines = [x for x in f.read().decode(errors="replace").splitlines()
                     if "[AuthSuccess]" in x and u.email in x]
        time.sleep(0.2)
    assert lines, "oauth2-proxy logged no sign-in"
    attacks.refused("forged client address in oauth2-proxy's auth log", forged not in "\n".join(lines), lines)
    assert lines[0].split(" ", 1)[0] == "127.0.0.1", lines[0]  # this test's real address


# ---- 8. the gateway alone ------------------------------------------------------------------------


def _without_sidecar_policies(h: Harness) -> Any:
    gw_ns = h.config.istio.gateway.namespace
    drop = ("AuthorizationPolicy", "RequestAuthentication", "PeerAuthentication")
    objs = [o for o in h.render.kubernetes
            if not (o.get("kind") in drop and o["metadata"].get("namespace") != gw_ns)]
    assert len(objs) < len(h.render.kubernetes)
    return dataclasses.replace(h.render, kubernetes=objs)


def test_with_the_sidecar_policies_removed_the_gateway_alone_refuses(live: Harness, attacks: Attacks) -> None:
    """The translator-is-live move for the sidecars: istiod's config without any sidecar policy,
    so every refusal below can only be the gateway's."""
    member = next(u for u in live.users.values() if u.groups)
    b = signed_in(live, member.username, "echo")
    doc = echo_json(b.get(live.app_url("echo")))
    assert doc is not None
    token = doc["headers"]["authorization"].split(" ", 1)[1]
    target = next(a for a in live.config.apps if a.groups)
    api = next(a for a in live.config.apps if a.api_clients)
    live.run_proxies(live.translate(_without_sidecar_policies(live)))
    try:
        # the sidecars really hold no policy now: another app's identity, no token, gets in
        bare = call_sidecar(live, target.name, "/", None, identity=api.service.name)
        assert bare.status == 200 and '"app"' in bare.body, bare
        sfx = " (sidecar policies removed)"
        attacks.by_gateway("no session" + sfx, Browser(live.ca_file).get(live.app_url(target.name)), 302)
        bob = signed_in(live, "bob", "echo")
        attacks.by_gateway("outside the group" + sfx, bob.get(live.app_url(target.name)), 403)
        for path in SELF_ANSWERED:
            attacks.by_gateway(f"{path}{sfx}", Browser(live.ca_file).get(live.app_url(target.name, path)), 302)
        attacks.by_gateway("replayed ID token as an API client" + sfx,
                           _bearer(live, live.app_url(api.name, "/api/x"), token), 403)
        attacks.by_gateway("replayed ID token at a browser app" + sfx,
                           _bearer(live, live.app_url(target.name, "/"), token), 401)
        attacks.by_gateway("X_Auth_Request_Groups" + sfx, bob.get(
            live.app_url(api.name), headers={"X_Auth_Request_Groups": "admins"}), 400)
        now = int(time.time())
        forged = {"expired": forge(live, iat=now - 7200, exp=now - 3600),
                  "wrong audience": forge(live, aud="some-other-client"),
                  "wrong issuer": forge(live, iss="https://evil.example/realms/authproxy")}
        for what, t in forged.items():
            r = _bearer(live, live.app_url(api.name, "/api/x"), t)
            attacks.by_gateway(f"forged token ({what}){sfx}", r, 401, 403)
        for path in ("/oauth2/../private", "/healthz/..%2Fprivate", "/%6Fauth2/x"):
            req = requests.Request("GET", live.app_url(api.name, path), headers={"Accept": "text/html"}).prepare()
            req.url = live.app_url(api.name, path)
            r = requests.Session().send(req, verify=live.ca_file, allow_redirects=False, timeout=30)
            attacks.kept_from_apps(f"path trick {path}{sfx}", r)
    finally:
        live.run_proxies()
    assert gateway_answered(Browser(live.ca_file).get(live.app_url(target.name)))
