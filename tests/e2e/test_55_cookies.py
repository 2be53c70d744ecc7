"""oauth2-proxy's cookies never reach an app: the gateway strips the session cookie, its split parts
and the CSRF cookies after ext_authz has used them (components/cookies.py), keeps every other
cookie byte for byte, and leaves them on the /oauth2/ routes, where oauth2-proxy needs them."""

from __future__ import annotations

import pytest

from authproxy_local.harness import Harness
from components.cookies import SessionCookies
from tests.e2e.browser import Browser
from tests.e2e.conftest import echo_json, signed_in


def _session(h: Harness, b: Browser) -> str:
    """The browser's oauth2-proxy session cookie as a ``name=value`` pair."""
    name = h.config.session.cookie_name
    value = b.cookie(name)
    assert value, "signed in: the browser holds the session cookie"
    return f"{name}={value}"


def _app_sees(h: Harness, b: Browser, app: str, cookie: str, path: str = "/") -> str | None:
    """The Cookie header the app receives for a request that sends exactly ``cookie``."""
    r = b.get(h.app_url(app, path), headers={"Cookie": cookie})
    doc = echo_json(r)
    assert doc is not None, (r.status_code, r.text[:200])
    return doc["headers"].get("cookie")


def test_signed_in_the_app_gets_its_own_cookies_and_none_of_oauth2_proxys(live: Harness) -> None:
    b = signed_in(live, "alice")
    name = live.config.session.cookie_name
    session = _session(live, b)
    mine = 'theme=dark; cart="a b c"; ' + name + "X=1"
    sent = f"{mine}; {session}; {name}_csrf=stale; {name}_AbCdEfGh_csrf=c2"
    seen = _app_sees(live, b, "echo", sent)
    assert seen == mine  # byte for byte, in order, the look-alike kept
    # the same on a public path (no check there) and for every app
    assert _app_sees(live, b, "echo", sent, "/healthz") == mine
    assert _app_sees(live, b, "admin", sent) == mine
    # the browser's own jar: the app sees no oauth2-proxy cookie at all
    r = b.open(live.app_url("echo", "/jar"))
    doc = echo_json(r)
    assert doc is not None and r.status_code == 200
    cookies = SessionCookies(name)
    assert not any(cookies.owns(p.split("=", 1)[0].strip())
                   for p in (doc["headers"].get("cookie") or "").split(";") if p.strip())


def test_nothing_left_means_no_cookie_header(live: Harness) -> None:
    b = signed_in(live, "bob")
    assert _app_sees(live, b, "echo", _session(live, b)) is None


def test_the_oauth2_routes_still_get_the_cookies(live: Harness) -> None:
    b = signed_in(live, "alice")
    # on the app host: oauth2-proxy's /oauth2/auth answers from the session cookie
    r = b.get(live.app_url("echo", "/oauth2/auth"), headers={"Cookie": _session(live, b)})
    assert r.status_code == 202, r.status_code
    r = b.get(live.app_url("echo", "/oauth2/userinfo"))
    assert r.status_code == 200 and r.json()["preferredUsername"] == "alice", r.text[:200]
    # on the auth host: sign-out reads and clears it
    r = b.get(f"{live.auth_url}/oauth2/sign_out?rd={live.app_url('echo')}")
    assert r.status_code == 302 and b.cookie(live.config.session.cookie_name) is None


def test_what_an_app_received_is_worthless_at_another_app(live: Harness) -> None:
    """The replay the stripping prevents: a (compromised) app forwards every cookie it got to
    another protected app. alice may use `admin`; with her cookies it would answer 200."""
    b = signed_in(live, "alice")
    everything = "; ".join(f"{c.name}={c.value}" for c in b.session.cookies)
    leaked = _app_sees(live, b, "echo", everything)
    attacker = Browser(live.ca_file)
    r = attacker.get(live.app_url("admin"), headers={"Cookie": leaked} if leaked else {})
    assert r.status_code == 302 and echo_json(r) is None, r.status_code
    assert "/protocol/openid-connect/auth" in r.headers["Location"]
    # control: the full jar (what the app did not get) does open `admin`
    assert Browser(live.ca_file).get(live.app_url("admin"),
                                     headers={"Cookie": everything}).status_code == 200


@pytest.mark.parametrize(("extra", "kept"), [
    ("a=1;b=2", "a=1;b=2"),                                   # ';' without spaces, untouched
    ('q="x y";{s};z=9', 'q="x y";z=9'),                       # quoted value, no spaces
    ("dup=1; dup=2; {s}; dup=3", "dup=1; dup=2; dup=3"),      # duplicate names
    ("{n}X=look-alike; {n}_x=also; {s}", "{n}X=look-alike; {n}_x=also"),
    ("{s}; big=" + "v" * 16_000, "big=" + "v" * 16_000),      # a 16 KiB Cookie header
])
def test_tricky_cookie_headers(live: Harness, extra: str, kept: str) -> None:
    b = signed_in(live, "bob")
    name = live.config.session.cookie_name
    session = _session(live, b)
    sent = extra.format(s=session, n=name)
    if session not in sent:
        sent = f"{sent}; {session}"  # signed in on every request
    assert _app_sees(live, b, "echo", sent) == kept.format(n=name)
