"""The report: the generated section of docs/benchmarks.md, its tables and the plot.

Imports: the standard library, matplotlib, :mod:`.stats`, :mod:`.model`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .model import BASE_VARIANTS, LABELS, MARK_BEGIN, MARK_END, WHOLE_PATH_VARIANTS, Tuning
from .stats import (
    Row,
    Sample,
    anchor_ratios,
    markdown_table,
    median_breakdown,
    ratio_rows,
    summarize,
)
from .wrk import WrkResult


def draw_plot(data: Mapping[str, Mapping[str, list[float]]], connections: Sequence[int],
              labels: Mapping[str, str], path: Path, title: str) -> None:
    """Requests/s (grouped bars) and p50/p99 latency (log scale) per connection count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(data)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=100)
    width = 0.8 / max(1, len(variants))
    xs = list(range(len(connections)))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, v in enumerate(variants):
        col = colors[i % len(colors)]
        pos = [x - 0.4 + width * (i + 0.5) for x in xs]
        bars = ax1.bar(pos, data[v]["rps"], width, label=labels.get(v, v), color=col)
        ax1.bar_label(bars, fmt="%.0f", fontsize=6, rotation=90, padding=2)
        ax2.plot(pos, data[v]["p50"], "o", color=col)
        ax2.plot(pos, data[v]["p99"], "^", color=col, fillstyle="none")
        for x, lo, hi in zip(pos, data[v]["p50"], data[v]["p99"], strict=True):
            ax2.plot([x, x], [lo, hi], "-", color=col, linewidth=1)
    for ax in (ax1, ax2):
        ax.set_xticks(xs, [f"{c} conn" for c in connections])
        ax.grid(axis="y", alpha=0.3)
    ax1.set_ylabel("requests/s (median of rounds)")
    ax1.set_title("throughput")
    ax1.margins(y=0.15)
    ax2.set_yscale("log")
    ax2.set_ylabel("latency ms (● p50, △ p99; log scale)")
    ax2.set_title("latency")
    handles, names = ax1.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(3, len(variants)), fontsize=8,
               frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1 + 0.04 * ((len(variants) - 1) // 3), 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)




def labels_for(tunings: Iterable[Tuning]) -> dict[str, str]:
    return {**LABELS, **{t.name: t.label for t in tunings}}


def breakdown_table(samples: Sequence[Sample], variants: Sequence[str], conns: int,
                    labels: Mapping[str, str]) -> str:
    """CPU µs per request by process, Redis commands and new connections per request, at one
    connection count (medians over rounds)."""
    cpu = median_breakdown([s for s in samples if s.connections == conns], "cpu_ms")
    calls = median_breakdown([s for s in samples if s.connections == conns], "redis_calls")
    conn = median_breakdown([s for s in samples if s.connections == conns], "new_connections")
    out = [
        "| variant | gateway Envoy µs | sidecar Envoy µs | oauth2-proxy µs | Redis µs | system under test µs | "
        "wrk µs | Redis commands | new ext_authz / Redis connections per 1000 requests |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for v in variants:
        c = cpu.get((v, conns))
        if c is None:
            continue
        proxy = sum(x for k, x in c.items() if k.startswith("oauth2-proxy"))
        sut = c.get("envoy", 0) + c.get("sidecar", 0) + proxy + c.get("redis", 0)
        rc = calls.get((v, conns), {})
        cmds = ", ".join(f"{k.upper()} {x:.2f}" for k, x in sorted(rc.items()) if x >= 0.01) or "none"
        nc = conn.get((v, conns), {})
        n = statistics.median([s.wrk.requests for s in samples if s.variant == v and s.connections == conns])
        per_k = f"{nc.get('ext_authz', 0) * 1000 / n:.2f} / {max(0, nc.get('redis', 0)) * 1000 / n:.2f}"
        out.append(f"| {labels.get(v, v)} | {c.get('envoy', 0) * 1000:.0f} | {c.get('sidecar', 0) * 1000:.0f} | "
                   f"{proxy * 1000:.0f} | "
                   f"{c.get('redis', 0) * 1000:.0f} | {sut * 1000:.0f} | {c.get('wrk', 0) * 1000:.0f} | "
                   f"{cmds} | {per_k} |")
    return "\n".join(out)


def cpu_cost_ratios(samples: Sequence[Sample], connections: Sequence[int], path: str = "wp-session",
                    jwt: str = "wp-jwt") -> dict[int, tuple[float, float]]:
    """Per connection count: (JWT-only, ``path``) CPU µs per request of the system under test
    (every process but wrk), medians over the rounds."""
    out = {}
    for c in connections:
        def med(v: str, conns: int = c) -> float | None:
            xs = [sum(x for k, x in s.cpu_ms.items() if k != "wrk") * 1000 for s in samples
                  if s.variant == v and s.connections == conns]
            return statistics.median(xs) if xs else None
        j, p = med(jwt), med(path)
        if j and p:
            out[c] = (j, p)
    return out


def samples_from_results(doc: Mapping[str, Any]) -> list[Sample]:
    """The samples of a ``results.json`` (to rebuild a report without measuring again)."""
    out = []
    for d in doc["samples"]:
        d = {k: v for k, v in d.items() if k != "sut_share"}
        d["wrk"] = WrkResult(**d["wrk"])
        out.append(Sample(**d))
    return out


def report_markdown(facts: Mapping[str, Any], samples: Sequence[Sample], variants: Sequence[str],
                    connections: Sequence[int], tunings: Sequence[Tuning], image: str) -> str:
    """The generated section of docs/benchmarks.md."""
    labels = labels_for(tunings)
    summary = summarize(samples)
    base = [v for v in BASE_VARIANTS if v in variants]
    tuned = [t.name for t in tunings if t.name in variants]
    top = max(connections)
    v = facts.get("versions", {})
    la = facts.get("load_at_measure_start", [0, 0, 0])
    le = facts.get("load_at_measure_end", [0, 0, 0])
    shares = [s.sut_share for s in samples if s.connections == top]
    sizes = facts.get("sizes", {})
    lines = [
        f"Run of {facts.get('date', '?')}: `{facts.get('command', '')}`, {facts.get('rounds')} rounds x "
        f"{len(variants)} variants x {len(connections)} connection counts, {facts.get('duration')} s per wrk run, "
        f"ext_authz mode `{facts.get('mode')}` (the dev stack's), measured in {facts.get('measure_seconds')} s.",
        "",
        f"- Machine: {facts.get('nproc')} x {facts.get('cpu_model')}, {facts.get('memory')}, Linux "
        f"{facts.get('kernel')}. Load average {la[0]:.2f} at the start of the measurement, {le[0]:.2f} at the end; "
        f"at {top} connections our processes used a median {statistics.median(shares) * 100 if shares else 0:.0f}% "
        f"(min {min(shares) * 100 if shares else 0:.0f}%) of the system-under-test core (the rest: other load on "
        f"the machine; {facts.get('noisy_reruns', 0)} runs measured again because of it).",
        f"- Versions: Envoy {v.get('envoy')}, oauth2-proxy {v.get('oauth2-proxy')} "
        f"({v.get('go (oauth2-proxy build)')}), "
        f"Redis {v.get('redis')}, Keycloak {v.get('keycloak')}, {v.get('wrk')}.",
        f"- CPU: CPU {facts.get('cpu_layout', {}).get('load_generator_cpu')} runs `wrk -t1` (plus the idle Keycloak "
        f"and harness gateway); CPU {facts.get('cpu_layout', {}).get('system_under_test_cpu')} runs the system under "
        "test: the bench gateway and the bench sidecar (Envoy, each `--concurrency 1`), every oauth2-proxy "
        f"(`GOMAXPROCS={facts.get('proxy_env_gomaxprocs')}`, "
        "from the rendered CPU limit) and Redis (`taskset`).",
        f"- Credentials: Redis-store session cookie {sizes.get('redis_cookie_header')} bytes; cookie-store session "
        f"cookie {sizes.get('cookie_store_cookie_header')} bytes in {sizes.get('cookie_store_cookies')} cookie(s); "
        f"the JWT-only variant's bearer token is the session's Keycloak {facts.get('token_kind', 'access token')} "
        f"({sizes.get('access_token')} bytes, audience {facts.get('token_audience')}).",
        "",
        "Requests/s and latency (median of the rounds; x baseline at the same connection count; spread = "
        "(max - min) / median requests/s over the rounds):",
        "",
        markdown_table(ratio_rows(summary, base, connections), labels),
        "",
    ]
    ar = anchor_ratios(summary, connections)
    if ar:
        lines += [
            "Gateway only, the authenticated path's throughput: " + "; ".join(
                f"{c} connections: {r['vs_jwt']:.2f} x JWT-only, {r['vs_baseline']:.2f} x baseline"
                for c, r in sorted(ar.items())) + ".",
            "",
        ]
    whole = [v for v in WHOLE_PATH_VARIANTS if v in variants]
    if whole:
        lines += [
            "**Whole path** (gateway + the app's sidecar running istiod's inbound config for the app, both "
            "on the system-under-test core, then the fast upstream; x the whole-path baseline):",
            "",
            markdown_table(ratio_rows(summary, whole, connections, baseline="wp-baseline"), labels),
            "",
        ]
        war = anchor_ratios(summary, connections, path="wp-session", jwt="wp-jwt", baseline="wp-baseline")
        if war:
            lines += [
                "Whole path, the signed-in path against JWT-only: " + "; ".join(
                    f"{c} connections: {r['vs_jwt']:.2f}x the throughput, p99 {r['p99_vs_jwt']:.2f}x"
                    for c, r in sorted(war.items())) + " (goal: >= 0.7x, p99 <= 2x).",
                "",
            ]
        cost = cpu_cost_ratios(samples, connections)
        if cost:
            lines += [
                "The same from CPU cost per request, which other load on the machine moves much less than "
                "requests/s (system-under-test µs per request, medians; JWT-only µs / signed-in µs is the "
                "throughput ratio on a core of their own): " + "; ".join(
                    f"{c} connections: JWT {j:.0f} µs, signed-in {p:.0f} µs, {j / p:.2f}x"
                    for c, (j, p) in sorted(cost.items())) + ".",
                "",
            ]
    lines += [
        f"Where the time goes at {top} connections: CPU per request (µs) of each process, Redis commands "
        "and new connections per request (medians):",
        "",
        breakdown_table(samples, [*base, *whole, *tuned], top, labels),
        "",
    ]
    if tuned:
        by_ref: dict[str, list[str]] = {}
        for t in tunings:
            if t.name in variants:
                by_ref.setdefault(t.reference, []).append(t.name)
        lines += [
            "Before/after: levers, each one change against its reference path, measured in the same "
            "alternating run (x the reference, the first row of each group):",
            "",
        ]
        rows: list[Row] = []
        for ref, names in by_ref.items():
            rows += ratio_rows(summary, [ref, *names], connections, baseline=ref)
        rows.sort(key=lambda r: r.connections)
        lines += [
            markdown_table(rows, labels).replace("x baseline", "x reference"),
            "",
            "| variant | change |",
            "| --- | --- |",
            *(f"| {t.label} | {t.stack_key} |" for t in tunings if t.name in variants),
            "",
        ]
    lines += [f"![requests/s and latency per variant]({image})", ""]
    return "\n".join(lines)


def replace_section(doc: str, section: str) -> str:
    """``doc`` with the text between the bench markers replaced by ``section``."""
    if MARK_BEGIN not in doc or MARK_END not in doc:
        raise ValueError("docs/benchmarks.md has no bench markers")
    head, rest = doc.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    return f"{head}{MARK_BEGIN}\n{section.rstrip()}\n{MARK_END}{tail}"


