"""The short versions of `make soak` (docs/reliability.md), on the live prod run: signed-in
browsers under light load while every oauth2-proxy pod is replaced as the Deployment does it, and
while the Redis master dies and the sentinels promote a replica. Runs after the other prod tests
(it kills and replaces components); the failover runs last."""

from __future__ import annotations

import pytest

from authproxy_local.harness import Harness
from authproxy_local.soak.load import LoadGen, create_users
from authproxy_local.soak.scenarios import redis_failover, rolling_restart

SESSIONS, RATE = 20, 20.0
"""Light load: 20 signed-in browsers, one request per second each."""
FAILOVER_SLACK_SECONDS = 8
"""What a failover may add to the sentinels' `downAfter` before signed-in requests succeed again:
the promotion (about 1 s), oauth2-proxy's Redis client reconnecting (its pool probes once a
second), the next readiness probe (2 s) and istiod's push (docs/reliability.md)."""


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


def test_rolling_restart_fails_no_request(prod_live: Harness, browsing, record) -> None:
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
