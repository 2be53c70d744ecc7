"""Child processes, ports and waiting, for every room that runs something.

- :func:`free_port`, :func:`pick_gateway_ip`: loopback addresses and ports for a run;
- :func:`wait_for`, :func:`http_ok`, :func:`tcp_open`: the one wait helper;
- :class:`Process`: a child process with its log file, stopped on exit and on signals.

Imports: the standard library only.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class HarnessError(RuntimeError):
    """Something the harness needs did not start or is missing; the message says what and how to
    fix it. (Defined here, re-exported by :mod:`authproxy_local.harness`.)"""


# --------------------------------------------------------------------------------------------
# Ports and addresses
# --------------------------------------------------------------------------------------------


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1", tries: int = 200) -> int:
    """A port free on ``host`` now, chosen at random below the kernel's ephemeral range.

    A port is picked here and bound later by another process (Envoy, Redis, Keycloak). Ports the
    kernel hands out for port 0 come from the ephemeral range, so a port from that range can be
    taken in between by any process that binds port 0 on all addresses (a pulumi plugin, a JVM) or
    by an outgoing connection: that happened while a real ``pulumi up`` ran between pick and bind.
    Below the range, only a process asking for that exact port can collide."""
    low, _high = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(tries):
        port = rng.randint(10000, max(10001, low - 1))
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded range: let the kernel choose
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pick_gateway_ip(ports: tuple[int, ...] = (443, 80), tries: int = 50) -> str:
    """A random 127.x.y.z (not 127.0.0.0/16) on which ``ports`` are free. The whole 127/8 is
    loopback on Linux, so each run gets its own address and the public URLs keep no port."""
    rng = random.SystemRandom()
    last: OSError | None = None
    for _ in range(tries):
        ip = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        try:
            for p in ports:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((ip, p))
            return ip
        except OSError as e:
            last = e
    raise HarnessError(
        f"cannot bind ports {ports} on any loopback address 127.x.y.z ({last}); the gateway needs "
        "them so the public URLs carry no port. Run as root (ports < 1024) or allow "
        "net.ipv4.ip_unprivileged_port_start=80."
    )


def wait_for(what: str, check: Callable[[], bool], timeout: float, proc: Process | None = None,
             interval: float = 0.2) -> float:
    """Poll ``check`` until it is true; returns the seconds waited. Fails early if ``proc`` dies."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except (OSError, ValueError):
            pass
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"{what}: process exited with code {proc.poll()}; see {proc.log_path}")
        if time.monotonic() - t0 > timeout:
            hint = f"; see {proc.log_path}" if proc is not None else ""
            raise HarnessError(f"{what}: not ready after {timeout:.0f}s{hint}")
        time.sleep(interval)


def http_ok(url: str, expect: tuple[int, ...] = (200,), timeout: float = 2.0) -> bool:
    req = urllib.request.Request(url, method="GET")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status in expect
    except urllib.error.HTTPError as e:
        return e.code in expect
    except (urllib.error.URLError, OSError):
        return False


def tcp_open(addr: tuple[str, int], timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(addr, timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------

_LIVE: set[Process] = set()
_LIVE_LOCK = threading.Lock()


def _kill_all_live() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        p.stop(timeout=5)


atexit.register(_kill_all_live)


@dataclass(eq=False)
class Process:
    """A child process in its own session (so the whole group can be signalled), output to a
    log file."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: str | None = None
    popen: subprocess.Popen | None = None
    started_at: float = 0.0

    def start(self) -> Process:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        log.write(f"\n==== {dt.datetime.now().isoformat()} starting {self.name}: {self.cmd[0]}\n".encode())
        log.flush()
        self.popen = subprocess.Popen(
            self.cmd, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        self.started_at = time.monotonic()
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def poll(self) -> int | None:
        return self.popen.poll() if self.popen else -1

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
        """Signal the process group, wait, then SIGKILL what is left."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        # children that outlived the leader (kc.sh -> java)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with _LIVE_LOCK:
            _LIVE.discard(self)
