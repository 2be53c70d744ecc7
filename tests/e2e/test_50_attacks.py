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
from tests.e2e.conftest import echo_json, signed_in
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
def test_open_redirect_through_rd_is_refused(live: Harness, rd: str) -> None:
    b = signed_in(live, "bob")
    r = b.get(f"{live.auth_url}/oauth2/start?rd={quote(rd, safe='')}")
    final = b.follow(r)
    visited = {urlsplit(h.url).hostname for h in b.history} | {urlsplit(final.url).hostname}
    locations = [h.location for h in b.history if h.location]
    assert all(host and (host == live.config.domain or host.endswith("." + live.config.domain))
               for host in visited), visited
    assert not any("evil.example" in (urlsplit(loc).hostname or "") for loc in locations), locations


def test_sign_out_rd_to_foreign_domain_is_refused(live: Harness) -> None:
    b = signed_in(live, "bob")
    r = b.get(f"{live.auth_url}/oauth2/sign_out?rd={quote('https://evil.example/', safe='')}")
    assert "evil.example" not in (urlsplit(r.headers.get("Location", "")).hostname or "")


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


def test_forged_jwts_are_refused(live: Harness, record) -> None:
    results = {}
    for name, token in _forgeries(live).items():
        r = _bearer(live, token)
        results[name] = r.status_code
        assert echo_json(r) is None, f"{name}: reached the app"
        assert r.status_code in (401, 403), f"{name}: {r.status_code}"
    record("forged_jwt_status", results)
    # Forged tokens on an app without apiClients, and to a signed-in user's session: still no.
    plain = next(a for a in live.config.apps if not a.api_clients)
    for name, token in _forgeries(live).items():
        assert echo_json(_bearer(live, token, app=plain.name, path="/")) is None, name


def test_forged_token_does_not_override_a_session(live: Harness) -> None:
    """A signed-in outsider adds a forged admin token: the app still sees the session's user."""
    b = signed_in(live, "bob")
    admin = next(a for a in live.config.apps if a.groups)
    forged = forge(live, preferred_username="alice", groups=list(admin.groups))
    r = b.get(live.app_url(admin.name), headers={"Authorization": f"Bearer {forged}"})
    assert echo_json(r) is None and r.status_code in (401, 403), r.status_code


# ---- cookies ------------------------------------------------------------------------------


def test_tampered_cookie_is_refused(live: Harness) -> None:
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
        assert r.status_code == 302 and echo_json(r) is None, f"{what}: {r.status_code}"


def test_cookie_replayed_after_sign_out_is_refused(live: Harness) -> None:
    name = live.config.session.cookie_name
    b = signed_in(live, "bob")
    cookie = b.cookie(name)
    assert b.get(f"{live.auth_url}/oauth2/sign_out").status_code == 302
    r = Browser(live.ca_file).get(live.app_url("echo"), headers={"Cookie": f"{name}={cookie}"})
    assert r.status_code == 302 and echo_json(r) is None


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


def test_client_identity_headers_do_not_impersonate(live: Harness) -> None:
    b = signed_in(live, "bob")
    r = b.get(live.app_url("echo"), headers=SPOOF)
    doc = echo_json(r)
    assert r.status_code == 200 and doc is not None
    seen = doc["headers"]
    assert seen["x-auth-request-preferred-username"] == "bob"
    assert seen["x-auth-request-email"] == live.users["bob"].email
    for h in SPOOF:
        assert "spoofed" not in seen.get(h.lower(), ""), h
        assert "evil.example" not in seen.get(h.lower(), ""), h
    assert "admins" not in seen.get("x-auth-request-groups", "")
    # ...and they do not open the group-restricted app.
    admin = next(a for a in live.config.apps if a.groups)
    r = b.get(live.app_url(admin.name), headers=SPOOF)
    assert r.status_code == 403 and echo_json(r) is None


def test_identity_headers_without_session_are_refused(live: Harness) -> None:
    r = Browser(live.ca_file).get(live.app_url("echo"), headers=SPOOF)
    assert r.status_code == 302 and echo_json(r) is None
    r = Browser(live.ca_file).get(live.app_url("echo", "/healthz"), headers=SPOOF)
    doc = echo_json(r)
    assert doc is not None, "public path still served"
    for h in SPOOF:
        assert h.lower() not in doc["headers"], f"{h} reached the app on a public path"


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
def test_path_tricks_do_not_skip_sign_in(live: Harness, path: str, record) -> None:
    url = f"https://{live.config.apps[0].host}{path}"
    s = requests.Session()
    req = requests.Request("GET", url, headers={"Accept": "text/html"}).prepare()
    req.url = url  # exactly as written: no client-side normalization
    r = s.send(req, verify=live.ca_file, allow_redirects=False, timeout=30)
    doc = echo_json(r)
    record(f"path {path}", r.status_code)
    assert doc is None, f"{path} reached the app without sign-in as {doc and doc['path']}"
    # Sent to sign in, refused, or redirected to the normalized path (which is then checked).
    assert r.status_code in (301, 302, 308, 400, 401, 403, 404), r.status_code


# ---- plain HTTP ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["app", "auth"])
def test_plain_http_is_redirected_to_https(live: Harness, which: str) -> None:
    host = {"app": live.config.apps[0].host, "auth": live.config.auth_hostname}[which]
    r = requests.get(f"http://{host}/some/path?x=1", allow_redirects=False, timeout=30)
    assert r.status_code == 301, r.status_code
    assert r.headers["Location"] == f"https://{host}/some/path?x=1"
    assert echo_json(r) is None
