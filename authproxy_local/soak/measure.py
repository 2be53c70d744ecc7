"""What a scenario's users saw, from the load generator's records (tools/loadgen).

Pure functions over the records, so the definitions are tested without a live run:

- a signed-in request **succeeds** only with the app's own 200 (loadgen records 299 for any other
  200); every other status, and every request without a response (timeout, refused, reset), fails;
- **longest outage**: the longest stretch from the start of a failed request to the start of the
  next request that succeeded (requests ordered by start, all sessions together); a failure that
  is never followed by a success lasts until the last request ended;
- **sessions lost**: sessions whose cookie a response deleted (the browser dropped it), plus
  those whose original cookie no longer works when probed after the event;
- **p99 during the event**: over the requests started between the event's start and end.

Imports: the standard library only.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SENT, CLEARED, REPLACED = 1, 2, 4
"""loadgen's request flags."""
TRANSPORT = {-1: "timeout", -2: "refused", -3: "reset", -4: "error", 299: "not-the-app"}


@dataclass(frozen=True)
class Request:
    t_us: int
    """Start, microseconds since the load began."""
    lat_us: int
    status: int
    session: int
    flags: int

    @property
    def ok(self) -> bool:
        return self.status == 200


def read_requests(path: Path) -> list[Request]:
    with open(path, newline="") as f:
        return [Request(*(int(x) for x in row)) for row in csv.reader(f) if row]


def status_name(status: int) -> str:
    return TRANSPORT.get(status, str(status))


def longest_outage_s(requests: Iterable[Request]) -> float:
    ordered = sorted(requests, key=lambda r: r.t_us)
    if not ordered:
        return 0.0
    longest, fail_start = 0, None
    for r in ordered:
        if r.ok:
            if fail_start is not None:
                longest = max(longest, r.t_us - fail_start)
                fail_start = None
        elif fail_start is None:
            fail_start = r.t_us
    if fail_start is not None:
        longest = max(longest, max(r.t_us + r.lat_us for r in ordered) - fail_start)
    return longest / 1e6


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Outcome:
    """One scenario's line."""

    name: str
    requests: int = 0
    failed_by_status: dict[str, int] = field(default_factory=dict)
    longest_outage_s: float = 0.0
    sessions: int = 0
    sessions_lost: int = 0
    p99_ms: float = 0.0
    p50_ms: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)
    load: tuple[float, float] = (0.0, 0.0)
    """Load average (1 min) at the start and the end."""
    failures: list[dict[str, object]] = field(default_factory=list)
    """The first failed requests (loadgen's failure records, ``t_s`` from the event's start), for
    the run's JSON: who answered them and when."""

    @property
    def failed(self) -> int:
        return sum(self.failed_by_status.values())

    def line(self) -> str:
        """The scenario's line: what the browsing sessions saw (when there were any), then the
        scenario's own figures, then the machine's load average at its start and end."""
        by = ", ".join(f"{k}: {v}" for k, v in sorted(self.failed_by_status.items())) or "none"
        parts = []
        if self.requests:
            parts.append(f"{self.requests} requests, {self.failed} failed ({by}), longest outage "
                         f"{self.longest_outage_s:.2f} s, p99 {self.p99_ms:.0f} ms during the event")
        if self.sessions:
            parts.append(f"{self.sessions_lost} of {self.sessions} sessions lost")
        parts += [f"{k} {v}" for k, v in self.extra.items()]
        return f"{self.name}: {', '.join(parts)} (load {self.load[0]:.1f} -> {self.load[1]:.1f})"


def lost_sessions(requests: Iterable[Request], session_ids: Sequence[str],
                  probe: Mapping[str, int] | None = None) -> set[str]:
    """Sessions whose cookie a response deleted, and those whose original cookie answered anything
    but 200 when probed after the event."""
    lost = {session_ids[r.session] for r in requests if r.flags & CLEARED}
    return lost | {sid for sid, status in (probe or {}).items() if status != 200}


def outcome(name: str, requests: Sequence[Request], session_ids: Sequence[str], *,
            probe: Mapping[str, int] | None = None, event_us: tuple[int, int] | None = None) -> Outcome:
    """The scenario's numbers (``session_ids``: loadgen's session index -> id; ``probe``: id ->
    status with the original cookie after the event)."""
    failed = Counter(status_name(r.status) for r in requests if not r.ok)
    lost = len(lost_sessions(requests, session_ids, probe))
    sessions = len(session_ids)
    lo, hi = event_us or (0, max((r.t_us for r in requests), default=0))
    during = [r.lat_us / 1000 for r in requests if lo <= r.t_us <= hi]
    return Outcome(
        name=name, requests=len(requests), failed_by_status=dict(failed),
        longest_outage_s=round(longest_outage_s(requests), 3), sessions=sessions, sessions_lost=lost,
        p99_ms=round(percentile(during, 99), 1), p50_ms=round(percentile(during, 50), 1))


ENVOY_LOCAL_REPLIES = ("upstream connect error", "no healthy upstream", "upstream request timeout",
                       "RBAC: access denied", "Jwt ", "Jwks ", "upstream_reset", "local_rate_limited")
"""How the bodies of Envoy's own replies begin (routing failures, the gateway's policies)."""


def failure_cause(f: Mapping[str, object]) -> str:
    """Who answered a failed request and what, from loadgen's failure record: no response (the
    transport error); the gateway itself (Envoy's ``server: istio-envoy`` without an upstream
    service time: a check that failed or timed out has no body, a routing failure or a policy
    says why); oauth2-proxy through the check (its denial, passed on by ext_authz: the same
    server header, oauth2-proxy's body); or an upstream's own answer (the app, Keycloak)."""
    status = status_name(int(str(f.get("status", 0))))
    if f.get("error"):
        err = str(f["error"])
        return f"{status}: no response ({err.rsplit(': ', 1)[-1][:60]})"
    body = " ".join(str(f.get("body") or "").split())[:60]
    if f.get("server") == "istio-envoy" and not f.get("upstream_ms"):
        if not body:
            return f"{status}: the gateway (no body: the check failed or timed out)"
        if body.startswith(ENVOY_LOCAL_REPLIES):
            return f"{status}: the gateway ({body})"
        return f"{status}: oauth2-proxy through the check ({body})"
    return f"{status}: upstream {f.get('server') or ''} ({body or 'no body'})".replace("  ", " ")


def failure_causes(failures: Iterable[Mapping[str, object]]) -> dict[str, int]:
    """Failed requests counted by :func:`failure_cause`, most frequent first."""
    return dict(Counter(failure_cause(f) for f in failures).most_common())


def total_line(outcomes: Sequence[Outcome]) -> str:
    """The soak's last line."""
    failed = sum(o.failed for o in outcomes)
    total = sum(o.requests for o in outcomes)
    lost = sum(o.sessions_lost for o in outcomes)
    longest = max((o.longest_outage_s for o in outcomes), default=0.0)
    return (f"soak: {len(outcomes)} scenarios, {failed} failed requests of {total}, "
            f"{lost} sessions lost, longest outage {longest:.2f} s")
