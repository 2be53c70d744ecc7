"""The Envoy CONNECT proxy on oauth2-proxy's path (authproxy_local/mesh/connect_proxy.py), run by
the real Envoy: it tunnels the allowed public hosts on 443 and nothing else."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from authproxy_local import install
from authproxy_local.mesh.connect_proxy import EnvoyConnectProxy, bootstrap

CI = os.environ.get("CI") == "true"


def test_only_the_allowed_authorities_reach_the_tunnel_route() -> None:
    boot = bootstrap(("127.0.0.1", 1), ("127.0.0.1", 2), ["Auth.x.test", "kc.x.test"], ("127.9.9.9", 443))
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    allowed, refused = hcm["route_config"]["virtual_hosts"]
    assert allowed["domains"] == ["auth.x.test:443", "kc.x.test:443"]  # exact, port included: no wildcard
    assert [r["route"]["cluster"] for vh in (allowed, refused) for r in vh["routes"] if "route" in r] == ["public"]
    assert refused["domains"] == ["*"] and all(r["direct_response"]["status"] == 403 for r in refused["routes"])


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EnvoyConnectProxy, socket.socket]]:
    try:
        install.ensure("envoy")
    except install.InstallError as e:
        if CI:
            pytest.fail(f"CI=true and envoy cannot be installed: {e}")
        pytest.skip(f"envoy is not installed and could not be installed: {e}")
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(512)
    directory: Path = tmp_path_factory.mktemp("connect-proxy")
    p = EnvoyConnectProxy(["Auth.x.test", "kc.x.test"], target.getsockname(), directory).start()
    try:
        yield p, target
    finally:
        p.stop()
        target.close()


def _ask(p: EnvoyConnectProxy, line: str) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(p.address, timeout=10)
    s.sendall(line.encode())
    return s, s.recv(200)


@pytest.mark.parametrize("authority", ["example.com:443", "auth.x.test:22", "auth.x.test.evil:443",
                                       "evil.auth.x.test:443", "127.0.0.1:443"])
def test_other_hosts_and_ports_are_refused(proxy, authority: str) -> None:
    p, _ = proxy
    s, answer = _ask(p, f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n")
    s.close()
    assert answer.startswith(b"HTTP/1.1 403"), answer


def test_plain_proxied_requests_are_refused(proxy) -> None:
    p, _ = proxy
    s, answer = _ask(p, "GET http://auth.x.test/ HTTP/1.1\r\nHost: auth.x.test\r\n\r\n")
    s.close()
    assert answer.startswith(b"HTTP/1.1 403"), answer


def test_allowed_hosts_tunnel_both_ways_many_at_once(proxy) -> None:
    """300 tunnels open at the same time (a loaded run's refreshes), each carrying its own bytes."""
    p, target = proxy
    clients, upstreams = [], []
    try:
        for i in range(300):
            host = "KC.x.test" if i % 2 else "auth.x.test"
            s, answer = _ask(p, f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n")
            clients.append(s)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            s.sendall(f"ping{i:04d}".encode())
            u, _ = target.accept()
            u.settimeout(10)
            upstreams.append(u)
        got = {u.recv(8) for u in upstreams}
        assert got == {f"ping{i:04d}".encode() for i in range(300)}
        for u in upstreams:
            u.sendall(b"pong")
        assert all(s.recv(4) == b"pong" for s in clients)
    finally:
        for s in clients + upstreams:
            s.close()
