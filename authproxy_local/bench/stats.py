"""The schedule of runs and their statistics: medians over rounds, ratios to a baseline, tables.

Imports: the standard library, :mod:`.wrk`, :mod:`.model`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .wrk import WrkResult


def schedule(variants: Sequence[str], connections: Sequence[int], rounds: int) -> list[tuple[int, int, str]]:
    """(round, connections, variant) in run order: every round measures every variant at every
    connection count; the variants alternate within a connection count and the order rotates
    from one round (and connection count) to the next, so drift in the machine's load spreads
    over all variants instead of biasing one."""
    out = []
    n = len(variants)
    for r in range(rounds):
        for i, c in enumerate(connections):
            shift = (r + i) % n if n else 0
            out += [(r, c, v) for v in [*variants[shift:], *variants[:shift]]]
    return out


@dataclass
class Sample:
    """One wrk run and what was measured around it."""

    variant: str
    connections: int
    round: int
    wrk: WrkResult
    verified: int
    """Requests the upstream (and the variant's auth filter) counted during the run."""
    cpu_ms: dict[str, float]
    """CPU milliseconds per request of each process (bench envoy, oauth2-proxy, redis, wrk)."""
    sut_core_busy: float
    """Busy fraction of the system-under-test core during the run."""
    load_core_busy: float
    loadavg: float
    redis_calls: dict[str, float] = field(default_factory=dict)
    """Redis commands per request (INFO commandstats delta / requests)."""
    new_connections: dict[str, int] = field(default_factory=dict)
    """Connections opened during the run: Envoy -> oauth2-proxy (ext_authz), oauth2-proxy -> Redis."""

    @property
    def sut_share(self) -> float:
        """Fraction of the system-under-test core our processes used (the rest: other load)."""
        per_req = sum(v for k, v in self.cpu_ms.items() if k != "wrk")
        return per_req * self.wrk.rps / 1000


@dataclass(frozen=True)
class Stat:
    rps: float
    p50_ms: float
    p99_ms: float
    n: int
    rps_min: float
    rps_max: float


def summarize(samples: Iterable[Sample]) -> dict[tuple[str, int], Stat]:
    """Medians over rounds per (variant, connections)."""
    groups: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.variant, s.connections), []).append(s)
    out = {}
    for key, ss in groups.items():
        rps = [s.wrk.rps for s in ss]
        out[key] = Stat(
            rps=statistics.median(rps),
            p50_ms=statistics.median(s.wrk.p50_ms for s in ss),
            p99_ms=statistics.median(s.wrk.p99_ms for s in ss),
            n=len(ss), rps_min=min(rps), rps_max=max(rps),
        )
    return out


def median_breakdown(samples: Iterable[Sample], attr: str) -> dict[tuple[str, int], dict[str, float]]:
    """Per (variant, connections): the median of each key of ``cpu_ms`` / ``redis_calls``."""
    groups: dict[tuple[str, int], dict[str, list[float]]] = {}
    for s in samples:
        for k, v in getattr(s, attr).items():
            groups.setdefault((s.variant, s.connections), {}).setdefault(k, []).append(v)
    return {key: {k: statistics.median(v) for k, v in d.items()} for key, d in groups.items()}


@dataclass(frozen=True)
class Row:
    variant: str
    connections: int
    rps: float
    rps_ratio: float
    p50_ms: float
    p50_ratio: float
    p99_ms: float
    p99_ratio: float
    spread: float
    """(max - min) / median of the rounds' requests/s: the run-to-run noise."""
    n: int


