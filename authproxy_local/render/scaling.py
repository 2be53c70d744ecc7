"""How the Pulumi program scales with the number of protected apps (issue: program scaling).

Runs the real program (``__main__.py``) under Pulumi's mock runtime with N generated apps, each in
a fresh child process so that wall time and peak memory (ru_maxrss) belong to that run alone.

    python -m authproxy_local.render.scaling --apps 1 10 100 500 [--repeat 3] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from authproxy_local.core.paths import REPO

ROOT = REPO


def generated_config(n: int) -> dict:
    """The dev stack's settings with n apps (every third restricted to a group, every fifth an
    API app with a public path), so each code path scales with n."""
    apps = []
    for i in range(n):
        app: dict = {
            "name": f"app{i}",
            "host": f"app{i}.authproxy.test",
            "service": {"name": f"app{i}", "namespace": f"ns{i % 7}", "port": 8080},
            "workloadLabels": {"app.kubernetes.io/name": f"app{i}"},
        }
        if i % 3 == 0:
            app["groups"] = [f"team{i % 11}"]
        if i % 5 == 0:
            app["apiClients"] = True
            app["publicPaths"] = ["/healthz", "/static/*"]
            app["apiPaths"] = ["^/api/"]
        apps.append(app)
    return {
        "domain": "authproxy.test",
        "apps": apps,
        "keycloak": {"url": "https://keycloak.authproxy.test", "realm": "authproxy"},
        # the apps' sidecars admit tokens only from the gateway's identity: name it
        "istio": {"gateway": {"serviceAccount": "istio-ingressgateway"}},
    }


def _child(n: int) -> None:
    """Run the program once with n apps and print the measurements as JSON."""
    sys.path.insert(0, str(ROOT))
    from authproxy_local.render.mockrun import run_program

    start, cpu_start = time.perf_counter(), time.process_time()
    run = run_program(config=generated_config(n))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # cpu_seconds: CPU time of this process (all threads). Unlike wall time it does not grow when
    # other processes share the cores, so the regression test compares it (wall time is what the
    # benchmark table reports).
    print(json.dumps({"apps": n, "seconds": elapsed, "cpu_seconds": cpu,
                      "peak_mib": peak_kib / 1024, "resources": len(run.resources)}))


def measure(n: int) -> dict:
    """One measurement of n apps in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-m", "authproxy_local.render.scaling", "--child", str(n)],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"program run with {n} apps failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_median(n: int, repeat: int) -> dict:
    runs = [measure(n) for _ in range(repeat)]
    return {
        "apps": n,
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_mib": statistics.median(r["peak_mib"] for r in runs),
        "resources": runs[0]["resources"],
        "repeat": repeat,
    }


def markdown(rows: list[dict]) -> str:
    base = rows[0]
    lines = [
        "| apps | resources | wall time (s, median) | s per app | peak memory (MiB) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['apps']} | {r['resources']} | {r['seconds']:.2f} | "
            f"{r['seconds'] / r['apps']:.3f} | {r['peak_mib']:.0f} |"
        )
    del base
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--apps", type=int, nargs="+", default=[1, 10, 100, 500])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child is not None:
        _child(a.child)
        return 0
    rows = [measure_median(n, a.repeat) for n in a.apps]
    print(markdown(rows) if a.markdown else json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
