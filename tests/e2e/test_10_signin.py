"""Sign-in through the real login form, in both ext_authz modes."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import jwt
import requests

from authproxy_local.harness import Harness
from tests.e2e.browser import Browser
from tests.e2e.conftest import echo_json


def _jwks(h: Harness) -> jwt.PyJWKSet:
    r = requests.get(h.config.keycloak.jwks_uri, verify=h.ca_file, timeout=30)
    assert r.status_code == 200
    return jwt.PyJWKSet.from_dict(r.json())


def test_unauthenticated_request_is_sent_to_keycloak(live: Harness, browser: Browser) -> None:
    r = browser.get(live.app_url("echo", "/some/page?x=1"))
    assert r.status_code == 302
    loc = urlsplit(r.headers["Location"])
    assert f"https://{loc.netloc}{loc.path}" == f"{live.issuer}/protocol/openid-connect/auth"
    q = parse_qs(loc.query)
    assert q["client_id"] == [live.config.keycloak.client_id]
    assert q["redirect_uri"] == [live.config.redirect_url]
    assert q["code_challenge_method"] == ["S256"] and q["code_challenge"][0]
    assert q["response_type"] == ["code"]
    assert echo_json(r) is None


def test_sign_in_reaches_the_app_with_identity_and_a_valid_jwt(live: Harness, browser: Browser, record) -> None:
    alice = live.users["alice"]
    r = browser.login(live.app_url("echo", "/after/login?q=1"), alice.username, alice.password)
    assert r.status_code == 200, r.text[:300]
    # Back on the page first asked for, through the callback on the auth host.
    assert r.url == live.app_url("echo", "/after/login?q=1")
    hosts = [urlsplit(h.url).netloc for h in browser.history]
    assert live.config.auth_hostname in hosts
    callback = [h for h in browser.history if urlsplit(h.url).path == "/oauth2/callback"]
    assert len(callback) == 1 and callback[0].status == 302

    doc = echo_json(r)
    assert doc is not None and doc["app"] == "echo"
    headers = doc["headers"]
    assert headers["x-auth-request-user"]
    assert headers["x-auth-request-email"] == alice.email
    assert headers["x-auth-request-preferred-username"] == "alice"
    assert "/admins" in headers["x-auth-request-groups"].split(",")  # full group paths

    scheme, _, token = headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    key = _jwks(live)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key=key, algorithms=["RS256"], audience=live.config.keycloak.client_id,
                        issuer=live.issuer)
    assert claims["preferred_username"] == "alice"
    assert claims["email"] == alice.email
    assert claims["groups"] == ["/admins"]
    record("jwt_bytes", len(token))


def test_session_is_in_redis_and_the_cookie_is_small(live: Harness, browser: Browser, record) -> None:
    name = live.config.session.cookie_name
    before = set(live.redis_keys(f"{name}-*"))
    bob = live.users["bob"]
    r = browser.login(live.app_url("echo"), bob.username, bob.password)
    assert r.status_code == 200
    after = set(live.redis_keys(f"{name}-*"))
    new = after - before
    assert len(new) == 1, f"expected one new session in Redis, got {new}"
    cookie = browser.cookie(name)
    assert cookie is not None
    set_cookie = f"{name}={cookie}"
    record("session_cookie_bytes", len(set_cookie))
    # A Redis ticket, not the tokens: far below one 4 KiB cookie (the tokens alone are ~1.5 KiB).
    assert len(set_cookie) < 400, len(set_cookie)
    assert browser.cookie(f"{name}_0") is None  # not split into chunks
    c = next(c for c in browser.session.cookies if c.name == name)
    assert c.secure and c.domain.lstrip(".") == live.config.domain
    assert c.has_nonstandard_attr("HttpOnly")


def test_public_path_needs_no_sign_in(live: Harness, browser: Browser) -> None:
    r = browser.get(live.app_url("echo", "/healthz"))
    assert r.status_code == 200
    doc = echo_json(r)
    assert doc is not None and doc["path"] == "/healthz"
    assert "x-auth-request-user" not in doc["headers"]
