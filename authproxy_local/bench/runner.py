"""The live benchmark: the harness plus the bench Envoys and extra oauth2-proxies
(:class:`Bench`), credentials, and the measuring loop (see :mod:`authproxy_local.bench`).

Imports: :mod:`authproxy_local.harness`, :mod:`authproxy_local.mesh`, :mod:`authproxy_local.install`,
:mod:`authproxy_local.core`, :mod:`authproxy_local.render` and this room's libraries.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authproxy_local import install
from authproxy_local.core.net import resolving
from authproxy_local.core.pki import write_private
from authproxy_local.core.processes import Process, free_port, http_ok, pick_gateway_ip, wait_for
from authproxy_local.harness import Harness
from authproxy_local.mesh import envoy
from authproxy_local.render import render

from .bootstraps import bench_bootstrap, set_flags, sidecar_bootstrap
from .model import (
    CREDENTIAL_MAX_AGE,
    DEFAULT_CONNECTIONS,
    NOISY_SHARE,
    TUNINGS,
    UPSTREAM_HEADER,
    WHOLE_PATH_LISTENERS,
    BenchError,
    Tuning,
)
from .signin import session_cookie_header, sign_in
from .stats import Sample, schedule
from .system import (
    core_times,
    cpu_layout,
    jwt_claims,
    machine_facts,
    parse_commandstats,
    parse_info_int,
    pin,
    pin_self,
    proc_cpu_seconds,
    versions,
)
from .wrk import parse_wrk, wrk_script


@dataclass
class Variant:
    name: str
    listener: str
    """Bench Envoy listener the requests go to."""
    credential: str
    """'' | 'token' | 'redis' (the Redis session's cookie) | 'cookie' (the cookie-store session's)."""
    filter_stat: str = ""
    """Envoy counter that must count every request (besides the upstream's)."""


class Bench:
    """The harness plus the bench Envoy and extra oauth2-proxies; :meth:`run` measures."""

    def __init__(self, *, stack: str = "dev", mode: str | None = None,
                 connections: Sequence[int] = DEFAULT_CONNECTIONS, rounds: int = 3,
                 duration: float = 6.0, warmup: float = 2.0,
                 tunings: Sequence[Tuning] = TUNINGS, retries: int = 2,
                 log: Callable[[str], None] = print) -> None:
        self.stack, self.mode = stack, mode
        self.connections, self.rounds = list(connections), rounds
        self.duration, self.warmup = duration, warmup
        self.tunings = list(tunings)
        self.log = log
        self.h: Any = None
        self.procs: dict[str, Any] = {}
        self.ips: dict[str, str] = {}
        self.proxy_addrs: dict[str, tuple[str, int]] = {}
        self.admin: tuple[str, int] = ("127.0.0.1", 0)
        self.side_admin: tuple[str, int] = ("127.0.0.1", 0)
        self.variants: list[Variant] = []
        self.samples: list[Sample] = []
        self.facts: dict[str, Any] = {}
        self.sizes: dict[str, int] = {}
        self.retries = retries
        self.noisy_reruns = 0

    # ---- set-up ------------------------------------------------------------------------

    @property
    def app(self) -> Any:
        return self.h.config.apps[0]

    def start(self) -> Bench:
        self.load_cpu, self.sut_cpu = cpu_layout(os.sched_getaffinity(0))
        self.facts["load_before_start"] = os.getloadavg()
        self.h = Harness(self.stack, mode=self.mode, log=self.log)
        self.h.start()
        try:
            self._start_extras()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for p in self.procs.values():
            with contextlib.suppress(Exception):
                p.stop()
        self.procs.clear()
        if self.h is not None:
            self.h.stop()

    def _proxy_args(self) -> tuple[list[str], dict[str, str]]:
        cmd, env = self.h.oauth2_proxy_command()
        return cmd, env

    def _cookie_name(self) -> str:
        cmd, _ = self._proxy_args()
        return next(a.split("=", 1)[1] for a in cmd if a.startswith("--cookie-name="))

    def _start_proxy(self, name: str, set_args: Mapping[str, str], env: Mapping[str, str]) -> None:
        ip = self.h.gateway_ip
        port, mport = free_port(ip), free_port(ip)
        cmd, base_env = self._proxy_args()
        args = set_flags(cmd[1:], {**set_args, "http-address": f"{ip}:{port}", "metrics-address": f"{ip}:{mport}"})
        p = Process(f"oauth2-proxy-{name}", ["taskset", "-c", str(self.sut_cpu), cmd[0], *args],
                    {**base_env, **env}, self.h.run_dir / f"bench-oauth2-proxy-{name}.log").start()
        self.procs[f"oauth2-proxy-{name}"] = p
        ready = next(a.split("=", 1)[1] for a in cmd if a.startswith("--ready-path="))
        wait_for(f"oauth2-proxy-{name}", lambda: http_ok(f"http://{ip}:{port}{ready}"), 60, p)
        self.proxy_addrs[name] = (ip, port)

    def _start_extras(self) -> None:
        h = self.h
        self._start_proxy("cookie", {"session-store-type": "cookie"}, {})
        for t in self.tunings:
            if t.set_args or t.env:
                self._start_proxy(t.name, t.set_args, t.env)
        names = ["baseline", "gateway", "cookie", *WHOLE_PATH_LISTENERS, *(t.name for t in self.tunings)]
        self.ips = {n: pick_gateway_ip((443,)) for n in names}
        upstream = (h.gateway_ip, free_port(h.gateway_ip))
        self.admin = (h.gateway_ip, free_port(h.gateway_ip))
        self.side_admin = (h.gateway_ip, free_port(h.gateway_ip))
        # The app's sidecar: istiod's inbound config for the app, one copy per kind of whole-path
        # variant (as rendered, bare for the baseline, with the JWT cache).
        side_kinds = {"rendered": (h.gateway_ip, free_port(h.gateway_ip)),
                      "bare": (h.gateway_ip, free_port(h.gateway_ip))}
        if any(t.whole_path and t.jwt_cache for t in self.tunings):
            side_kinds["cache"] = (h.gateway_ip, free_port(h.gateway_ip))
        side_of = {"wp-baseline": "bare", "wp-gateway": "rendered"}
        for t in self.tunings:
            if t.whole_path:
                side_of[t.name] = "cache" if t.jwt_cache else "rendered"
        sources = {}
        for t in self.tunings:
            if t.mode and t.mode != h.render.mode:
                other = render(self.stack, t.mode, h.overrides or None)
                sources[t.name] = h.translate(other).by_proxy["gateway"]
        boot = bench_bootstrap(
            h.envoy_bootstrap(), app_host=self.app.host, sources=sources,
            listeners={n: (self.ips[n], 443) for n in names},
            proxies=dict(self.proxy_addrs),
            upstream=upstream, admin=self.admin,
            cluster_overrides={t.name: t.cluster for t in self.tunings if t.cluster},
            drop_filters={t.name: t.drop_filters for t in self.tunings if t.drop_filters},
            upstreams={n: side_kinds[k] for n, k in side_of.items()},
            bare=("baseline", "wp-baseline"),
            jwt_cache=[t.name for t in self.tunings if t.jwt_cache],
        )
        side = sidecar_bootstrap(
            h.envoy_bootstrap(f"sidecar-{self.app.name}"), listeners=side_kinds, upstream=upstream,
            admin=self.side_admin, bare=("bare",), jwt_cache=("cache",))
        for proc_name, doc in (("bench-envoy", boot), ("bench-sidecar", side)):
            self.procs[proc_name] = envoy.start(proc_name, doc, h.run_dir, args=["--concurrency", "1"],
                                                cpu=self.sut_cpu, log_level="warn")
        wait_for("bench envoy", lambda: envoy.ready(self.admin, [(ip, 443) for ip in self.ips.values()]), 60,
                 self.procs["bench-envoy"])
        wait_for("bench sidecar", lambda: envoy.ready(self.side_admin, list(side_kinds.values())), 60,
                 self.procs["bench-sidecar"])
        # CPU: the system under test on one core, everything else on the other.
        for name in ("redis", "oauth2-proxy"):
            pin(h.procs[name].pid, self.sut_cpu)
        for name, proc in h.procs.items():
            if name not in ("redis", "oauth2-proxy"):
                pin(proc.pid, self.load_cpu)
        pin_self(self.load_cpu)
        self.variants = [
            Variant("baseline", "baseline", ""),
            Variant("jwt", "gateway", "token", "http.bench_gateway.jwt_authn.allowed"),
            Variant("session-redis", "gateway", "redis", "http.bench_gateway.ext_authz.ok"),
            Variant("session-cookie", "cookie", "cookie", "http.bench_cookie.ext_authz.ok"),
            Variant("wp-baseline", "wp-baseline", ""),
            Variant("wp-jwt", "wp-gateway", "token", "http.bench_wp-gateway.jwt_authn.allowed"),
            Variant("wp-session", "wp-gateway", "redis", "http.bench_wp-gateway.ext_authz.ok"),
        ]
        for t in self.tunings:
            store = "cookie" if t.set_args.get("session-store-type") == "cookie" else t.credential
            stat = "jwt_authn.allowed" if t.credential == "token" else "ext_authz.ok"
            self.variants.append(Variant(t.name, t.name, store, f"http.bench_{t.name}.{stat}"))
        self.facts.update(machine_facts())
        self.facts["versions"] = versions()
        self.facts["cpu_layout"] = {"load_generator_cpu": self.load_cpu, "system_under_test_cpu": self.sut_cpu}
        self.facts["mode"] = h.render.mode
        self.facts["proxy_env_gomaxprocs"] = self._proxy_args()[1].get("GOMAXPROCS", "")
        self.log(f"bench envoy ready; listeners {self.ips}; CPU {self.load_cpu}: wrk, CPU {self.sut_cpu}: "
                 "envoy + oauth2-proxy + redis")

    def sut_pids(self) -> dict[str, int]:
        pids = {"envoy": self.procs["bench-envoy"].pid, "sidecar": self.procs["bench-sidecar"].pid,
                "oauth2-proxy": self.h.procs["oauth2-proxy"].pid,
                "redis": self.h.procs["redis"].pid}
        for name, p in self.procs.items():
            if name.startswith("oauth2-proxy-"):
                pids[name] = p.pid
        return pids

    # ---- credentials ---------------------------------------------------------------------

    def _resolving(self, listener: str) -> contextlib.AbstractContextManager[None]:
        return resolving(dict.fromkeys(self.h.public_hosts, self.ips[listener]))

    def credentials(self) -> dict[str, str]:
        """Fresh credentials (a new sign-in per round: sessions younger than --cookie-refresh and
        tokens within their lifetime for the whole round)."""
        import requests

        user = next(iter(self.h.users.values()))
        url = self.h.app_url(self.app.name)
        cookie_name = self._cookie_name()
        creds: dict[str, str] = {}
        for kind, listener in (("redis", "gateway"), ("cookie", "cookie")):
            with self._resolving(listener):
                s = sign_in(self.h.ca_file, url, user.username, user.password)
            creds[kind] = session_cookie_header(s.cookies, cookie_name, self.app.host)
        host, port = self.h.endpoints.oauth2_proxy
        r = requests.get(f"http://{host}:{port}/oauth2/auth", headers={"Cookie": creds["redis"]}, timeout=10)
        token = r.headers.get("X-Auth-Request-Access-Token", "")
        self.facts["token_kind"] = "access token"
        if not token and r.headers.get("Authorization", "").startswith("Bearer "):
            token = r.headers["Authorization"].split(" ", 1)[1]
            self.facts["token_kind"] = "ID token"
        if r.status_code != 202 or not token:
            raise BenchError(f"oauth2-proxy's /oauth2/auth gave {r.status_code} and no token")
        creds["token"] = token
        claims = jwt_claims(token)
        self.facts["token_audience"] = claims.get("aud")
        self.sizes = {"redis_cookie_header": len(creds["redis"]), "cookie_store_cookie_header": len(creds["cookie"]),
                      "access_token": len(token),
                      "cookie_store_cookies": len(creds["cookie"].split("; "))}
        return creds

    def headers_for(self, v: Variant, creds: Mapping[str, str]) -> dict[str, str]:
        hd = {"Host": self.app.host}
        if v.credential == "token":
            hd["Authorization"] = f"Bearer {creds['token']}"
        elif v.credential:
            hd["Cookie"] = creds[v.credential]
        return hd

    def preflight(self, v: Variant, headers: Mapping[str, str]) -> None:
        import requests

        with self._resolving(v.listener):
            r = requests.get(self.h.app_url(self.app.name), headers={k: x for k, x in headers.items() if k != "Host"},
                             verify=self.h.ca_file, allow_redirects=False, timeout=10)
        if r.status_code != 200 or r.headers.get(UPSTREAM_HEADER) != "1":
            raise BenchError(f"variant {v.name}: expected 200 from the bench upstream, got {r.status_code} "
                             f"(location {r.headers.get('location', '-')[:80]})")

    # ---- measuring -----------------------------------------------------------------------

    def envoy_stats(self) -> dict[str, int]:
        return envoy.admin_stats(self.admin, r"^(http\.bench_|cluster\.(bench|outbound))")

    def wrk(self, v: Variant, conns: int, seconds: float, script: Path) -> tuple[str, float]:
        cmd = ["taskset", "-c", str(self.load_cpu), str(install.ensure("wrk")), "-t1", f"-c{conns}",
               f"-d{seconds:g}s", "--latency", "--timeout", "5s", "-s", str(script),
               f"https://{self.ips[v.listener]}:443/"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            raise BenchError(f"wrk failed ({out.returncode}): {out.stderr[-500:]}")
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return out.stdout, cpu

    def measure(self, v: Variant, conns: int, rnd: int, script: Path) -> Sample:
        pids = self.sut_pids()
        st0 = self.envoy_stats()
        rs0 = parse_commandstats(self.h.redis("INFO", "commandstats"))
        rc0 = parse_info_int(self.h.redis("INFO", "stats"), "total_connections_received")
        cpu0 = {n: proc_cpu_seconds(p) for n, p in pids.items()}
        sut0, load0 = core_times(self.sut_cpu), core_times(self.load_cpu)
        text, wrk_cpu = self.wrk(v, conns, self.duration, script)
        sut1, load1 = core_times(self.sut_cpu), core_times(self.load_cpu)
        cpu1 = {n: proc_cpu_seconds(p) for n, p in pids.items()}
        rs1 = parse_commandstats(self.h.redis("INFO", "commandstats"))
        rc1 = parse_info_int(self.h.redis("INFO", "stats"), "total_connections_received")
        st1 = self.envoy_stats()
        w = parse_wrk(text)

        def delta(name: str) -> int:
            return st1.get(name, 0) - st0.get(name, 0)

        served = delta("http.bench_upstream.downstream_rq_2xx")
        verified = min(served, delta(v.filter_stat)) if v.filter_stat else served
        # per-request costs over every request served (wrk leaves a few in flight uncounted)
        n = max(1, served, w.requests)
        cpu_ms = {k: (cpu1[k] - cpu0[k]) * 1000 / n for k in pids}
        cpu_ms["wrk"] = wrk_cpu * 1000 / n
        calls = {k: rs1.get(k, 0) - rs0.get(k, 0) for k in set(rs1) | set(rs0) if k != "info"}
        calls["auth"] = calls.get("auth", 0) - 2  # this method's own two connections after rs0
        redis_calls = {k: c / n for k, c in sorted(calls.items()) if c > 0}
        s = Sample(
            variant=v.name, connections=conns, round=rnd, wrk=w, verified=verified, cpu_ms=cpu_ms,
            sut_core_busy=(sut1[0] - sut0[0]) / max(1e-9, sut1[1] - sut0[1]),
            load_core_busy=(load1[0] - load0[0]) / max(1e-9, load1[1] - load0[1]),
            loadavg=os.getloadavg()[0], redis_calls=redis_calls,
            new_connections={
                "ext_authz": sum(st1[k] - st0.get(k, 0) for k in st1
                                 if "oauth2-proxy" in k and k.endswith(".upstream_cx_total")),
                "redis": rc1 - rc0 - 2,  # minus this method's own two INFO connections
            },
        )
        if w.non_2xx_3xx or w.socket_errors or verified < w.requests:
            raise BenchError(f"{v.name} at {conns} connections: wrk counted {w.requests} requests, "
                             f"{w.non_2xx_3xx} non-2xx/3xx, {w.socket_errors} socket errors, but the upstream "
                             f"and {v.filter_stat or 'router'} counted {verified}")
        return s

    def scripts(self, creds: Mapping[str, str]) -> dict[str, Path]:
        out = {}
        for v in self.variants:
            headers = self.headers_for(v, creds)
            self.preflight(v, headers)
            path = self.h.tmp / f"wrk-{v.name}.lua"
            write_private(path, wrk_script(headers))
            out[v.name] = path
        return out

    def run(self) -> list[Sample]:
        names = [v.name for v in self.variants]
        by_name = {v.name: v for v in self.variants}
        plan = schedule(names, self.connections, self.rounds)
        self.facts["load_at_measure_start"] = os.getloadavg()
        t0 = time.monotonic()
        current_round = -1
        scripts: dict[str, Path] = {}
        signed_in_at = 0.0
        for rnd, conns, name in plan:
            # A new sign-in per round, and again whenever the session could grow older than
            # CREDENTIAL_MAX_AGE during the next run (with re-measured runs on a busy machine a
            # round can outlast --cookie-refresh, and a refresh mid-run is not what we measure).
            if rnd != current_round or time.monotonic() - signed_in_at > CREDENTIAL_MAX_AGE:
                creds = self.credentials()
                scripts = self.scripts(creds)
                signed_in_at = time.monotonic()
            if rnd != current_round:
                current_round = rnd
                if rnd == 0 and self.warmup > 0:
                    for v in self.variants:
                        self.wrk(v, max(self.connections), self.warmup, scripts[v.name])
                self.log(f"round {rnd + 1}/{self.rounds} (load {os.getloadavg()[0]:.2f})")
            s = self.measure(by_name[name], conns, rnd, scripts[name])
            for _ in range(self.retries):
                # Saturated runs must have the system-under-test core to themselves; when other
                # load on the machine took a noticeable part of it, measure again.
                if conns < 16 or s.sut_share >= NOISY_SHARE:
                    break
                self.log(f"  {name} c={conns}: other load took {(1 - s.sut_share) * 100:.0f}% of the "
                         "system-under-test core; measuring again")
                self.noisy_reruns += 1
                s = self.measure(by_name[name], conns, rnd, scripts[name])
            self.samples.append(s)
            self.log(f"  {name:<16} c={conns:<3} {s.wrk.rps:>9.0f} req/s  p50 {s.wrk.p50_ms:7.2f} ms  "
                     f"p99 {s.wrk.p99_ms:7.2f} ms  sut {s.sut_core_busy * 100:3.0f}%  wrk-core "
                     f"{s.load_core_busy * 100:3.0f}%  load {s.loadavg:.2f}")
        self.facts["measure_seconds"] = round(time.monotonic() - t0, 1)
        self._last_scripts = scripts
        self.facts["noisy_reruns"] = self.noisy_reruns
        self.facts["load_at_measure_end"] = os.getloadavg()
        return self.samples


    def profile_proxy(self, seconds: float, data: Path, conns: int = 16) -> tuple[Any, float]:
        """A CPU profile of the rendered oauth2-proxy (:mod:`.proxy_profile`) while
        wrk drives the signed-in path (gateway only) at ``conns`` connections; returns the profile
        and oauth2-proxy's CPU µs per check measured in that run."""
        from . import proxy_profile

        v = next(x for x in self.variants if x.name == "session-redis")
        creds = self.credentials()
        script = self.scripts(creds)[v.name]
        pid = self.h.procs["oauth2-proxy"].pid
        import threading

        result: dict[str, Sample] = {}
        t = threading.Thread(target=lambda: result.setdefault("s", self.measure(v, conns, -1, script)))
        t.start()
        time.sleep(min(1.0, self.duration / 4))
        proxy_profile.record(pid, max(1.0, seconds - 2), data)
        t.join()
        if "s" not in result:
            raise BenchError("the wrk run during the profile failed (see above)")
        us = result["s"].cpu_ms.get("oauth2-proxy", 0.0) * 1000
        return proxy_profile.profile(Path(str(install.ensure("oauth2-proxy"))), data), us


