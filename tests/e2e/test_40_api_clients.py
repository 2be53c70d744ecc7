"""API clients: a Keycloak bearer token reaches an app marked `apiClients` without the browser
flow; a bad token does not; apps without `apiClients` do not take bearer tokens instead of a
session."""

from __future__ import annotations

import requests

from authproxy_local.harness import Harness
from tests.e2e.conftest import Attacks, echo_json
from tests.e2e.kc_fixtures import forge, machine_token


def _api_app(h: Harness):
    return next(a for a in h.config.apps if a.api_clients)


def _plain_app(h: Harness):
    return next(a for a in h.config.apps if not a.api_clients)


def _get(h: Harness, url: str, token: str) -> requests.Response:
    return requests.get(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                        verify=h.ca_file, allow_redirects=False, timeout=30)


def test_keycloak_token_reaches_api_app_without_browser_flow(live: Harness) -> None:
    token = machine_token(live, requests)
    app = _api_app(live)
    r = _get(live, live.app_url(app.name, "/api/items"), token)
    assert r.status_code == 200, (r.status_code, r.text[:200])
    doc = echo_json(r)
    assert doc is not None and doc["app"] == app.name
    assert doc["headers"]["authorization"] == f"Bearer {token}"
    # Not through oauth2-proxy: no session identity headers were made up for it.
    assert "x-auth-request-user" not in doc["headers"]


def test_bad_token_is_refused_at_api_app(live: Harness) -> None:
    app = _api_app(live)
    token = machine_token(live, requests)
    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload}.{sig[:-4]}{'AAAA' if not sig.endswith('AAAA') else 'BBBB'}"
    for bad in (tampered, "not-a-jwt", ""):
        r = _get(live, live.app_url(app.name, "/api/items"), bad)
        assert r.status_code in (401, 403), (bad[:20], r.status_code)
        assert echo_json(r) is None


def test_token_does_not_replace_the_session_on_other_apps(live: Harness, attacks: Attacks) -> None:
    """On an app without apiClients a bearer token is no substitute for the session, even one that
    would pass the app's group check: the gateway sends the request to sign in (401 for JSON)."""
    app = _plain_app(live)
    token = machine_token(live, requests)
    attacks.by_gateway(f"machine token at {app.name}", _get(live, live.app_url(app.name, "/"), token), 401)
    member = forge(live, groups=list(app.group_paths), preferred_username="alice")
    attacks.by_gateway(f"token of a group member, no session, at {app.name}",
                       _get(live, live.app_url(app.name, "/"), member), 401)
