"""The short versions of `make soak` (docs/reliability.md), on the live prod run: signed-in
browsers under light load while every oauth2-proxy pod is replaced as the Deployment does it, and
while the Redis master dies and the sentinels promote a replica. Runs after the other prod tests
(it kills and replaces components). Last, with the prod stack's 2-minute cookieRefresh: a session
whose Keycloak session an admin ended is refused for good once oauth2-proxy's refresh is refused,
although the gateway keeps its cookie (components/session_keep.py), a refreshed session cookie
still reaches the browser past both of the gateway's cookie filters, and a refresh that keeps
Keycloak busy longer than usual completes inside the one check (components/gateway_traffic.py)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from authproxy_local.harness import Harness
from authproxy_local.soak.load import LoadGen, create_users
from authproxy_local.soak.scenarios import redis_failover, rolling_restart
from tests.e2e.browser import LOGIN_FORM_ID, Browser
from tests.e2e.conftest import echo_json
from tests.e2e.test_57_session_keep import refused_everywhere, ticket

SESSIONS, RATE = 20, 20.0
"""Light load: 20 signed-in browsers, one request per second each."""
FAILOVER_SLACK_SECONDS = 8
"""What a failover may add to the sentinels' `downAfter` before signed-in requests succeed again:
the promotion (about 1 s), oauth2-proxy's Redis client reconnecting (its pool probes once a
second), the next readiness probe (2 s) and istiod's push (docs/reliability.md)."""
REFRESH_RETRIES = 4
"""How many 503s the refreshed-cookie test allows before the refresh lands: each is a token refresh
slower than the 2-s check, retried after oauth2-proxy's 2-s refresh lock (about 10 s in all)."""


@pytest.fixture(scope="module")
def browsing(prod_live: Harness) -> tuple[LoadGen, list[dict], str]:
    h = prod_live
    app = next(a for a in h.config.apps if a.groups)
    url = h.app_url(app.name, "/reliability")
    lg = LoadGen(h)
    users = create_users(h, SESSIONS, 500_000, app.groups[0])
    signed = lg.signin(users, url, concurrency=6, attempts=2)
    assert len(signed.sessions) == SESSIONS, signed.failed_attempts[:3]
    return lg, signed.sessions, url


@pytest.fixture(scope="module")
def revoked(prod_live: Harness) -> dict:
    """A user signed in at the group app whose Keycloak sessions an admin then ended (what an
    operator does to throw someone out); requested first, so its refresh falls due while the
    other tests run."""
    h = prod_live
    app = next(a for a in h.config.apps if a.groups)
    name = h.config.session.cookie_name
    [user] = create_users(h, 1, 520_000, app.groups[0])
    before = set(h.redis_keys(f"{name}-*"))
    b = Browser(h.ca_file)
    url = h.app_url(app.name, "/revoked")
    assert echo_json(b.login(url, user.username, user.password)) is not None
    signed_in = time.monotonic()
    [key] = set(h.redis_keys(f"{name}-*")) - before
    s = h.admin_session()
    realm = h.config.keycloak.realm
    uid = s.call("GET", f"/realms/{realm}/users?username={user.username}&exact=true").json()[0]["id"]
    s.call("POST", f"/realms/{realm}/users/{uid}/logout")
    assert not h.keycloak_sessions(user.username)
    return {"browser": b, "url": url, "key": key, "cookie": b.cookie(name), "user": user, "t": signed_in}


KEYCLOAK_FREEZE_SECONDS = 0.7
"""How long Keycloak is frozen while it answers a token refresh: far above what Envoy's former
per-attempt timeout of the check allowed (0.25 s), well inside the check's own 2 s."""


def _signed_in_idle(h: Harness, n: int, path: str) -> dict:
    """A user signed in at the group app who then makes no request until the test needs it."""
    app = next(a for a in h.config.apps if a.groups)
    name = h.config.session.cookie_name
    [user] = create_users(h, 1, n, app.groups[0])
    b = Browser(h.ca_file)
    url = h.app_url(app.name, path)
    assert echo_json(b.login(url, user.username, user.password)) is not None
    return {"browser": b, "url": url, "cookie": b.cookie(name), "t": time.monotonic()}


