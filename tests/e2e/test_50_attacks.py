"""Attacks, all refused: open redirects, forged JWTs, tampered and replayed cookies, identity
header injection, path tricks around the /oauth2/ exemption, plain HTTP."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import quote, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from authproxy_local.harness import Harness
from tests.e2e.browser import Browser
from tests.e2e.conftest import Attacks, echo_json, gateway_answered, signed_in
from tests.e2e.kc_fixtures import forge

FOREIGN = [
    "https://evil.example/",
    "//evil.example/",
    "https://evil.example%2F.authproxy.test/",
    "/\\evil.example/",
    "https://authproxy.test.evil.example/",
    "https:evil.example",
    "https://echo.authproxy.test@evil.example/",
]


# ---- open redirect ------------------------------------------------------------------------


@pytest.mark.parametrize("rd", FOREIGN)
def test_open_redirect_through_rd_is_refused(live: Harness, rd: str, attacks: Attacks) -> None:
    b = signed_in(live, "bob")
    mark = len(b.history)
    r = b.get(f"{live.auth_url}/oauth2/start?rd={quote(rd, safe='')}")
    final = b.follow(r)
    hops = b.history[mark:]
    # The flow ran to oauth2-proxy's callback (so oauth2-proxy itself decided where to go after
    # sign-in), and from there nowhere outside the domain.
    assert any(urlsplit(h.url).path == "/oauth2/callback" for h in hops), [h.url for h in hops]
    visited = {urlsplit(h.url).hostname for h in hops} | {urlsplit(final.url).hostname}
    locations = [h.location for h in hops if h.location]
    inside = all(host and (host == live.config.domain or host.endswith("." + live.config.domain))
                 for host in visited)
    attacks.refused(f"open redirect rd={rd}", inside and not any(
        "evil.example" in (urlsplit(loc).hostname or "") for loc in locations), locations)


def test_sign_out_rd_to_foreign_domain_is_refused(live: Harness, attacks: Attacks) -> None:
    b = signed_in(live, "bob")
    r = b.get(f"{live.auth_url}/oauth2/sign_out?rd={quote('https://evil.example/', safe='')}")
    assert r.status_code == 302 and not gateway_answered(r)  # oauth2-proxy's own answer
    attacks.refused("sign-out rd to a foreign domain",
                    "evil.example" not in (urlsplit(r.headers.get("Location", "")).hostname or ""), r.headers)


# ---- forged JWTs --------------------------------------------------------------------------


def _bearer(h: Harness, token: str, app: str = "echo", path: str = "/api/items") -> requests.Response:
    return requests.get(h.app_url(app, path), verify=h.ca_file, allow_redirects=False, timeout=30,
                        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})


def test_control_a_token_signed_with_a_published_key_is_accepted(live: Harness) -> None:
    """The test key is in the realm's JWKS: the forgeries below fail on their claims."""
    r = _bearer(live, forge(live))
    assert r.status_code == 200, (r.status_code, r.text[:200])


def _forgeries(h: Harness) -> dict[str, str]:
    now = int(time.time())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps({
        "iss": h.issuer, "aud": h.config.keycloak.client_id, "sub": "x", "exp": now + 300,
    }).encode()).rstrip(b"=").decode()
    return {
        "wrong key (same kid)": forge(h, key=other),
        "wrong key (unknown kid)": forge(h, key=other, kid="attacker"),
        "alg none": f"{header}.{body}.",
        "alg none (pyjwt)": forge(h, alg="none"),
        "HS256 with the public key": jwt.encode(
            {"iss": h.issuer, "aud": h.config.keycloak.client_id, "sub": "x", "exp": now + 300},
            "not-the-key-" * 4, algorithm="HS256", headers={"kid": h.extras["test_kid"]}),
        "expired": forge(h, iat=now - 7200, exp=now - 3600),
        "not yet valid": forge(h, nbf=now + 3600, iat=now + 3600, exp=now + 7200),
        "wrong issuer": forge(h, iss="https://evil.example/realms/authproxy"),
        "issuer of another realm": forge(h, iss=h.issuer.rsplit("/", 1)[0] + "/master"),
        "wrong audience": forge(h, aud="some-other-client"),
        "no audience": forge(h, aud=None),
    }


def test_forged_jwts_are_refused(live: Harness, record, attacks: Attacks) -> None:
    results = {}
    for name, token in _forgeries(live).items():
        r = _bearer(live, token)
        results[name] = r.status_code
        attacks.by_gateway(f"forged JWT ({name}) at the API", r, 401, 403)
    record("forged_jwt_status", results)
    # Forged tokens on an app without apiClients, and to a signed-in user's session: still no.
    plain = next(a for a in live.config.apps if not a.api_clients)
    for name, token in _forgeries(live).items():
        attacks.by_gateway(f"forged JWT ({name}) at {plain.name}",
                           _bearer(live, token, app=plain.name, path="/"), 401, 403)


def test_forged_token_does_not_override_a_session(live: Harness, attacks: Attacks) -> None:
    """A signed-in outsider adds a forged admin token: the app still sees the session's user."""
    b = signed_in(live, "bob")
    admin = next(a for a in live.config.apps if a.groups)
    forged = forge(live, preferred_username="alice", groups=list(admin.group_paths))
    r = b.get(live.app_url(admin.name), headers={"Authorization": f"Bearer {forged}"})
    attacks.by_gateway("forged admin token next to an outsider's session", r, 403)


# ---- cookies ------------------------------------------------------------------------------