def ratio_rows(summary: Mapping[tuple[str, int], Stat], variants: Sequence[str],
               connections: Sequence[int], baseline: str = "baseline") -> list[Row]:
    """Table rows, absolute and as ratios to ``baseline`` at the same connection count
    (requests/s: variant / baseline, below 1 is slower; latency: variant / baseline, above 1 is
    slower). Missing cells are skipped."""
    rows = []
    for c in connections:
        base = summary.get((baseline, c))
        for v in variants:
            s = summary.get((v, c))
            if s is None:
                continue
            def ratio(a: float, b: float | None) -> float:
                return a / b if b else float("nan")
            rows.append(Row(
                variant=v, connections=c, rps=s.rps,
                rps_ratio=ratio(s.rps, base.rps if base else None),
                p50_ms=s.p50_ms, p50_ratio=ratio(s.p50_ms, base.p50_ms if base else None),
                p99_ms=s.p99_ms, p99_ratio=ratio(s.p99_ms, base.p99_ms if base else None),
                spread=(s.rps_max - s.rps_min) / s.rps if s.rps else float("nan"), n=s.n,
            ))
    return rows


def _fmt_ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def markdown_table(rows: Sequence[Row], labels: Mapping[str, str] | None = None) -> str:
    labels = labels or {}
    out = [
        "| connections | variant | requests/s | x baseline | p50 ms | x baseline | p99 ms | x baseline | spread |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        out.append(
            f"| {r.connections} | {labels.get(r.variant, r.variant)} | {r.rps:,.0f} | {r.rps_ratio:.2f} | "
            f"{_fmt_ms(r.p50_ms)} | {r.p50_ratio:.2f} | {_fmt_ms(r.p99_ms)} | {r.p99_ratio:.2f} | "
            f"{r.spread * 100:.0f}% |"
        )
    return "\n".join(out)


def anchor_ratios(summary: Mapping[tuple[str, int], Stat], connections: Sequence[int],
                  path: str = "session-redis", jwt: str = "jwt", baseline: str = "baseline",
                  ) -> dict[int, dict[str, float]]:
    """Throughput of ``path`` as a fraction of the JWT-only anchor and of the baseline, and its
    p99 as a multiple of the JWT-only p99."""
    out = {}
    nan = float("nan")
    for c in connections:
        p, j, b = summary.get((path, c)), summary.get((jwt, c)), summary.get((baseline, c))
        if p is None:
            continue
        out[c] = {"vs_jwt": p.rps / j.rps if j else nan,
                  "vs_baseline": p.rps / b.rps if b else nan,
                  "p99_vs_jwt": p.p99_ms / j.p99_ms if j and j.p99_ms else nan}
    return out


def whole_path_line(summary: Mapping[tuple[str, int], Stat], connections: Sequence[int],
                    path: str = "wp-session", jwt: str = "wp-jwt") -> str:
    """The bench's last line: the signed-in path against JWT-only on the whole path (throughput
    at 16 and 64 connections, or whichever were measured; p99 at the lowest saturated count)."""
    ar = anchor_ratios(summary, connections, path=path, jwt=jwt, baseline="wp-baseline")
    if not ar:
        return "bench: whole path not measured"
    wanted: list[int] = [c for c in (16, 64) if c in ar] or sorted(ar)
    rps = ", ".join(f"{ar[c]['vs_jwt']:.2f}x @{c}" for c in wanted)
    p99 = ", ".join(f"{ar[c]['p99_vs_jwt']:.1f}x @{c}" for c in wanted[:1])
    return f"bench: whole path signed-in/JWT {rps}; p99 {p99}"


def plot_data(summary: Mapping[tuple[str, int], Stat], variants: Sequence[str],
              connections: Sequence[int]) -> dict[str, dict[str, list[float]]]:
    """Per variant: requests/s, p50 and p99 over the connection counts (NaN where missing)."""
    nan = float("nan")
    return {
        v: {
            "rps": [summary[(v, c)].rps if (v, c) in summary else nan for c in connections],
            "p50": [summary[(v, c)].p50_ms if (v, c) in summary else nan for c in connections],
            "p99": [summary[(v, c)].p99_ms if (v, c) in summary else nan for c in connections],
        }
        for v in variants
    }


