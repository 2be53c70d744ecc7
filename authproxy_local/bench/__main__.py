"""``python -m authproxy_local.bench`` (`make bench`): see :mod:`authproxy_local.bench`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from authproxy_local.core.paths import REPO as ROOT

from .model import DEFAULT_CONNECTIONS, EXTRA_TUNINGS, TUNINGS, BenchError
from .report import draw_plot, labels_for, replace_section, report_markdown, samples_from_results
from .runner import Bench
from .stats import plot_data, summarize, whole_path_line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m authproxy_local.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round, 2 s per run, writes only build/bench/quick")
    ap.add_argument("--stack", default="dev")
    ap.add_argument("--mode", choices=("extension-provider", "envoy-filter"), default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--duration", type=float, default=None, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, nargs="+", default=list(DEFAULT_CONNECTIONS))
    ap.add_argument("--no-tunings", action="store_true")
    ap.add_argument("--extra", nargs="+", default=[], choices=sorted(EXTRA_TUNINGS),
                    help="also measure these configuration candidates")
    ap.add_argument("--no-docs", action="store_true", help="do not write docs/ (always so with --quick)")
    ap.add_argument("--from-results", type=Path, default=None, metavar="RESULTS_JSON",
                    help="measure nothing: rebuild the report (and, unless --no-docs, the docs section) from a "
                         "results.json of an earlier run, keeping that run's oauth2-proxy profile")
    ap.add_argument("--profile-proxy", type=float, default=None, metavar="SECONDS",
                    help="after the runs, CPU-profile oauth2-proxy (perf) on the signed-in path at 16 "
                         "connections for this long; the profile goes into the report (default: 10 s, "
                         "0 with --quick; skipped with a note when perf is not installed)")
    a = ap.parse_args(argv)
    if a.from_results:
        return rebuild(a.from_results, write_docs=not a.no_docs)
    rounds = a.rounds or (1 if a.quick else 3)
    duration = a.duration or (2.0 if a.quick else 5.0)
    tunings = (() if a.no_tunings else TUNINGS) + tuple(EXTRA_TUNINGS[n] for n in a.extra)
    out_dir = ROOT / "build" / "bench" / ("quick" if a.quick else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"[bench] load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
          + (" (busy machine: numbers will be noisy)" if load[0] > 0.5 * (os.cpu_count() or 1) else ""), flush=True)
    b = Bench(stack=a.stack, mode=a.mode, connections=a.connections, rounds=rounds, duration=duration,
              warmup=1.0 if a.quick else 2.0, tunings=tunings, log=lambda m: print(m, flush=True))
    prof_md = ""
    if a.profile_proxy is None:
        a.profile_proxy = 0.0 if a.quick else 10.0
    if a.profile_proxy and shutil.which("perf") is None:
        print("[bench] perf is not installed: no oauth2-proxy profile (Debian: apt-get install linux-perf)")
        a.profile_proxy = 0.0
    try:
        b.start()
        b.run()
        # What was measured is saved before anything else can fail.
        (out_dir / "samples.json").write_text(json.dumps(
            [{**asdict(s), "sut_share": s.sut_share} for s in b.samples], default=str))
        if a.profile_proxy:
            from . import proxy_profile

            b.duration = a.profile_proxy
            try:
                prof, us = b.profile_proxy(a.profile_proxy, out_dir / "oauth2-proxy.perf.data")
            except (OSError, subprocess.SubprocessError, BenchError) as e:
                print(f"[bench] no oauth2-proxy profile: {e}", flush=True)
            else:
                prof_md = ("Where oauth2-proxy's time goes per check (`--profile-proxy`: Linux `perf` on the "
                           f"rendered oauth2-proxy, signed-in path at 16 connections, {a.profile_proxy:g} s; "
                           f"oauth2-proxy CPU {us:.0f} µs per check in that run):\n\n"
                           + proxy_profile.markdown(prof, us) + "\n")
                print(prof_md, flush=True)
    finally:
        b.stop()
    names = [v.name for v in b.variants]
    facts = {**b.facts, "sizes": b.sizes, "rounds": rounds, "duration": duration,
             "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
             "command": "make bench" if not a.quick and argv is None and len(sys.argv) == 1
             else "python -m authproxy_local.bench " + " ".join(argv if argv is not None else sys.argv[1:])}
    (out_dir / "results.json").write_text(json.dumps(
        {"facts": facts, "variants": names, "connections": a.connections, "tunings": [t.name for t in tunings],
         "profile_markdown": prof_md,
         "samples": [{**asdict(s), "sut_share": s.sut_share} for s in b.samples]},
        indent=1, default=str))
    summary = summarize(b.samples)
    labels = labels_for(tunings)
    image_name = "bench.png"
    section = report_markdown(facts, b.samples, names, a.connections, tunings, f"images/{image_name}")
    if prof_md:
        section += "\n" + prof_md
    (out_dir / "report.md").write_text(section)
    title = (f"authproxy request path, {facts.get('nproc')} x {facts.get('cpu_model')}: wrk on one core, "
             f"Envoy + oauth2-proxy + Redis on the other (median of {rounds} rounds)")
    draw_plot(plot_data(summary, names, a.connections), a.connections, labels, out_dir / image_name, title)
    print(section)
    last = whole_path_line(summary, a.connections)
    if not (a.quick or a.no_docs):
        doc = ROOT / "docs" / "benchmarks.md"
        doc.write_text(replace_section(doc.read_text(), section))
        (ROOT / "docs" / "images").mkdir(parents=True, exist_ok=True)
        (ROOT / "docs" / "images" / image_name).write_bytes((out_dir / image_name).read_bytes())
        print(f"[bench] wrote {doc.relative_to(ROOT)} and docs/images/{image_name}")
    print(f"[bench] raw results: {(out_dir / 'results.json').relative_to(ROOT)}, plot and report.md beside it")
    print(last, flush=True)
    return 0


def rebuild(results: Path, write_docs: bool = True) -> int:
    """The report of an earlier run, from its ``results.json``: same tables, same last line."""
    doc = json.loads(results.read_text())
    samples = samples_from_results(doc)
    every = {t.name: t for t in (*TUNINGS, *EXTRA_TUNINGS.values())}
    names = doc["variants"]
    tunings = tuple(every[n] for n in doc.get("tunings", [n for n in names if n in every]))
    section = report_markdown(doc["facts"], samples, names, doc["connections"], tunings, "images/bench.png")
    prof = doc.get("profile_markdown") or ""
    report = results.parent / "report.md"
    if not prof and report.exists() and "Where oauth2-proxy's time goes" in report.read_text():
        prof = "Where oauth2-proxy's time goes" + report.read_text().split("Where oauth2-proxy's time goes", 1)[1]
    data = results.parent / "oauth2-proxy.perf.data"
    if prof and data.exists():
        # the run's own recording, named again (e.g. by a newer proxy_profile)
        from authproxy_local import install

        from . import proxy_profile

        head, _, _ = prof.partition("\n\n")
        m = re.search(r"oauth2-proxy CPU (\d+) µs per check", head)
        again = proxy_profile.profile(Path(str(install.ensure("oauth2-proxy"))), data)
        prof = head + "\n\n" + proxy_profile.markdown(again, float(m.group(1)) if m else None) + "\n"
    if prof:
        section += "\n" + prof.rstrip() + "\n"
    print(section)
    if write_docs:
        path = ROOT / "docs" / "benchmarks.md"
        path.write_text(replace_section(path.read_text(), section))
        print(f"[bench] wrote {path.relative_to(ROOT)} from {results}")
    print(whole_path_line(summarize(samples), doc["connections"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

