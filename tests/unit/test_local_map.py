"""The harness's pure parts: the cluster -> local address mapping, the
CONNECT proxy's refusal of unknown hosts, in-process name resolution, the echo document."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from authproxy_local.core import local_map, net
from authproxy_local.harness.echo import describe

EP = local_map.LocalEndpoints(
    gateway_ip="127.9.8.7",
    oauth2_proxy=("127.0.0.1", 41000), oauth2_proxy_metrics=("127.0.0.1", 41001),
    redis=("127.0.0.1", 41002), sentinels=[("127.0.0.1", 41003), ("127.0.0.1", 41004)],
    sidecars={"echo": ("127.0.0.1", 41005)},
)


def test_only_cluster_addresses_are_rewritten() -> None:
    args = [
        "--provider=oidc",
        "--oidc-issuer-url=https://keycloak.authproxy.test/realms/authproxy",
        "--redis-connection-url=redis://authproxy-redis.authproxy.svc:6379",
        "--http-address=0.0.0.0:4180",
        "--metrics-address=0.0.0.0:44180",
        "--cookie-domain=.authproxy.test",
    ]
    out = local_map.rewrite_proxy_args(args, EP)
    assert out == [
        "--provider=oidc",
        "--oidc-issuer-url=https://keycloak.authproxy.test/realms/authproxy",
        "--redis-connection-url=redis://127.0.0.1:41002",
        "--http-address=127.0.0.1:41000",
        "--metrics-address=127.0.0.1:41001",
        "--cookie-domain=.authproxy.test",
    ]


def test_sentinel_urls_map_in_order_and_keep_userinfo() -> None:
    out = local_map.rewrite_proxy_args([
        "--redis-use-sentinel=true",
        "--redis-sentinel-connection-urls=redis://a.ns.svc:26379",
        "--redis-sentinel-connection-urls=redis://user@b.ns.svc:26379",
    ], EP)
    assert out[1:] == ["--redis-sentinel-connection-urls=redis://127.0.0.1:41003",
                       "--redis-sentinel-connection-urls=redis://user@127.0.0.1:41004"]


def test_unmapped_cluster_address_fails_clearly() -> None:
    with pytest.raises(local_map.MappingError, match="backend-logout-url"):
        local_map.rewrite_proxy_args(["--backend-logout-url=http://kc.auth.svc.cluster.local/x"], EP)
    with pytest.raises(local_map.MappingError, match="not --name=value"):
        local_map.rewrite_proxy_args(["--provider", "oidc"], EP)


def test_configmap_volume_files_are_what_the_kubelet_writes() -> None:
    vol: dict[str, Any] = {"name": "keycloak-ca", "configMap": {"name": "oauth2-proxy-keycloak-ca"}}
    assert local_map.configmap_volume_files(vol, {"ca.crt": "PEM", "other": "x"}) == {"ca.crt": "PEM", "other": "x"}
    vol["configMap"]["items"] = [{"key": "ca.crt", "path": "certs/ca.pem"}]
    assert local_map.configmap_volume_files(vol, {"ca.crt": "PEM", "other": "x"}) == {"certs/ca.pem": "PEM"}
    with pytest.raises(local_map.MappingError, match=r"has no key 'ca\.crt'"):
        local_map.configmap_volume_files(vol, {"other": "x"})
    with pytest.raises(local_map.MappingError, match="does not exist"):
        local_map.configmap_volume_files(vol, None)
    assert local_map.configmap_volume_files({**vol, "configMap": {**vol["configMap"], "optional": True}}, None) == {}
    with pytest.raises(local_map.MappingError, match="leaves the volume"):
        local_map.configmap_volume_files(
            {"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "../k"}]}}, {"k": "x"})
    with pytest.raises(local_map.MappingError, match="only configMap"):
        local_map.configmap_volume_files({"name": "s", "secret": {"secretName": "s"}}, {})


def test_paths_under_a_mount_point_at_the_runs_copy() -> None:
    args = ["--provider-ca-file=/etc/oauth2-proxy/keycloak-ca/ca.crt",
            "--cookie-domain=/etc/oauth2-proxy/keycloak-cax", "--http-address=0.0.0.0:4180"]
    out = local_map.rewrite_proxy_args(args, EP, {"/etc/oauth2-proxy/keycloak-ca": "/run/x/keycloak-ca"})
    assert out == ["--provider-ca-file=/run/x/keycloak-ca/ca.crt", "--cookie-domain=/etc/oauth2-proxy/keycloak-cax",
                   "--http-address=127.0.0.1:41000"]
    assert local_map.rewrite_proxy_args(args[:1], EP) == args[:1]


def test_service_map() -> None:
    m = local_map.service_map(("oauth2-proxy", "authproxy", [4180, 44180]),
                              [("echo", "echo", "demo", 8080)], EP)
    assert m.resolve("oauth2-proxy.authproxy.svc.cluster.local", 4180) == EP.oauth2_proxy
    assert m.resolve("oauth2-proxy.authproxy.svc", 44180) == EP.oauth2_proxy_metrics
    assert m.resolve("echo.demo.svc.cluster.local", 8080) == EP.sidecars["echo"]
    with pytest.raises(local_map.MappingError, match="no local counterpart"):
        m.resolve("echo.demo.svc.cluster.local", 9090)
    with pytest.raises(local_map.MappingError):
        m.resolve("example.com", 443)


def test_resolve_env() -> None:
    env: list[dict[str, Any]] = [
        {"name": "A", "value": "1"},
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k"}}},
        {"name": "GOMAXPROCS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}},
    ]
    out = local_map.resolve_env(env, lambda n, k: f"{n}/{k}", {"limits": {"cpu": "1500m"}})
    assert out == {"A": "1", "S": "sec/k", "GOMAXPROCS": "2"}
    with pytest.raises(local_map.MappingError):
        local_map.resolve_env([{"name": "X", "valueFrom": {"configMapKeyRef": {}}}], lambda n, k: "")
    assert local_map.cpu_limit_procs("250m") == 1 and local_map.cpu_limit_procs("2") == 2


def test_public_hosts_and_resolver_rules() -> None:
    hosts = local_map.public_hosts(["auth.x.test", "*.x.test", "a.x.test"], "kc.x.test")
    assert hosts == ["a.x.test", "auth.x.test", "kc.x.test"]
    assert local_map.host_resolver_rules(hosts, "127.1.2.3") == (
        "MAP a.x.test 127.1.2.3, MAP auth.x.test 127.1.2.3, MAP kc.x.test 127.1.2.3")


# ---- CONNECT proxy and resolution -----------------------------------------------------------------


def test_connect_proxy_refuses_unknown_hosts() -> None:
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(1)
    proxy = net.ConnectProxy(["auth.x.test"], target.getsockname()).start()
    try:
        def connect(host: str) -> bytes:
            with socket.create_connection(proxy.address, timeout=5) as s:
                s.sendall(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                return s.recv(100)
        assert connect("auth.x.test:443").startswith(b"HTTP/1.1 200")
        assert connect("example.com:443").startswith(b"HTTP/1.1 403")
        assert connect("auth.x.test:22").startswith(b"HTTP/1.1 403")
        assert proxy.refused == ["example.com:443", "auth.x.test:22"]
    finally:
        proxy.stop()
        target.close()


def test_connect_proxy_pipes_past_1024_open_files() -> None:
    """A loaded harness run holds more than FD_SETSIZE files; select() failed there ("filedescriptor
    out of range") and cut oauth2-proxy off from Keycloak in the soak."""
    import os
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"the open-file limit ({soft}) is too low to hold 1100 files")
    ballast = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(1)
    proxy = net.ConnectProxy(["auth.x.test"], target.getsockname()).start()
    try:
        with socket.create_connection(proxy.address, timeout=5) as s:
            s.sendall(b"CONNECT auth.x.test:443 HTTP/1.1\r\nHost: auth.x.test\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
            upstream, _ = target.accept()
            with upstream:
                assert upstream.fileno() > 1024
                s.sendall(b"ping")
                assert upstream.recv(4) == b"ping"
                upstream.sendall(b"pong")
                assert s.recv(4) == b"pong"
    finally:
        proxy.stop()
        target.close()
        for fd in ballast:
            os.close(fd)


def test_resolving_maps_only_the_given_hosts() -> None:
    with net.resolving({"app.x.test": "127.3.4.5"}):
        assert socket.getaddrinfo("app.x.test", 443)[0][4][0] == "127.3.4.5"
        assert socket.getaddrinfo("APP.X.TEST.", 443)[0][4][0] == "127.3.4.5"
        assert socket.getaddrinfo("localhost", 80)[0][4][0] in ("127.0.0.1", "::1")
    assert socket.getaddrinfo is net._ORIG_GETADDRINFO


def test_echo_document() -> None:
    doc = describe("echo", "GET", "/x?y=1", [("X-A", "1"), ("x-a", "2"), ("Host", "h")], 0)
    assert doc == {"app": "echo", "pod": "echo", "method": "GET", "path": "/x?y=1",
                   "headers": {"x-a": "1, 2", "host": "h"}, "body_bytes": 0}
    assert describe("admin", "GET", "/", [], 0, pod="admin-other-labels-harness")["pod"] == (
        "admin-other-labels-harness")


def test_echo_app_sets_the_cookies_it_is_asked_to_and_counts_requests() -> None:
    import http.client

    from authproxy_local.harness.echo import SET_COOKIE_REQUEST, EchoServer

    e = EchoServer("echo", pod="echo-1").start()
    try:
        c = http.client.HTTPConnection(*e.address, timeout=5)
        c.putrequest("GET", "/")
        for v in ("a=1; Path=/", "_authproxy=x; Domain=.t"):
            c.putheader(SET_COOKIE_REQUEST, v)
        c.endheaders()
        r = c.getresponse()
        r.read()
        assert r.headers.get_all("Set-Cookie") == ["a=1; Path=/", "_authproxy=x; Domain=.t"]
        assert e.requests == 1
    finally:
        e.stop()


def test_free_port_is_below_the_ephemeral_range_and_bindable():
    """Ports the harness picks and binds later stay out of the range the kernel hands out for
    port 0, so no process binding port 0 in between can take them."""
    import socket

    from authproxy_local.core.processes import _ephemeral_range, free_port

    low, _ = _ephemeral_range()
    ports = {free_port("127.0.0.1") for _ in range(20)}
    assert all(10000 <= p < low for p in ports)
    assert len(ports) > 1  # random, not one fixed port
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.pop()))
