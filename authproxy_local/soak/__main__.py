"""`make soak` (``python -m authproxy_local.soak``): the prod stack on the live harness, hundreds of
signed-in browsers, the scenarios of :mod:`.scenarios` one after the other, one line each and the
summary line; the results also go to ``<cache>/soak/<run id>.json``.

    python -m authproxy_local.soak                     # every scenario, 200 sessions, 10k + 100k sessions stored
    python -m authproxy_local.soak --scale 10000       # the session-store scenario up to 10k only
    python -m authproxy_local.soak --quick             # a few minutes: 50 sessions, 2k stored
    python -m authproxy_local.soak --only rolling-restart,redis-failover
    python -m authproxy_local.soak --quick --only keycloak-restart --set istio.extAuthzTimeout=4s
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from authproxy_local.core.cache import cache_dir
from authproxy_local.harness import DemoUser, Harness

from .load import LoadGen, create_users
from .measure import Outcome, total_line
from .scenarios import (
    keycloak_restart,
    redis_failover,
    rolling_restart,
    session_store,
    signin_storm,
)

SCENARIOS = ("redis-failover", "rolling-restart", "keycloak-restart", "signin-storm", "session-store")


def signin_spread(lg: LoadGen, browsers: Sequence[DemoUser], url: str, spread: float,
                  batches: int = 8) -> list[dict[str, Any]]:
    """Sign ``browsers`` in (3 attempts each), in ``batches`` started ``spread / batches`` s apart
    (all at once when ``spread`` is 0): sessions of different ages, as in production, so the
    first token refreshes do not all fall due in the same seconds (a burst the scenarios would
    measure instead of their event)."""
    if spread <= 0:
        return list(lg.signin(browsers, url, concurrency=8, attempts=3).sessions)
    size = -(-len(browsers) // batches)
    t0 = time.monotonic()
    sessions: list[dict[str, Any]] = []
    for i in range(0, len(browsers), size):
        time.sleep(max(0.0, t0 + (i // size) * spread / batches - time.monotonic()))
        sessions += lg.signin(browsers[i:i + size], url, concurrency=8, attempts=3).sessions
    return sessions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m authproxy_local.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small numbers, a few minutes")
    ap.add_argument("--sessions", type=int, help="signed-in sessions driving load (default 200; quick 50)")
    ap.add_argument("--rate", type=float, help="requests/s of all sessions together (default 200; quick 50)")
    ap.add_argument("--storm", type=int, help="users in the sign-in storm (default 200; quick 40)")
    ap.add_argument("--scale", default=None,
                    help="session-store counts, comma-separated (default 10000,100000; quick 2000)")
    ap.add_argument("--only", default=",".join(SCENARIOS), help=f"scenarios to run, of {', '.join(SCENARIOS)}")
    ap.add_argument("--spread", type=float, default=None, metavar="SECONDS",
                    help="sign the sessions in over this long, in 8 batches, so their token refreshes "
                    "(every session.cookieRefresh) do not all fall due at once (default: cookieRefresh; "
                    "quick: 0, every session due together: the worst case for the Keycloak restart)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the prod stack's config (dotted path, e.g. "
                    "istio.extAuthzTimeout=4s) to measure a setting; repeatable")
    ap.add_argument("--access-log", action="store_true",
                    help="every Envoy logs each request (Istio's access log: response flags and code "
                    "details) into the run's logs, to tell why requests failed")
    a = ap.parse_args(argv)
    overrides: dict[str, Any] = {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            ap.error(f"--set {item!r}: write KEY=VALUE, e.g. istio.extAuthzTimeout=4s")
        *parents, leaf = key.split(".")
        node = overrides
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    only = [s for s in a.only.split(",") if s]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    n_sessions = a.sessions or (50 if a.quick else 200)
    if a.quick and a.spread is None:
        a.spread = 0.0
    rate = a.rate or (50.0 if a.quick else 200.0)
    n_storm = a.storm or (40 if a.quick else 200)
    scale = [int(x) for x in (a.scale or ("2000" if a.quick else "10000,100000")).split(",") if x]

    h = Harness("prod", overrides=overrides, log=lambda line: print(line, file=sys.stderr, flush=True))
    h.keep_cluster = True  # the rotation's second `pulumi up`
    h.envoy_debug_logs = False  # Envoy's info level, as a cluster runs it
    h.access_log = a.access_log
    h.misconfigured_pods = False  # no sidecar-less pod behind grafana's Service: the preflight refuses one
    outcomes: list[Outcome] = []
    t_all = time.monotonic()
    with h:
        lg = LoadGen(h)
        try:
            app = next(x for x in h.config.apps if x.groups)
            url = h.app_url(app.name, "/soak")
            group = app.groups[0]
            print(f"soak: prod stack, {len(h.endpoints.proxy_pods)} oauth2-proxy replicas, "
                  f"{1 + len(h.redis_replicas)} Redis servers, load average {os.getloadavg()[0]:.1f}", flush=True)
            browsers = create_users(h, n_sessions, 0, group)
            spread = float(h.config.session.cookie_refresh) if a.spread is None else a.spread
            signed_at = time.monotonic()  # the first sessions signed in about then
            sessions = signin_spread(lg, browsers, url, spread)
            print(f"soak: {len(sessions)} of {n_sessions} users signed in through the login form over "
                  f"{time.monotonic() - signed_at:.0f} s (spread over {spread:.0f} s)", flush=True)
            if "redis-failover" in only:
                writers = create_users(h, 20, 100_000, group)
                outcomes.append(redis_failover(h, lg, sessions, rate, writers, url))
                print(outcomes[-1].line(), flush=True)
            if "rolling-restart" in only:
                outcomes.append(rolling_restart(h, lg, sessions, rate))
                print(outcomes[-1].line(), flush=True)
            if "keycloak-restart" in only:
                newcomers = create_users(h, 20, 200_000, group)
                outcomes.append(keycloak_restart(h, lg, sessions, rate, newcomers, url, signed_at))
                print(outcomes[-1].line(), flush=True)
            if "signin-storm" in only:
                storm_users = create_users(h, n_storm, 300_000, group)
                rollout_users = create_users(h, 10, 400_000, group)
                outcomes.append(signin_storm(h, lg, storm_users, url, rollout_users))
                print(outcomes[-1].line(), flush=True)
            if "session-store" in only:
                outcomes.append(session_store(h, lg, scale, url, group))
                print(outcomes[-1].line(), flush=True)
        finally:
            lg.close()
        summary = total_line(outcomes)
        print(summary, flush=True)
        out = cache_dir() / "soak" / f"{h.run_id}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"run": h.run_id, "seconds": round(time.monotonic() - t_all),
                                   "outcomes": [asdict(o) for o in outcomes], "summary": summary},
                                  indent=1, default=str))
        print(f"soak: results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
