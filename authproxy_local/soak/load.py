"""The soak's users and load: Keycloak users made for the run (admin REST, as an operator's
directory would have them), and ``tools/loadgen`` driven through config files in the run's
private temp dir (passwords and session cookies never on a command line, never logged).

Imports: the standard library, :mod:`authproxy_local.install`, :mod:`authproxy_local.keycloak`,
:mod:`authproxy_local.harness`, :mod:`.measure`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authproxy_local import install
from authproxy_local.harness import DemoUser, Harness
from authproxy_local.keycloak.admin import create_user

from .measure import Request, read_requests

USER_PREFIX = "soak"


def create_users(h: Harness, count: int, start: int = 0, group: str | None = None,
                 threads: int = 4) -> list[DemoUser]:
    """``count`` Keycloak users ``soak<i>`` in the stack's realm (in ``group`` when given: the
    group of the app they browse), each with its own random password; added to ``h.users``."""
    s = h.admin_session()
    realm = h.config.keycloak.realm
    groups = {g["name"]: g["id"] for g in s.call("GET", f"/realms/{realm}/groups").json()}

    def one(i: int) -> DemoUser:
        name = f"{USER_PREFIX}{i:06d}"
        email = f"{name}@{h.config.domain}"
        password = create_user(s, realm, name, email, ("Soak", name), [groups[group]] if group else [])
        return DemoUser(name, password, [group] if group else [], email)

    with ThreadPoolExecutor(threads) as pool:
        users = list(pool.map(one, range(start, start + count)))
    for u in users:
        h.users[u.username] = u
    return users


@dataclass
class Signins:
    attempts: list[dict[str, Any]]
    """loadgen's record of each attempt (``t_us`` since ``start_unix_ns``, stage durations)."""
    sessions: list[dict[str, Any]]
    seconds: float
    start_unix_ns: int = 0

    def done_ns(self, attempt: dict[str, Any]) -> int:
        """When an attempt ended (its session written, if it succeeded)."""
        return self.start_unix_ns + int(attempt["t_us"]) * 1000 + int(attempt["stages_ms"]["total"] * 1e6)

    @property
    def failed_attempts(self) -> list[dict[str, Any]]:
        return [a for a in self.attempts if not a["ok"]]


@dataclass
class Drive:
    """A running ``loadgen drive``; :meth:`finish` stops it and reads what every request saw.
    Event times are taken with :func:`time.time_ns` and turned into the records' clock with
    :meth:`us` (the load generator reports its own start)."""

    proc: subprocess.Popen[str]
    requests_path: Path
    summary_path: Path
    stop_path: Path
    session_ids: list[str]
    failures_path: Path | None = None
    start_unix_ns: int = 0
    requests: list[Request] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    """One record per failed request: who answered it (tools/loadgen ``Failure``)."""

    def finish(self) -> list[Request]:
        self.stop_path.touch()
        _, err = self.proc.communicate(timeout=120)
        if self.proc.returncode != 0:
            raise RuntimeError(f"loadgen drive exited {self.proc.returncode}: {err[-2000:]}")
        self.start_unix_ns = int(json.loads(self.summary_path.read_text())["start_unix_ns"])
        self.requests = read_requests(self.requests_path)
        if self.failures_path is not None and self.failures_path.exists():
            self.failures = [json.loads(line) for line in self.failures_path.read_text().splitlines() if line]
        return self.requests

    def us(self, unix_ns: int) -> int:
        """A :func:`time.time_ns` instant on the records' clock (microseconds since the start)."""
        return (unix_ns - self.start_unix_ns) // 1000


