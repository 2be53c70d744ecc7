"""A tiny echo app: answers every request with the request it received, as JSON.

It stands in for a protected application in the live harness, so tests can see exactly which
headers (identity headers, the JWT) reached the app after the gateway and the sidecar.

    python -m authproxy_local.harness.echo --port 8080 [--name echo]

Response body::

    {"app": "echo", "pod": "echo-harness", "method": "GET", "path": "/x?y=1",
     "headers": {"x-auth-request-user": "..."}, "body_bytes": 0}

A request's ``x-echo-set-cookie`` headers come back as ``Set-Cookie`` headers.

Header names are lower-cased; a header sent several times is joined with ", ".
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SET_COOKIE_REQUEST = "x-echo-set-cookie"
"""A request header the echo app turns into a ``Set-Cookie`` of its response (once per value), so
tests can play an app that sets cookies (e.g. oauth2-proxy's, which the gateway must remove)."""


def describe(app: str, method: str, path: str, headers: list[tuple[str, str]], body_bytes: int,
             pod: str = "") -> dict[str, Any]:
    """The JSON document the echo app answers with (pure)."""
    merged: dict[str, str] = {}
    for k, v in headers:
        key = k.lower()
        merged[key] = f"{merged[key]}, {v}" if key in merged else v
    return {"app": app, "pod": pod or app, "method": method, "path": path, "headers": merged,
            "body_bytes": body_bytes}


class _Handler(BaseHTTPRequestHandler):
    server_version = "authproxy-echo"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        doc = describe(self.server.app_name, self.command, self.path, list(self.headers.items()), length,  # type: ignore[attr-defined]
                       self.server.pod_name)  # type: ignore[attr-defined]
        self.server.requests += 1  # type: ignore[attr-defined]
        body = json.dumps(doc, sort_keys=True).encode()
        self.send_response(200)
        for value in self.headers.get_all(SET_COOKIE_REQUEST) or []:
            self.send_header("Set-Cookie", value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: requests carry tokens and cookies


class EchoServer:
    """An echo app on a background thread (used by the harness)."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0, pod: str = "") -> None:
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.app_name = name  # type: ignore[attr-defined]
        self.httpd.pod_name = pod or name  # type: ignore[attr-defined]
        self.httpd.requests = 0  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name=f"echo-{name}", daemon=True)

    @property
    def requests(self) -> int:
        """Requests answered so far (the tests check that a pod got none)."""
        return int(self.httpd.requests)  # type: ignore[attr-defined]

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> EchoServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m authproxy_local.harness.echo", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", default="echo")
    a = p.parse_args(argv)
    server = EchoServer(a.name, a.host, a.port)
    print(f"echo app {a.name!r} on http://{a.host}:{server.address[1]}/", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
