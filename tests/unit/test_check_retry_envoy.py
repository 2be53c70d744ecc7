"""The gateway's retry of the ext_authz check (components/gateway_traffic.py) on a real Envoy: the
stack's own ext_authz filter (envoy-filter mode, prod stack: 2 retries) in front of two check
replicas on loopback. A check slower than Envoy's default retry back-off (a token refresh at
Keycloak) is answered once, not cut short and sent again; a replica that drops the connection
without answering is retried on the other one."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from authproxy_local.core.processes import free_port
from components.authz import (
    EXT_AUTHZ_FILTER,
    HCM_FILTER,
    ROUTER_FILTER,
    ext_authz_envoy_filter_spec,
)
from components.stack import authz_args
from tests.envoy_proc import running_envoy
from tests.unit.stacks import load_stack

SLOW_CHECK_SECONDS = 0.8
"""A check this slow (a refresh at a busy Keycloak) stays well inside the 2-s check timeout."""


class _Replica(BaseHTTPRequestHandler):
    """oauth2-proxy's check endpoint: answers 200 after ``delay`` seconds, or (``drop``) closes
    the connection without answering, as a replica that crashed mid-request does."""

    delay: ClassVar[float] = 0.0
    drop: ClassVar[bool] = False
    attempts: ClassVar[list[float]]

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).attempts.append(time.monotonic())
        if type(self).drop:
            self.close_connection = True
            self.connection.close()
            return
        time.sleep(type(self).delay)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _replica_class(name: str) -> type[_Replica]:
    return type(name, (_Replica,), {"attempts": []})


def _ext_authz_typed_config() -> dict[str, Any]:
    """The typed config of the stack's own ext_authz filter (prod, envoy-filter mode), pointed at
    the test's ``check`` cluster."""
    args = authz_args(load_stack("prod", istio={"extAuthzMode": "envoy-filter"}))
    spec = ext_authz_envoy_filter_spec(args)
    (insert,) = [p for p in spec["configPatches"] if p["patch"]["operation"] == "INSERT_FIRST"
                 and p["patch"]["value"]["name"] == EXT_AUTHZ_FILTER]
    typed = dict(insert["patch"]["value"]["typed_config"])
    typed["http_service"] = {**typed["http_service"],
                             "server_uri": {**typed["http_service"]["server_uri"], "cluster": "check"}}
    typed.pop("filter_enabled_metadata", None)  # istiod's shadow-RBAC gate: not on this listener
    return typed


def _bootstrap(port: int, replicas: list[int]) -> dict[str, Any]:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "gateway",
        "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "app"}}}]}]},
        "http_filters": [
            {"name": EXT_AUTHZ_FILTER, "typed_config": _ext_authz_typed_config()},
            {"name": ROUTER_FILTER, "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    check = {"name": "check", "type": "STATIC", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
             "load_assignment": {"cluster_name": "check", "endpoints": [{"lb_endpoints": [
                 {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
                 for p in replicas]}]}}
    return {"static_resources": {
        "listeners": [{"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                       "filter_chains": [{"filters": [{"name": HCM_FILTER, "typed_config": hcm}]}]}],
        "clusters": [check]}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[type[_Replica]]]]:
    classes = [_replica_class("ReplicaA"), _replica_class("ReplicaB")]
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), c) for c in classes]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    port = free_port()
    try:
        with running_envoy(_bootstrap(port, [s.server_address[1] for s in servers]),
                           tmp_path_factory.mktemp("check-retry"), port, lambda: _get(port)):
            yield port, classes
    finally:
        for s in servers:
            s.shutdown()


def _get(port: int) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/", headers={"Host": "app.authproxy.test"})
        return c.getresponse().status
    finally:
        c.close()


def _reset(classes: list[type[_Replica]], delay: float = 0.0, drop: tuple[bool, bool] = (False, False)) -> None:
    for cls, d in zip(classes, drop, strict=True):
        cls.attempts.clear()
        cls.delay, cls.drop = delay, d


def test_a_slow_check_is_answered_once_and_not_sent_again(gateway) -> None:
    """Envoy makes the retry back-off's ``max_interval`` each attempt's timeout: at the former
    0.25 s a check slower than that was cut off and sent to the other replicas (where a real
    oauth2-proxy waits for the refresh lock the first one still holds), and answered 503."""
    port, classes = gateway
    _reset(classes, delay=SLOW_CHECK_SECONDS)
    t0 = time.monotonic()
    status = _get(port)
    took = time.monotonic() - t0
    attempts = sum(len(c.attempts) for c in classes)
    assert (status, attempts) == (200, 1), f"{status} after {took:.2f} s, {attempts} attempts"
    assert took >= SLOW_CHECK_SECONDS


def test_a_replica_that_drops_the_check_is_retried_on_the_other(gateway) -> None:
    port, classes = gateway
    _reset(classes, drop=(True, False))
    statuses = [_get(port) for _ in range(6)]
    assert statuses == [200] * 6
    assert classes[0].attempts, "round robin never chose the replica that drops checks"
    assert len(classes[1].attempts) == 6  # every check answered there, the dropped ones on retry