def test_tampered_cookie_is_refused(live: Harness, attacks: Attacks) -> None:
    name = live.config.session.cookie_name
    b = signed_in(live, "alice")
    value = b.cookie(name)
    assert value
    payload, ts, sig = value.split("|")
    variants = {
        "signature": f"{payload}|{ts}|{sig[:-2]}{'AA' if not sig.endswith('AA') else 'BB'}",
        "payload": f"{payload[:-2]}{'AA' if not payload.endswith('AA') else 'BB'}|{ts}|{sig}",
        "timestamp": f"{payload}|{int(ts) + 1}|{sig}",
        "unsigned": payload,
    }
    for what, v in variants.items():
        r = Browser(live.ca_file).get(live.app_url("echo"), headers={"Cookie": f"{name}={v}"})
        attacks.by_gateway(f"tampered session cookie ({what})", r, 302)


def test_cookie_replayed_after_sign_out_is_refused(live: Harness, attacks: Attacks) -> None:
    name = live.config.session.cookie_name
    b = signed_in(live, "bob")
    cookie = b.cookie(name)
    assert b.get(f"{live.auth_url}/oauth2/sign_out").status_code == 302
    r = Browser(live.ca_file).get(live.app_url("echo"), headers={"Cookie": f"{name}={cookie}"})
    attacks.by_gateway("session cookie replayed after sign-out", r, 302)


# ---- identity headers sent by the client -----------------------------------------------------

SPOOF = {
    "X-Auth-Request-User": "alice-spoofed",
    "X-Auth-Request-Email": "alice@evil.example",
    "X-Auth-Request-Preferred-Username": "alice-spoofed",
    "X-Auth-Request-Groups": "admins",
    "X-Forwarded-User": "alice-spoofed",
    "X-Forwarded-Email": "alice@evil.example",
    "X-Forwarded-Groups": "admins",
    "X-Forwarded-Preferred-Username": "alice-spoofed",
}


def test_client_identity_headers_do_not_impersonate(live: Harness, attacks: Attacks) -> None:
    b = signed_in(live, "bob")
    r = b.get(live.app_url("echo"), headers=SPOOF)
    doc = echo_json(r)
    assert r.status_code == 200 and doc is not None
    seen = doc["headers"]
    assert seen["x-auth-request-preferred-username"] == "bob"
    assert seen["x-auth-request-email"] == live.users["bob"].email
    spoofed = [h for h in SPOOF if "spoofed" in seen.get(h.lower(), "")
               or "evil.example" in seen.get(h.lower(), "")]
    attacks.refused("identity headers sent by a signed-in client", not spoofed
                    and "admins" not in seen.get("x-auth-request-groups", ""), spoofed)
    # ...and they do not open the group-restricted app.
    admin = next(a for a in live.config.apps if a.groups)
    attacks.by_gateway("identity headers at the group app", b.get(live.app_url(admin.name), headers=SPOOF), 403)


def test_identity_headers_without_session_are_refused(live: Harness, attacks: Attacks) -> None:
    attacks.by_gateway("identity headers without a session",
                       Browser(live.ca_file).get(live.app_url("echo"), headers=SPOOF), 302)
    r = Browser(live.ca_file).get(live.app_url("echo", "/healthz"), headers=SPOOF)
    doc = echo_json(r)
    assert doc is not None, "public path still served"
    reached = [h for h in SPOOF if h.lower() in doc["headers"]]
    attacks.refused("identity headers on a public path", not reached, reached)


# ---- path tricks around /oauth2/ and public paths ----------------------------------------------

PATHS = [
    "/oauth2/../private",
    "/oauth2/%2E%2E/private",
    "/oauth2/..%2Fprivate",
    "/oauth2%2F..%2Fprivate",
    "/oauth2/.%2E/private",
    "/%6Fauth2/../private",
    "/%6fauth2/x",
    "/OAUTH2/x",
    "/OAuth2/../private",
    "//oauth2/../private",
    "/oauth2//../private",
    "/oauth2/%5C..%5Cprivate",
    "/healthz/../private",
    "/healthz/%2E%2E/private",
    "/healthz%2F..%2Fprivate",
    "/healthz/..%2Fprivate",
    "/./private",
    "/x/../private",
]


@pytest.mark.parametrize("path", PATHS)
def test_path_tricks_do_not_skip_sign_in(live: Harness, path: str, record, attacks: Attacks) -> None:
    url = f"https://{live.config.apps[0].host}{path}"
    s = requests.Session()
    req = requests.Request("GET", url, headers={"Accept": "text/html"}).prepare()
    req.url = url  # exactly as written: no client-side normalization
    r = s.send(req, verify=live.ca_file, allow_redirects=False, timeout=30)
    record(f"path {path}", r.status_code)
    # Sent to sign in, refused, or redirected to the normalized path (which is then checked), by
    # the gateway itself; or answered by oauth2-proxy on its own route (never an app).
    attacks.kept_from_apps(f"path trick {path}", r)


# ---- plain HTTP ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["app", "auth"])
def test_plain_http_is_redirected_to_https(live: Harness, which: str, attacks: Attacks) -> None:
    host = {"app": live.config.apps[0].host, "auth": live.config.auth_hostname}[which]
    r = requests.get(f"http://{host}/some/path?x=1", allow_redirects=False, timeout=30)
    attacks.by_gateway(f"plain HTTP to the {which} host", r, 301)
    assert r.headers["Location"] == f"https://{host}/some/path?x=1"
