"""Network namespaces for the pods of an ambient run, and relays into them.

An ambient pod needs a network of its own: ztunnel takes its traffic over with iptables rules in
the pod's namespace (in-pod redirection) and connects to the app with the caller's address as
source. :class:`PodNetwork` makes one namespace per pod, joined by a bridge in a namespace of its
own, so nothing is created in (or routed through) the machine's namespace; the pods keep the
addresses the translator's input gives them. :class:`Relay` carries TCP from a loopback address
of this namespace to an address in a pod namespace (the ingress gateway, in this namespace, to a
waypoint): bytes only, so TLS stays end to end and the peer's identity is its certificate's.

Needs root (CAP_NET_ADMIN) and iproute2's ``ip``; :func:`unavailable` says what is missing.

Imports: the standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
T = TypeVar("T")


def unavailable() -> str | None:
    """Why pod namespaces cannot be made here, or None."""
    if not shutil.which("ip"):
        return "iproute2's `ip` is not on PATH (Debian package iproute2)"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return f"network namespaces need root (CAP_NET_ADMIN); this process is uid {os.geteuid()}"
    return None


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")


def in_namespace(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a thread that entered the network namespace ``ns`` (a socket made there
    stays in that namespace, whichever thread uses it later)."""
    out: dict[str, Any] = {}

    def run() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                out["error"] = OSError(err, f"setns({ns}): {os.strerror(err)}")
                return
        finally:
            os.close(fd)
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["error"] = e

    t = threading.Thread(target=run, name=f"netns-{ns}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


@dataclass
class PodNetwork:
    """One bridge namespace and one namespace per pod (``<prefix>-<pod>``), pod addresses on one
    /16 (the translator's pod addresses). :meth:`close` deletes them all."""

    prefix: str
    cidr_bits: int = 16
    pods: dict[str, str] = field(default_factory=dict)
    """pod -> its namespace"""
    _bridge: str = ""

    def _ns(self, pod: str) -> str:
        return f"{self.prefix}-{pod}"

    def add(self, pod: str, ip: str) -> str:
        """A namespace for ``pod`` with ``ip`` on ``eth0``, joined to the bridge; its name."""
        if not self._bridge:
            self._bridge = f"{self.prefix}-br"
            _ip("netns", "add", self._bridge)
            _ip("-n", self._bridge, "link", "set", "lo", "up")
            _ip("-n", self._bridge, "link", "add", "br0", "type", "bridge")
            _ip("-n", self._bridge, "link", "set", "br0", "up")
        ns = self._ns(pod)
        _ip("netns", "add", ns)
        self.pods[pod] = ns
        veth = f"v{len(self.pods)}"
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self._bridge, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("-n", self._bridge, "link", "set", veth, "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{ip}/{self.cidr_bits}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        return ns

    def command(self, pod: str, cmd: list[str]) -> list[str]:
        """``cmd`` run inside the pod's namespace."""
        return ["ip", "netns", "exec", self.pods[pod], *cmd]

    def close(self) -> None:
        for ns in [*self.pods.values(), *([self._bridge] if self._bridge else [])]:
            with contextlib.suppress(OSError):
                _ip("netns", "delete", ns)
        self.pods.clear()
        self._bridge = ""


class Relay:
    """TCP from ``listen`` (this namespace) to ``target`` inside the namespace ``ns``."""

    def __init__(self, listen: tuple[str, int], ns: str, target: tuple[str, int]) -> None:
        self.ns, self.target = ns, target
        self.server = socket.create_server(listen)
        self._closing = False
        self.connections = 0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> Relay:
        threading.Thread(target=self._serve, name=f"relay-{self.ns}", daemon=True).start()
        return self

    def stop(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self.server.close()

    def _serve(self) -> None:
        while not self._closing:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            up = in_namespace(self.ns, lambda: socket.create_connection(self.target, timeout=10))
        except OSError:
            conn.close()
            return
        up.settimeout(None)
        self.connections += 1
        threading.Thread(target=_pipe, args=(conn, up), daemon=True).start()
        _pipe(up, conn)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)
