"""Local networking for the harness: the CONNECT proxy and in-process name resolution.

- :class:`ConnectProxy`: the CONNECT proxy through which istiod's JWKS fetch and the pulumi
  providers reach the public hosts, and nothing else (oauth2-proxy's, under load, is an Envoy:
  :mod:`authproxy_local.mesh.connect_proxy`);
- :func:`resolving`: in-process resolution of the public hosts to the run's gateway.

Imports: the standard library only.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any

# --------------------------------------------------------------------------------------------
# The CONNECT proxy the translator and the providers use to reach the public hosts
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
        # a selector (epoll), not select(): a loaded run holds well over FD_SETSIZE (1024) files
        a.settimeout(None)
        b.settimeout(None)
        sel = selectors.DefaultSelector()
        try:
            sel.register(a, selectors.EVENT_READ)
            sel.register(b, selectors.EVENT_READ)
            while True:
                ready = sel.select(300)
                if not ready:
                    return
                for key, _ in ready:
                    s = key.fileobj
                    assert isinstance(s, socket.socket)
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        finally:
            sel.close()
            with contextlib.suppress(OSError):
                b.close()


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


