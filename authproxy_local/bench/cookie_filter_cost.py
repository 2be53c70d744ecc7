"""What the gateway's session-cookie filter costs per request, in isolation.

    python -m authproxy_local.bench.cookie_filter_cost [--rounds 3] [--seconds 5]

The full benchmark (``make bench``, variant ``cookies-kept``) measures the signed-in path with and
without the filter, but its run-to-run spread (10-30 %) is larger than the filter's share. This
measures the filter alone: one Envoy (``--concurrency 1``, pinned to the second CPU) with three
listeners that differ only in their HTTP filters (none / an empty Lua filter / the generated
cookie filter, components/cookies.py) in front of a ``direct_response``, driven alternately by
``wrk`` (pinned to the first CPU) with a signed-in browser's Cookie header. It reports requests/s
and Envoy CPU µs per request (from ``/proc``) per listener, medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from authproxy_local import install
from authproxy_local.core.processes import Process, free_port, tcp_open, wait_for
from authproxy_local.mesh.envoy_config import HCM, HCM_TYPE, ROUTER, ROUTER_TYPE
from components.cookies import LUA_TYPE, SessionCookies, lua_filter

from .system import proc_cpu_seconds
from .wrk import parse_wrk, wrk_script

COOKIE = ("theme=dark; _authproxy=" + "A" * 150 + "|1764500000|" + "B" * 43 + "; lang=en")
"""A signed-in browser's Cookie header: the app's own cookies around a Redis-ticket session cookie
of the size the e2e run measures (179 bytes)."""


def filters(variant: str) -> list[dict[str, Any]]:
    router = {"name": ROUTER, "typed_config": {"@type": ROUTER_TYPE}}
    if variant == "no filter":
        return [router]
    if variant == "empty Lua filter":
        return [{"name": "empty", "typed_config": {
            "@type": LUA_TYPE, "default_source_code": {"inline_string": "function envoy_on_request(h) end"}}},
            router]
    return [lua_filter(SessionCookies("_authproxy")), router]


VARIANTS = ("no filter", "empty Lua filter", "cookie filter")


def bootstrap(ports: dict[str, int], admin: int) -> dict[str, Any]:
    def listener(variant: str) -> dict[str, Any]:
        return {
            "name": variant.replace(" ", "_"),
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports[variant]}},
            "filter_chains": [{"filters": [{"name": HCM,
                                            "typed_config": {
                "@type": HCM_TYPE, "stat_prefix": variant.replace(" ", "_"),
                "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [{
                    "match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
                "http_filters": filters(variant)}}]}],
        }
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {"listeners": [listener(v) for v in VARIANTS]}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m authproxy_local.bench.cookie_filter_cost", description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    a = ap.parse_args(argv)
    envoy, wrk = install.ensure("envoy"), install.ensure("wrk")
    ports = {v: free_port() for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "envoy.json"
        cfg.write_text(json.dumps(bootstrap(ports, free_port())))
        script = Path(tmp) / "cookie.lua"
        script.write_text(wrk_script({"Cookie": COOKIE}))
        proc = Process("envoy", ["taskset", "-c", "1", str(envoy), "-c", str(cfg), "--concurrency", "1",
                                 "--disable-hot-restart", "-l", "error"],
                       {"PATH": "/usr/bin:/bin"}, Path(tmp) / "envoy.log").start()
        try:
            wait_for("envoy", lambda: all(tcp_open(("127.0.0.1", p)) for p in ports.values()), 30, proc)
            results: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
            for r in range(a.rounds):
                for v in VARIANTS[r % 3:] + VARIANTS[:r % 3]:
                    assert proc.pid is not None
                    before = proc_cpu_seconds(proc.pid)
                    out = subprocess.run(["taskset", "-c", "0", str(wrk), "-t1", f"-c{a.connections}",
                                          f"-d{a.seconds}s", "--latency", "-s", str(script),
                                          f"http://127.0.0.1:{ports[v]}/"],
                                         capture_output=True, text=True, check=True).stdout
                    w = parse_wrk(out)
                    results[v].append((w.rps, (proc_cpu_seconds(proc.pid) - before) / w.requests * 1e6))
        finally:
            proc.stop()
    print("| listener | requests/s | Envoy CPU µs per request |")
    print("| --- | ---: | ---: |")
    for v in VARIANTS:
        rps = statistics.median(x for x, _ in results[v])
        us = statistics.median(y for _, y in results[v])
        print(f"| {v} | {rps:,.0f} | {us:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
