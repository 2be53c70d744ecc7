"""The prod render, live: an existing realm (looked up, not created), Redis with replication and
sentinels (oauth2-proxy finds the master through them), a wildcard gateway host, the `sre`-only
app and the API-client app."""

from __future__ import annotations

import requests

from authproxy_local.harness import Harness, redis_command
from tests.e2e.browser import Browser
from tests.e2e.conftest import PROD_COOKIE_OPT_OUT, echo_json
from tests.e2e.kc_fixtures import machine_token


def _app(h: Harness, *, groups: bool):
    return next(a for a in h.config.apps if bool(a.groups) is groups)


def test_prod_runs_redis_with_sentinels(prod_live: Harness) -> None:
    s = prod_live.sentinel_settings()
    assert s is not None and s["sentinels"] == len(prod_live.endpoints.sentinels) >= 3
    role = prod_live.redis("ROLE")
    assert role[0] == "master" and len(role[2]) == s["replicas"] - 1, role


def test_group_member_signs_in_and_the_session_is_replicated(prod_live: Harness, record) -> None:
    h = prod_live
    app = _app(h, groups=True)
    user = next(u for u in h.users.values() if set(u.groups) & set(app.groups))
    name = h.config.session.cookie_name
    before = set(h.redis_keys(f"{name}-*"))
    b = Browser(h.ca_file)
    r = b.login(h.app_url(app.name, "/d/home"), user.username, user.password)
    assert r.status_code == 200 and r.url == h.app_url(app.name, "/d/home")
    doc = echo_json(r)
    assert doc is not None and doc["app"] == app.name
    assert doc["headers"]["x-auth-request-preferred-username"] == user.username
    new = set(h.redis_keys(f"{name}-*")) - before
    assert len(new) == 1
    # on a replica too (replication, so a failover keeps the session)
    key = new.pop()
    assert h.redis_replicas
    for replica in h.redis_replicas:
        assert redis_command(replica, h.redis_server_password(), "EXISTS", key) == 1
    record("session_cookie_bytes", len(f"{name}={b.cookie(name)}"))


def test_user_outside_the_group_is_refused_but_reaches_the_open_app(prod_live: Harness) -> None:
    h = prod_live
    outsider = h.users["e2e-nogroup"]
    b = Browser(h.ca_file)
    r = b.login(h.app_url(_app(h, groups=False).name), outsider.username, outsider.password)
    assert r.status_code == 200 and echo_json(r) is not None
    r = b.open(h.app_url(_app(h, groups=True).name))
    assert r.status_code == 403 and echo_json(r) is None


def test_api_client_token_on_the_api_app(prod_live: Harness) -> None:
    h = prod_live
    app = next(a for a in h.config.apps if a.api_clients)
    token = machine_token(h, requests)
    r = requests.get(h.app_url(app.name, "/api/x"), headers={"Authorization": f"Bearer {token}"},
                     verify=h.ca_file, allow_redirects=False, timeout=30)
    assert r.status_code == 200 and echo_json(r) is not None
    r = requests.get(h.app_url(app.name, "/api/x"), headers={"Authorization": "Bearer x.y.z"},
                     verify=h.ca_file, allow_redirects=False, timeout=30)
    assert r.status_code == 401


def test_client_applies_to_an_existing_realm_left_at_keycloak_defaults(prod_live: Harness) -> None:
    """An existing realm keeps Keycloak's default SSO session idle timeout (30 min). The stack's
    client must still be accepted there; Keycloak refuses client session lifetimes longer than
    the realm's. The client is the one pulumi-keycloak created in the run's `pulumi up` (read back
    from Keycloak, ids dropped), offered to a fresh realm left at Keycloak's defaults."""
    s = prod_live.admin_session()
    kc = prod_live.config.keycloak
    (created,) = s.call("GET", f"/realms/{kc.realm}/clients?clientId={kc.client_id}").json()
    secret = s.call("GET", f"/realms/{kc.realm}/clients/{created['id']}/client-secret").json()["value"]
    client = {k: v for k, v in created.items() if k not in ("id", "secret")}
    client["protocolMappers"] = [{k: v for k, v in m.items() if k != "id"} for m in created.get("protocolMappers", [])]
    realm = "e2e-defaults"
    s.call("POST", "/realms", {"realm": realm, "enabled": True}, ok=(201,))
    r = s._http.post(f"{s.base_url}/admin/realms/{realm}/clients", json={**client, "secret": secret},
                     headers={"Authorization": f"Bearer {s.token()}"}, timeout=30)
    assert r.status_code == 201, f"Keycloak refused the stack's client: {r.status_code} {r.text[:200]}"


def test_only_the_app_that_opted_out_gets_the_session_cookie(prod_live: Harness) -> None:
    """apps[].stripSessionCookies: false (the prod run opts `wiki` out): that app receives
    oauth2-proxy's session cookie, the app keeping the default never does."""
    h = prod_live
    name = h.config.session.cookie_name
    member = next(u for u in h.users.values() if set(u.groups) & set(_app(h, groups=True).groups))
    b = Browser(h.ca_file)
    assert b.login(h.app_url(PROD_COOKIE_OPT_OUT), member.username, member.password).status_code == 200
    sent = f"pref=1; {name}={b.cookie(name)}"
    seen = {}
    for app in (PROD_COOKIE_OPT_OUT, _app(h, groups=True).name):
        doc = echo_json(b.get(h.app_url(app), headers={"Cookie": sent}))
        assert doc is not None, app
        seen[app] = doc["headers"].get("cookie")
    assert seen[PROD_COOKIE_OPT_OUT] == sent
    assert seen[_app(h, groups=True).name] == "pref=1"
