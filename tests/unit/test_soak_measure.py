"""The soak's definitions (docs/reliability.md), on hand-made load records: what counts as failed,
the longest outage, lost sessions, the event's p99, the report lines."""

from __future__ import annotations

from pathlib import Path

from authproxy_local.soak.measure import (
    CLEARED,
    SENT,
    Outcome,
    Request,
    failure_cause,
    failure_causes,
    longest_outage_s,
    lost_sessions,
    outcome,
    percentile,
    read_requests,
    total_line,
)


def R(t_ms: float, status: int = 200, session: int = 0, flags: int = SENT, lat_ms: float = 5) -> Request:
    return Request(int(t_ms * 1000), int(lat_ms * 1000), status, session, flags)


def test_outage_runs_from_the_first_failure_to_the_next_success():
    reqs = [R(0), R(10), R(20, 503), R(25, -2), R(40, 302), R(1020), R(1030, 503), R(1031)]
    assert longest_outage_s(reqs) == 1.0  # 20 ms -> 1020 ms
    assert longest_outage_s([R(0), R(10)]) == 0.0
    assert longest_outage_s([]) == 0.0


def test_outage_orders_by_start_not_by_completion():
    # a slow success that started before the failures does not end the outage
    reqs = [R(0, 200, lat_ms=900), R(100, 503), R(500, 200)]
    assert longest_outage_s(reqs) == 0.4


def test_an_outage_that_never_ends_lasts_until_the_last_request_ended():
    assert longest_outage_s([R(0), R(100, 503, lat_ms=10), R(300, 503, lat_ms=50)]) == 0.25


def test_only_the_apps_200_is_a_success():
    o = outcome("x", [R(0), R(1, 299), R(2, 302), R(3, -1), R(4, -3), R(5, 503)], ["a"])
    assert o.failed == 5
    assert o.failed_by_status == {"not-the-app": 1, "302": 1, "timeout": 1, "reset": 1, "503": 1}


def test_lost_sessions_are_deleted_cookies_and_failed_probes_counted_once():
    reqs = [R(0, 302, session=0, flags=SENT | CLEARED), R(1, session=1), R(2, session=2)]
    assert lost_sessions(reqs, ["a", "b", "c"]) == {"a"}
    assert lost_sessions(reqs, ["a", "b", "c"], {"a": 200, "b": 302, "c": 200}) == {"a", "b"}
    assert lost_sessions(reqs, ["a", "b", "c"], {"a": 302, "b": 200, "c": 200}) == {"a"}


def test_p99_covers_the_event_window_only():
    reqs = [R(t, lat_ms=1) for t in range(10)] + [R(1000, lat_ms=800)]
    assert outcome("x", reqs, ["a"], event_us=(0, 9_000)).p99_ms == 1.0
    assert outcome("x", reqs, ["a"], event_us=(0, 1_000_000)).p99_ms == 800.0
    assert percentile([], 99) == 0.0 and percentile([3, 1, 2], 50) == 2


def test_lines(tmp_path: Path):
    p = tmp_path / "r.csv"
    p.write_text("0,5000,200,0,1\n1000,7000,503,1,1\n2000,5000,200,1,1\n")
    o = outcome("rolling restart", read_requests(p), ["a", "b"])
    o.load = (1.5, 2.0)
    assert o.line() == ("rolling restart: 3 requests, 1 failed (503: 1), longest outage 0.00 s, "
                        "p99 7 ms during the event, 0 of 2 sessions lost (load 1.5 -> 2.0)")
    storm = Outcome("storm", extra={"sign-ins/s": 8.7})
    assert storm.line() == "storm: sign-ins/s 8.7 (load 0.0 -> 0.0)"
    two = [o, Outcome("failover", requests=10, failed_by_status={"302": 3}, longest_outage_s=6.5,
                      sessions=5, sessions_lost=2)]
    assert total_line(two) == ("soak: 2 scenarios, 4 failed requests of 13, 2 sessions lost, "
                               "longest outage 6.50 s")


def test_sessions_sign_in_spread_over_the_refresh_period() -> None:
    """Batches start spread/8 apart (so the sessions' first refreshes do not coincide), every
    session is kept; spread 0 signs everyone in at once."""
    import time
    from types import SimpleNamespace
    from typing import Any, cast

    from authproxy_local.soak.__main__ import signin_spread

    calls: list[tuple[float, list[str]]] = []

    class FakeLoadGen:
        def signin(self, users: list[Any], url: str, **_: Any) -> Any:
            calls.append((time.monotonic(), [u.username for u in users]))
            return SimpleNamespace(sessions=[{"user": u.username} for u in users])

    users = [SimpleNamespace(username=f"u{i}") for i in range(16)]
    t0 = time.monotonic()
    sessions = signin_spread(cast(Any, FakeLoadGen()), cast(Any, users), "https://x", spread=0.8)
    assert [s["user"] for s in sessions] == [f"u{i}" for i in range(16)]
    assert [len(names) for _, names in calls] == [2] * 8
    starts = [t - t0 for t, _ in calls]
    assert all(abs(s - i * 0.1) < 0.08 for i, s in enumerate(starts)), starts
    calls.clear()
    assert len(signin_spread(cast(Any, FakeLoadGen()), cast(Any, users), "https://x", spread=0)) == 16
    assert [len(names) for _, names in calls] == [16]


def test_a_failed_request_is_told_by_who_answered_it():
    gateway_check = {"status": 503, "server": "istio-envoy", "body": ""}
    gateway_route = {"status": 503, "server": "istio-envoy", "body": "upstream connect error or disconnect/reset "
                     "before headers. reset reason: connection termination"}
    proxied = {"status": 503, "server": "istio-envoy", "upstream_ms": "12", "body": "<html>Service Unavailable"}
    denied = {"status": 302, "server": "istio-envoy", "body": '<a href="https://sso.example.com/realms/corp/x">Found</a>.'}
    none = {"status": -1, "error": 'Get "https://wiki.example.com/soak": context deadline exceeded'}
    assert failure_cause(gateway_check) == "503: the gateway (no body: the check failed or timed out)"
    assert failure_cause(gateway_route).startswith("503: the gateway (upstream connect error")
    assert failure_cause(proxied) == "503: upstream istio-envoy (<html>Service Unavailable)"
    assert failure_cause(denied).startswith("302: oauth2-proxy through the check (<a href=")
    assert failure_cause(none) == "timeout: no response (context deadline exceeded)"
    assert failure_causes([gateway_check, none, gateway_check]) == {
        "503: the gateway (no body: the check failed or timed out)": 2,
        "timeout: no response (context deadline exceeded)": 1}
