"""The gateway keeps the session cookie when oauth2-proxy deletes it on an app route (so a
session-store outage signs nobody out: components/session_keep.py); here, live, the other side:
that keeps no one signed in whom oauth2-proxy refused. A session that is gone from Redis (what
oauth2-proxy's own clean-up leaves after a revocation, an expiry, a refused refresh or a failed
authorization; also Redis's TTL) is refused on every app with the kept cookie, before and after
the user signs in again, and that sign-in issues a new ticket instead of reviving the old one.
Sign-out (test_30) still deletes the cookie. The refresh Keycloak refuses is in
test_98_reliability (it needs the prod stack's 2-minute cookieRefresh to pass)."""

from __future__ import annotations

from authproxy_local.harness import Harness
from tests.e2e.browser import LOGIN_FORM_ID, Browser
from tests.e2e.conftest import echo_json


def ticket(cookie: str) -> str:
    """The ticket inside a session cookie value (``base64(ticket)|timestamp|signature``): what
    oauth2-proxy loads the session with; the rest changes at every refresh."""
    return cookie.split("|", 1)[0]


def refused_everywhere(h: Harness, cookie: str) -> list[tuple[str, int]]:
    """The cookie replayed, alone, at every app and at oauth2-proxy's userinfo: (url, status) of
    each answer that came from an app or showed a signed-in user (none expected)."""
    name = h.config.session.cookie_name
    leaks = []
    for app in h.config.apps:
        url = h.app_url(app.name, "/replayed")
        r = Browser(h.ca_file).get(url, headers={"Cookie": f"{name}={cookie}"})
        if echo_json(r) is not None or r.status_code not in (302, 401, 403):
            leaks.append((url, r.status_code))
    r = Browser(h.ca_file).get(f"{h.auth_url}/oauth2/userinfo", headers={"Cookie": f"{name}={cookie}"})
    if r.status_code != 401:
        leaks.append((r.url, r.status_code))
    return leaks


def test_a_session_gone_from_redis_stays_gone_with_the_kept_cookie(live: Harness, record) -> None:
    h = live
    name = h.config.session.cookie_name
    alice = h.users["alice"]
    before = set(h.redis_keys(f"{name}-*"))
    b = Browser(h.ca_file)
    assert echo_json(b.login(h.app_url("echo"), alice.username, alice.password)) is not None
    [key] = set(h.redis_keys(f"{name}-*")) - before
    old = b.cookie(name)
    assert old

    # oauth2-proxy's clean-up (or the TTL) removed the session
    assert int(h.redis("DEL", key)) == 1
    r = b.get(h.app_url("echo"))
    assert r.status_code == 302 and echo_json(r) is None
    assert not [c for c in r.raw.headers.getlist("set-cookie") if c.strip().startswith(f"{name}=")], \
        "the gateway passed oauth2-proxy's deletion of the session cookie on an app route"
    assert b.cookie(name) == old, "the browser keeps the cookie (the keep filter)"
    assert refused_everywhere(h, old) == []
    assert int(h.redis("EXISTS", key)) == 0

    # the same browser signs in again (its Keycloak SSO session still stands: no form)
    landed = b.open(h.app_url("echo"))
    assert echo_json(landed) is not None, (landed.status_code, landed.url)
    new = b.cookie(name)
    assert new and ticket(new) != ticket(old), "the sign-in reused the old ticket (its copies work again)"
    assert refused_everywhere(h, old) == [], "the old ticket works again after a new sign-in"
    assert int(h.redis("EXISTS", key)) == 0
    assert echo_json(b.get(h.app_url("echo"))) is not None
    record("session_keep_refused", {"old_ticket_after_new_sign_in": "refused everywhere"})


def test_a_tampered_or_foreign_cookie_is_refused_and_replaced(live: Harness) -> None:
    """A cookie that does not decode (another cookie secret, tampered): oauth2-proxy's deletion is
    dropped too, the cookie never opens anything, and a sign-in replaces it."""
    h = live
    name = h.config.session.cookie_name
    alice = h.users["alice"]
    b = Browser(h.ca_file)
    assert echo_json(b.login(h.app_url("echo"), alice.username, alice.password)) is not None
    good = b.cookie(name)
    assert good
    value, ts, sig = good.split("|")
    forged = f"{value}|{ts}|{sig[:-4]}AAAA" if not sig.endswith("AAAA") else f"{value}|{ts}|{sig[:-4]}BBBB"
    assert refused_everywhere(h, forged) == []
    fresh = Browser(h.ca_file)
    fresh.session.cookies.set(name, forged, domain=f".{h.config.domain}")
    page = fresh.open(h.app_url("echo"))
    assert echo_json(page) is None  # the login form
    landed = fresh.follow(fresh.submit(page, {"username": alice.username, "password": alice.password}, LOGIN_FORM_ID))
    assert echo_json(landed) is not None
    assert fresh.cookie(name) not in (None, forged)
