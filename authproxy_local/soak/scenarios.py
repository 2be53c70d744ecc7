"""The soak's scenarios, each under signed-in load and each returning one :class:`.measure.Outcome`
(docs/reliability.md says what each one shows):

- :func:`redis_failover`: the Redis master and its sentinel killed; the sentinels promote a
  replica, oauth2-proxy follows; users signing in right before the kill show what replication lag
  loses; the killed pod comes back as a replica;
- :func:`rolling_restart`: every oauth2-proxy pod replaced as the Deployment does it;
- :func:`signin_storm`: a cookie-secret rotation (`pulumi up` with the rotation marker bumped,
  rolled out), users signing in during the rollout, then everyone at once;
- :func:`keycloak_restart`: Keycloak stopped and started while sessions browse and users sign in
  (retrying as a person would);
- :func:`session_store`: sessions written through oauth2-proxy up to the given counts, Redis
  memory per session, TTLs and their removal.

Imports: the standard library, psutil, :mod:`authproxy_local.harness`,
:mod:`authproxy_local.mesh.envoy` (the gateway's counters), :mod:`.load`, :mod:`.measure`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from authproxy_local.harness import DemoUser, Harness
from authproxy_local.mesh import envoy

from .load import Drive, LoadGen, Signins, create_users
from .measure import Outcome, failure_causes, outcome, percentile


def _load() -> float:
    return os.getloadavg()[0]


def _gateway_counters(h: Harness) -> dict[str, int]:
    """The gateway Envoy's counters of oauth2-proxy's cluster and of ext_authz (none when its
    admin does not answer: the figures are a diagnosis, not the scenario's result)."""
    try:
        return envoy.admin_stats(h.endpoints.envoy_admin, "oauth2-proxy|ext_authz", timeout=5)
    except OSError:
        return {}


def _under_load(name: str, h: Harness, lg: LoadGen, sessions: Sequence[dict[str, Any]], rate: float,
                event: Callable[[], dict[str, Any]], warmup: float = 5, settle: float = 10) -> Outcome:
    """Drive the sessions, run ``event`` after ``warmup`` seconds, keep driving ``settle``
    seconds after it returned, then probe every session with its original cookie (again while it
    answers 5xx: unavailable is not signed out)."""
    load0 = _load()
    d: Drive = lg.drive(sessions, rate)
    time.sleep(warmup)
    before = _gateway_counters(h)
    t0 = time.time_ns()
    extra = event()
    t1 = time.time_ns()
    time.sleep(settle)
    requests = d.finish()
    # what the gateway counted meanwhile (connection resets, retries, ejections of oauth2-proxy's
    # endpoints; check errors), next to the run's logs
    delta = {k: v - before.get(k, 0) for k, v in _gateway_counters(h).items() if v != before.get(k, 0)}
    (h.run_dir / f"gateway-counters-{name.split()[0].lower()}.json").write_text(json.dumps(delta, indent=1))
    probe, settled = lg.probe_settled(sessions)
    o = outcome(name, requests, d.session_ids, probe=probe, event_us=(d.us(t0), d.us(t1)))
    o.extra.update(extra)
    if d.failures:
        o.extra["failed requests by who answered"] = failure_causes(d.failures)
        o.failures = [{**f, "t_s": round((f["t_us"] - d.us(t0)) / 1e6, 3)} for f in d.failures[:500]]
    if settled >= 1:
        o.extra["every session answered (no 5xx) after"] = f"{settled:.0f} s"
    o.load = (load0, _load())
    h.log(f"soak: {o.line()}")
    return o


# ---------------------------------------------------------------------------------- Redis


def redis_failover(h: Harness, lg: LoadGen, sessions: Sequence[dict[str, Any]], rate: float,
                   writers: Sequence[DemoUser], url: str) -> Outcome:
    """Kill the master (with its sentinel) under load while ``writers`` sign in; report how long
    until the sentinels named a new master, and how many sessions signed in before the kill the
    promoted replica does not have."""
    state: dict[str, Any] = {}

    def event() -> dict[str, Any]:
        signins: dict[str, Signins] = {}
        t = threading.Thread(target=lambda: signins.setdefault("s", lg.signin(writers, url, concurrency=4)))
        t.start()
        time.sleep(2)
        old = h.master_addr()
        state["kill_ns"] = time.time_ns()
        h.kill_master()
        t0 = time.monotonic()
        while True:
            with contextlib.suppress(Exception):
                if h.master_addr() != old:
                    break
            if time.monotonic() - t0 > 120:
                raise RuntimeError("the sentinels named no new master within 120 s")
            time.sleep(0.1)
        promoted = time.monotonic() - t0
        t.join()
        h.recover_server()
        state["signins"] = signins["s"]
        return {"new master after": f"{promoted:.1f} s"}

    o = _under_load("Redis master killed", h, lg, sessions, rate, event)
    s: Signins = state["signins"]
    before = [a for a in s.attempts if a["ok"] and s.done_ns(a) < state["kill_ns"]]
    by_user = {x["id"]: x for x in s.sessions}
    written = [by_user[a["user"]] for a in before if a["user"] in by_user]
    probe = lg.probe(written) if written else {}
    lag_lost = sum(1 for v in probe.values() if v != 200)
    o.extra["sign-ins completed before the kill"] = len(written)
    o.extra["of them lost (replication lag)"] = lag_lost
    o.sessions += len(written)
    o.sessions_lost += lag_lost
    failed = Counter(f"{a['stage']} {a['status'] or a.get('error')}" for a in s.attempts if not a["ok"])
    if failed:
        o.extra["sign-ins failed during the failover"] = dict(failed)
    return o


# ---------------------------------------------------------------------------------- oauth2-proxy


def rolling_restart(h: Harness, lg: LoadGen, sessions: Sequence[dict[str, Any]], rate: float) -> Outcome:
    def event() -> dict[str, Any]:
        r = h.rolling_restart()
        return {"pods replaced": sum(1 for e in r.events if e.what.endswith("exited")),
                "rollout": f"{r.events[-1].t:.0f} s"}

    return _under_load("oauth2-proxy rolling restart", h, lg, sessions, rate, event)


# ---------------------------------------------------------------------------------- sign-ins


def _cpu_seconds(h: Harness) -> dict[str, float]:
    """CPU seconds so far of each kind of process of the run (children included)."""
    out: dict[str, float] = {}
    for name, p in h.procs.items():
        if p.pid is None or not p.alive():
            continue
        kind = ("oauth2-proxy" if name.startswith("oauth2-proxy") else "redis" if name.startswith(("redis", "sentinel"))
                else "gateway" if name == "envoy" else "keycloak" if name == "keycloak" else "")
        if not kind:
            continue
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(p.pid)
            for q in [proc, *proc.children(recursive=True)]:
                t = q.cpu_times()
                out[kind] = out.get(kind, 0.0) + t.user + t.system
    return out


def signin_storm(h: Harness, lg: LoadGen, users: Sequence[DemoUser], url: str,
                 during_rollout: Sequence[DemoUser], concurrency: int = 16) -> Outcome:
    """Rotate the cookie secret (`pulumi up`, rolled out), with ``during_rollout`` users signing
    in while the pods change; then every user of ``users`` signs in at once."""
    load0 = _load()
    rollout_signins: dict[str, Signins] = {}
    t = threading.Thread(target=lambda: rollout_signins.setdefault(
        "s", lg.signin(during_rollout, url, concurrency=2, attempts=5, retry_delay_ms=1000)))
    before = h.proxy_deployment()[0]["spec"]["template"]["metadata"]["annotations"]
    h.update_stack({"rotation": {"cookieSecret": str(int(time.time()))}})
    after = h.proxy_deployment()[0]["spec"]["template"]["metadata"]["annotations"]
    if before == after:
        raise RuntimeError("the rotation did not change oauth2-proxy's pod template (checksum/secret)")
    t.start()
    r = h.rolling_restart(h.proxy_deployment())
    t.join()
    cpu0 = _cpu_seconds(h)
    storm = lg.signin(users, url, concurrency=concurrency, attempts=3, retry_delay_ms=500)
    cpu1 = _cpu_seconds(h)
    ok = [a for a in storm.attempts if a["ok"]]
    per = {k: round((cpu1.get(k, 0) - cpu0.get(k, 0)) / max(1, len(ok)) * 1000, 1) for k in cpu1}
    stages = {k: round(percentile([a["stages_ms"][k] for a in ok if k in a["stages_ms"]], 50))
              for k in ("start", "login", "callback", "app")}
    # the same sign-in without the password check: Keycloak answering from its SSO session
    sso_users = list(users[:10])
    sso_repeat = 11
    cpu2 = _cpu_seconds(h)
    m = lg.mint(sso_users, url, repeat=sso_repeat, concurrency=concurrency)
    cpu3 = _cpu_seconds(h)
    kc_form = per.get("keycloak", 0.0)
    sso_n = len(sso_users) * (sso_repeat - 1)
    kc_sso = ((cpu3.get("keycloak", 0) - cpu2.get("keycloak", 0)) * 1000 - len(sso_users) * kc_form) / sso_n
    during = rollout_signins["s"]
    how = Counter(f"{a['stage']} {a['status']}" for a in during.failed_attempts)
    o = Outcome("sign-in storm after a cookie-secret rotation")
    o.extra.update({
        "rollout": f"{r.events[-1].t:.0f} s",
        "sign-ins during the rollout": f"{sum(a['ok'] for a in during.attempts)} of {len(during_rollout)}, "
                                       f"{len(during.failed_attempts)} failed attempts {dict(how)}",
        "storm": f"{len(ok)} of {len(users)} signed in in {storm.seconds:.1f} s = "
                 f"{len(ok) / storm.seconds:.1f}/s at concurrency {concurrency}",
        "failed attempts": len(storm.failed_attempts),
        "sign-in p50/p99": f"{percentile([a['stages_ms']['total'] for a in ok], 50):.0f}/"
                           f"{percentile([a['stages_ms']['total'] for a in ok], 99):.0f} ms",
        "stage p50 ms": stages,
        "CPU ms per sign-in": per,
        "bottleneck": max(per, key=lambda k: per[k]) if per else "?",
        "Keycloak CPU ms per SSO sign-in (no password)": f"{kc_sso:.0f} ({m['failed']} failed)",
        "password check share of Keycloak's CPU": f"{max(0.0, 1 - kc_sso / kc_form):.0%}" if kc_form else "?",
    })
    o.load = (load0, _load())
    h.log(f"soak: {o.line()}")
    return o


# ---------------------------------------------------------------------------------- Keycloak


def keycloak_restart(h: Harness, lg: LoadGen, sessions: Sequence[dict[str, Any]], rate: float,
                     newcomers: Sequence[DemoUser], url: str, signed_at: float | None = None) -> Outcome:
    """Keycloak stopped and started while ``sessions`` browse and ``newcomers`` sign in, each
    retrying every 3 s as a person would. With ``signed_at`` (monotonic time the first sessions signed
    in), Keycloak stops ~15 s before their next token refresh falls due (every ``cookieRefresh``
    after sign-in), so every session refreshes while Keycloak is down: the case to measure."""
    state: dict[str, Any] = {}
    warmup = 5.0
    refresh = float(h.config.session.cookie_refresh)
    if signed_at is not None and refresh > 0:
        wait = (refresh - 15 - warmup - (time.monotonic() - signed_at)) % refresh
        state["refresh due"] = f"Keycloak stopped ~15 s before the sessions' refresh (waited {wait:.0f} s)"
        h.log(f"soak: waiting {wait:.0f} s so the sessions' token refresh falls due while Keycloak is down")
        time.sleep(wait)

    def event() -> dict[str, Any]:
        t = threading.Thread(target=lambda: state.setdefault(
            "s", lg.signin(newcomers, url, concurrency=4, attempts=40, retry_delay_ms=3000)))
        t.start()
        time.sleep(2)
        t0 = time.monotonic()
        h.stop_component("keycloak")
        down = time.monotonic() - t0
        h.start_component("keycloak")
        state["outage"] = time.monotonic() - t0
        t.join()
        return {"Keycloak down": f"{state['outage']:.0f} s (stopping {down:.0f} s)"}

    o = _under_load("Keycloak restart during sign-ins", h, lg, sessions, rate, event, warmup=warmup, settle=20)
    if "refresh due" in state:
        o.extra["refresh due"] = state["refresh due"]
    s: Signins = state["s"]
    first_fail = Counter(f"{a['stage']} {a['status'] or a.get('error')} {a.get('detail', '')[:40]}".strip()
                         for a in s.failed_attempts)
    o.extra["sign-ins"] = (f"{len({a['user'] for a in s.attempts if a['ok']})} of {len(newcomers)} signed in, "
                           f"{len(s.failed_attempts)} failed attempts before")
    o.extra["how attempts failed"] = dict(first_fail.most_common(6))
    return o


# ---------------------------------------------------------------------------------- Redis at scale


def _memory(h: Harness) -> tuple[int, int]:
    info = h.redis("INFO", "memory")
    used = int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("used_memory:")))
    return used, int(h.redis("DBSIZE"))