@pytest.fixture(scope="module")
def slow_refresh(prod_live: Harness) -> dict:
    """Signed in first, with :func:`refreshing`; its refresh is the one Keycloak answers slowly."""
    return _signed_in_idle(prod_live, 540_000, "/slow-refresh")


@contextmanager
def frozen(pid: int, seconds: float) -> Iterator[None]:
    """The process and its children stopped (SIGSTOP) from the start of the block for
    ``seconds``, then continued, as a Keycloak stalled by a garbage collection or a busy host."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in procs:
        p.send_signal(signal.SIGSTOP)

    def cont() -> None:
        for p in procs:
            p.send_signal(signal.SIGCONT)

    timer = threading.Timer(seconds, cont)
    timer.start()
    try:
        yield
    finally:
        timer.join()


@pytest.fixture(scope="module")
def refreshing(prod_live: Harness) -> dict:
    """A user who makes no request until the session is due for refresh (requested first, with
    :func:`revoked`)."""
    return _signed_in_idle(prod_live, 530_000, "/refreshing")


def test_rolling_restart_fails_no_request(prod_live: Harness, browsing, revoked, refreshing, slow_refresh,
                                         record) -> None:
    h = prod_live
    lg, sessions, _ = browsing
    before = {p.name for p in h.endpoints.proxy_pods}
    assert len(before) >= 2, "the prod Deployment runs several replicas"
    o = rolling_restart(h, lg, sessions, RATE)
    record("rolling_restart", o.line())
    assert not before & {p.name for p in h.endpoints.proxy_pods}, "every pod was replaced"
    assert o.requests > 0
    assert o.failed == 0, o.line()
    assert o.sessions_lost == 0, o.line()


def test_redis_failover_loses_no_session(prod_live: Harness, browsing, record) -> None:
    h = prod_live
    lg, sessions, url = browsing
    group = next(a for a in h.config.apps if a.groups).groups[0]
    writers = create_users(h, 6, 510_000, group)
    o = redis_failover(h, lg, sessions, RATE, writers, url)
    record("redis_failover", o.line())
    down_after = h.config.redis.sentinel.down_after
    assert o.sessions_lost == 0, o.line()
    assert o.longest_outage_s <= down_after + FAILOVER_SLACK_SECONDS, o.line()
    assert o.failed <= RATE * (down_after + FAILOVER_SLACK_SECONDS), o.line()
    # the killed pod is back, replicating from the new master
    assert h.redis_killed is None
    assert len(h.redis("ROLE")[2]) == len(h.redis_replicas)


def _proxy_logs(h: Harness) -> str:
    return "".join(Path(p).read_text(errors="replace") for p in sorted(h.run_dir.glob("oauth2-proxy*.log")))


def test_a_refresh_keycloak_refuses_ends_the_session_for_good(prod_live: Harness, revoked, record) -> None:
    h = prod_live
    name = h.config.session.cookie_name
    b: Browser = revoked["browser"]
    old = revoked["cookie"]
    due = revoked["t"] + h.config.session.cookie_refresh + 3
    waited = max(0.0, due - time.monotonic())
    time.sleep(waited)
    r = b.get(revoked["url"])
    assert r.status_code == 302 and echo_json(r) is None, r.status_code
    assert "Fatal refresh error detected" in _proxy_logs(h), "oauth2-proxy's refresh was not refused"
    assert not [c for c in r.raw.headers.getlist("set-cookie") if c.strip().startswith(f"{name}=")]
    assert b.cookie(name) == old, "the gateway kept the cookie"
    assert int(h.redis("EXISTS", revoked["key"])) == 0, "oauth2-proxy removed the session"
    assert refused_everywhere(h, old) == []
    # signing in again needs the password (the Keycloak session is gone) and gives a new ticket
    page = b.open(revoked["url"])
    assert echo_json(page) is None
    user = revoked["user"]
    landed = b.follow(b.submit(page, {"username": user.username, "password": user.password}, LOGIN_FORM_ID))
    assert echo_json(landed) is not None
    assert ticket(b.cookie(name) or "") != ticket(old)
    assert refused_everywhere(h, old) == []
    record("refused_refresh", {"waited_s": round(waited, 1), "old_cookie": "refused everywhere"})


def test_a_refreshed_session_cookie_reaches_the_browser_and_no_app(prod_live: Harness, refreshing,
                                                                   record) -> None:
    """The gateway's two cookie filters together: the refreshed session cookie oauth2-proxy sets
    on an app route (through ext_authz, on the app's response) passes both the session-keep filter
    (it is not a deletion) and the response side of the cookie filter (it is not the app's); the
    app still sees none of oauth2-proxy's cookies."""
    h = prod_live
    name = h.config.session.cookie_name
    b: Browser = refreshing["browser"]
    old = refreshing["cookie"]
    time.sleep(max(0.0, refreshing["t"] + h.config.session.cookie_refresh + 3 - time.monotonic()))
    # A token refresh slower than istio.extAuthzTimeout (Keycloak's token endpoint on a loaded CI
    # machine) is answered 503 and retried by the next request once oauth2-proxy's 2-s refresh lock
    # lapses (docs/reliability.md); the session survives it. A few such answers are tolerated, a
    # refresh that never completes is not.
    unavailable = 0
    r = b.get(refreshing["url"])
    while r.status_code == 503 and unavailable < REFRESH_RETRIES:
        unavailable += 1
        time.sleep(2.5)
        r = b.get(refreshing["url"])
    doc = echo_json(r)
    assert doc is not None, (r.status_code, f"after {unavailable} answers 503")
    set_session = [c for c in r.raw.headers.getlist("set-cookie") if c.strip().startswith(f"{name}=")]
    assert len(set_session) == 1, r.raw.headers.getlist("set-cookie")
    new = b.cookie(name)
    assert new and new != old and ticket(new) == ticket(old), "refreshed in place (same ticket)"
    sent = [c.split("=", 1)[0].strip() for c in (doc["headers"].get("cookie") or "").split(";") if c.strip()]
    assert name not in sent, sent
    assert echo_json(b.get(refreshing["url"])) is not None
    record("refreshed_cookie", {"set_cookie_on_app_route": 1, "app_saw_session_cookie": False,
                                "answered_503_before_refresh": unavailable})


def test_a_refresh_keycloak_answers_slowly_completes_inside_the_check(prod_live: Harness, slow_refresh,
                                                                     record) -> None:
    """Keycloak frozen for 0.7 s while oauth2-proxy refreshes the session's token inside the
    gateway's check: the one check waits for it and the request is served with the refreshed
    cookie. Before, Envoy cut every attempt of the check at the retry back-off's 0.25 s and sent
    it to the other replicas, which waited for the refresh lock the first one never released:
    503 (docs/reliability.md)."""
    h = prod_live
    name = h.config.session.cookie_name
    b: Browser = slow_refresh["browser"]
    old = slow_refresh["cookie"]
    time.sleep(max(0.0, slow_refresh["t"] + h.config.session.cookie_refresh + 3 - time.monotonic()))
    pid = h.procs["keycloak"].pid
    assert pid is not None
    t0 = time.monotonic()
    with frozen(pid, KEYCLOAK_FREEZE_SECONDS):
        r = b.get(slow_refresh["url"])
    took = time.monotonic() - t0
    assert echo_json(r) is not None, (r.status_code, f"after {took:.2f} s")
    assert took >= KEYCLOAK_FREEZE_SECONDS, f"answered in {took:.2f} s: the refresh did not wait for Keycloak"
    new = b.cookie(name)
    assert new and new != old and ticket(new) == ticket(old), "refreshed in place (same ticket)"
    record("slow_refresh", {"keycloak_frozen_s": KEYCLOAK_FREEZE_SECONDS, "answered_in_s": round(took, 2)})