class LoadGen:
    """``tools/loadgen`` against one harness run."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.exe = str(install.ensure("loadgen"))
        self.dir = h.tmp / "load"
        self.dir.mkdir(exist_ok=True)
        self.n = 0
        self.drives: list[subprocess.Popen[str]] = []
        self.base = {"gateway": f"{h.gateway_ip}:443", "ca_file": h.ca_file,
                     "cookie_name": h.config.session.cookie_name, "cookie_domain": h.config.domain,
                     "timeout_ms": 15000}

    def _file(self, name: str) -> Path:
        self.n += 1
        return self.dir / f"{self.n}-{name}"

    def _config(self, kind: str, **kw: Any) -> Path:
        cfg = self._file(f"{kind}.json")
        cfg.write_text(json.dumps({**self.base, **kw}))
        os.chmod(cfg, 0o600)
        return cfg

    def _run(self, kind: str, cfg: Path, timeout: float) -> dict[str, Any]:
        out = subprocess.run([self.exe, kind, str(cfg)], capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"loadgen {kind} failed: {out.stderr[-2000:]}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    def signin(self, users: Sequence[DemoUser], url: str, concurrency: int = 8, attempts: int = 1,
               retry_delay_ms: int = 2000, timeout: float = 3600) -> Signins:
        """Each user signs in through the real login form (concurrently)."""
        att, sess = self._file("attempts.jsonl"), self._file("sessions.json")
        cfg = self._config("signin", users=[{"username": u.username, "password": u.password, "url": url}
                                            for u in users],
                           concurrency=concurrency, attempts=attempts, retry_delay_ms=retry_delay_ms,
                           attempts_out=str(att), sessions_out=str(sess))
        t0 = time.monotonic()
        summary = self._run("signin", cfg, timeout)
        attempts_ = [json.loads(line) for line in att.read_text().splitlines() if line.strip()]
        return Signins(attempts_, json.loads(sess.read_text()), time.monotonic() - t0,
                       int(summary["start_unix_ns"]))

    def drive(self, sessions: Sequence[dict[str, Any]], rate: float) -> Drive:
        """Start the signed-in sessions requesting their apps (``rate`` requests/s in all)."""
        req, summ, stop = self._file("requests.csv"), self._file("summary.json"), self._file("stop")
        fails = self._file("failures.jsonl")
        cfg = self._config("drive", sessions=list(sessions), rate=rate, stop_file=str(stop),
                           requests_out=str(req), summary_out=str(summ), failures_out=str(fails))
        proc = subprocess.Popen([self.exe, "drive", str(cfg)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.drives.append(proc)
        return Drive(proc, req, summ, stop, [s["id"] for s in sessions], fails)

    def close(self) -> None:
        """Stop every ``loadgen drive`` still running (a scenario that failed midway)."""
        for proc in self.drives:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def probe(self, sessions: Sequence[dict[str, Any]]) -> dict[str, int]:
        """One request per session with its original cookie: session id -> status."""
        out = self._file("probe.json")
        self._run("probe", self._config("probe", sessions=list(sessions), summary_out=str(out)), 600)
        return dict(json.loads(out.read_text()))

    def probe_settled(self, sessions: Sequence[dict[str, Any]], within: float = 90,
                      every: float = 3) -> tuple[dict[str, int], float]:
        """:meth:`probe`, then the sessions whose answer was a 5xx or no answer (unavailable, not
        signed out: a component still recovering) probed again every ``every`` seconds for up to
        ``within``: session id -> last status, and the seconds until every answer was final."""
        t0 = time.monotonic()
        result = self.probe(sessions)
        while True:
            pending = [s for s in sessions if not 200 <= result.get(s["id"], -1) < 500]
            if not pending or time.monotonic() - t0 >= within:
                return result, time.monotonic() - t0
            time.sleep(every)
            result.update(self.probe(pending))

    def mint(self, users: Sequence[DemoUser], url: str, repeat: int, concurrency: int = 8,
             timeout: float = 4 * 3600) -> dict[str, Any]:
        """``repeat`` sessions per user through oauth2-proxy (one form sign-in, then sign-ins on
        the Keycloak SSO session)."""
        out = self._file("mint.json")
        cfg = self._config("mint", users=[{"username": u.username, "password": u.password, "url": url}
                                          for u in users],
                           repeat=repeat, concurrency=concurrency, mint_out=str(out))
        self._run("mint", cfg, timeout)
        return dict(json.loads(out.read_text()))