def session_store(h: Harness, lg: LoadGen, counts: Sequence[int], url: str, group: str | None,
                  users: int = 100, ttl_sample: int = 500) -> Outcome:
    """Sessions written through oauth2-proxy up to each of ``counts``; Redis memory per session
    at each, the TTL oauth2-proxy gives them, and their removal once it lapses (a sample's TTL
    shortened to 5 s: the removal is Redis's; waiting out `cookieExpire` adds nothing)."""
    load0 = _load()
    o = Outcome("session store at scale")
    pattern = f"{h.config.session.cookie_name}-*"
    base_mem, base_keys = _memory(h)
    pool = create_users(h, users, 900_000, group)
    made = 0
    for target in counts:
        need = target - (_memory(h)[1] - base_keys)
        if need > 0:
            repeat = -(-need // len(pool))
            t0 = time.monotonic()
            r = lg.mint(pool, url, repeat=repeat, concurrency=8)
            made += int(r["sessions"])
            o.extra[f"written to {target}"] = (f"{r['sessions']} in {time.monotonic() - t0:.0f} s "
                                               f"({r['sessions'] / max(1e-9, time.monotonic() - t0):.0f}/s), "
                                               f"{r['failed']} failed")
        used, keys = _memory(h)
        o.extra[f"at {keys - base_keys} sessions"] = (
            f"used_memory {used / 2**20:.0f} MiB, {(used - base_mem) / max(1, keys - base_keys):.0f} B/session")
    sample = h.redis_keys(pattern)[:ttl_sample]
    ttls = [int(h.redis("TTL", k)) for k in sample[:50]]
    usage = [int(h.redis("MEMORY", "USAGE", k)) for k in sample[:200]]
    o.extra["TTL"] = f"{min(ttls)}-{max(ttls)} s (cookieExpire {h.config.session.cookie_expire} s)"
    o.extra["MEMORY USAGE per key"] = f"{sum(usage) / max(1, len(usage)):.0f} B"
    before = _memory(h)
    for k in sample:
        h.redis("EXPIRE", k, "5")
    t0 = time.monotonic()
    while any(int(h.redis("EXISTS", k)) for k in sample[::25]) and time.monotonic() - t0 < 60:
        time.sleep(0.5)
    gone = sum(1 for k in sample if not int(h.redis("EXISTS", k)))
    after = _memory(h)
    o.extra["expired"] = (f"{gone} of {len(sample)} removed within {time.monotonic() - t0:.0f} s, "
                          f"{(before[0] - after[0]) / max(1, gone):.0f} B/session freed")
    o.extra["sessions written"] = made  # none of them is probed: "lost" is not this scenario's figure
    o.load = (load0, _load())
    h.log(f"soak: {o.line()}")
    return o
