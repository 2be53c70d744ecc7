"""Sign-out ends the oauth2-proxy session (cookie and Redis) and the Keycloak SSO session."""

from __future__ import annotations

from urllib.parse import urlsplit

import jwt

from authproxy_local.harness import Harness
from tests.e2e.browser import Browser
from tests.e2e.conftest import echo_json


def _keycloak_session_ids(h: Harness, username: str) -> set[str]:
    return {s["id"] for s in h.keycloak_sessions(username)}


def test_sign_out_ends_both_sessions(live: Harness) -> None:
    name = live.config.session.cookie_name
    before = set(live.redis_keys(f"{name}-*"))
    b = Browser(live.ca_file)
    alice = live.users["alice"]
    landed = b.login(live.app_url("echo"), alice.username, alice.password)
    doc = echo_json(landed)
    assert doc is not None, landed.text[:200]
    token = doc["headers"]["authorization"].split(" ", 1)[1]
    sid = jwt.decode(token, options={"verify_signature": False})["sid"]
    mine = set(live.redis_keys(f"{name}-*")) - before
    assert len(mine) == 1
    assert sid in _keycloak_session_ids(live, "alice"), "Keycloak has this browser's SSO session"
    old_cookie = b.cookie(name)

    r = b.get(f"{live.auth_url}/oauth2/sign_out?rd={live.app_url('echo')}")
    assert r.status_code == 302
    assert r.headers["Location"] == live.app_url("echo")
    assert b.cookie(name) is None, "the session cookie is cleared"
    assert not (mine & set(live.redis_keys(f"{name}-*"))), "the session is gone from Redis"
    assert sid not in _keycloak_session_ids(live, "alice"), "the Keycloak SSO session is ended"

    # Back to the app: a fresh login form, not a silent SSO sign-in.
    page = b.open(live.app_url("echo"))
    assert urlsplit(page.url).path.endswith("/protocol/openid-connect/auth")
    assert 'id="kc-form-login"' in page.text

    # The old cookie, replayed, is worthless.
    replay = Browser(live.ca_file)
    r = replay.get(live.app_url("echo"), headers={"Cookie": f"{name}={old_cookie}"})
    assert r.status_code == 302 and echo_json(r) is None
