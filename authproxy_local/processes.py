"""Processes, ports and local name resolution for the harness, the demo and the benchmark.

- :func:`free_port`, :func:`pick_gateway_ip`: loopback addresses and ports for a run;
- :func:`wait_for`, :func:`http_ok`, :func:`tcp_open`: the one wait helper;
- :class:`Process`: a child process with its log file, stopped on exit and on signals;
- :class:`ConnectProxy`: the CONNECT proxy through which Go programs (oauth2-proxy, istiod's
  JWKS fetch) reach the public hosts;
- :func:`resolving`: in-process resolution of the public hosts to the run's gateway.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import fcntl
import os
import random
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authproxy_local.cache import cache_dir


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
# The CONNECT proxy oauth2-proxy uses to reach the public hosts
# --------------------------------------------------------------------------------------------


class ConnectProxy:
    """An HTTP CONNECT proxy that maps ``host:443`` of the allowed hosts to the gateway's HTTPS
    listener and refuses everything else (403). TLS stays end to end (client <-> gateway)."""

    def __init__(self, allowed_hosts: list[str], target: tuple[str, int]) -> None:
        self.allowed = {h.lower() for h in allowed_hosts}
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.refused: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="connect-proxy", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    def start(self) -> ConnectProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            first = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(first) < 2 or first[0] != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = first[1].rpartition(":")
            if host.lower() not in self.allowed or port != "443":
                self.refused.append(first[1])
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            upstream = socket.create_connection(self.target, timeout=10)
            conn.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
            if rest:
                upstream.sendall(rest)
            self._pipe(conn, upstream)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        a.settimeout(None)
        b.settimeout(None)
        try:
            while True:
                r, _, _ = select.select([a, b], [], [], 300)
                if not r:
                    return
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        finally:
            with contextlib.suppress(OSError):
                b.close()


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


@contextlib.contextmanager
def _file_lock(name: str) -> Iterator[None]:
    d = cache_dir() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# In-process name resolution
# --------------------------------------------------------------------------------------------

_ORIG_GETADDRINFO = socket.getaddrinfo
_RESOLVE_MAP: dict[str, str] = {}
_RESOLVE_LOCK = threading.Lock()


def _patched_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    key = host.decode() if isinstance(host, bytes) else host
    if isinstance(key, str) and key.lower().rstrip(".") in _RESOLVE_MAP:
        host = _RESOLVE_MAP[key.lower().rstrip(".")]
    return _ORIG_GETADDRINFO(host, *args, **kwargs)


@contextlib.contextmanager
def resolving(mapping: Mapping[str, str]) -> Iterator[None]:
    """Resolve the given host names to the given IPs inside this process (nothing else changes;
    no system file is touched). Nested uses merge."""
    with _RESOLVE_LOCK:
        saved = dict(_RESOLVE_MAP)
        _RESOLVE_MAP.update({h.lower(): ip for h, ip in mapping.items()})
        socket.getaddrinfo = _patched_getaddrinfo
    try:
        yield
    finally:
        with _RESOLVE_LOCK:
            _RESOLVE_MAP.clear()
            _RESOLVE_MAP.update(saved)
            if not _RESOLVE_MAP:
                socket.getaddrinfo = _ORIG_GETADDRINFO


