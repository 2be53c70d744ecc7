"""The CONNECT proxy on oauth2-proxy's path to the public hosts, played by a real Envoy.

oauth2-proxy reaches Keycloak's public URL (and the gateway's other public hosts) through
``HTTPS_PROXY``, as a pod behind an egress proxy would. Under load (hundreds of token refreshes,
a thread per tunnel in the harness's Python proxy at load 30+) the hand-written proxy was the slow
link; an Envoy listener terminating HTTP CONNECT is what such a path runs in a cluster. It tunnels
``<allowed host>:443`` to the gateway's HTTPS listener and answers 403 to anything else (another
host, another port, a plain proxied request). TLS stays end to end (oauth2-proxy <-> gateway).

:func:`bootstrap` is the pure spec; :class:`EnvoyConnectProxy` runs it.

Imports: :mod:`authproxy_local.core`, :mod:`.envoy`, :mod:`.envoy_config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from authproxy_local.core.processes import Process, free_port, wait_for

from . import envoy
from .envoy_config import HCM, HCM_TYPE, ROUTER, ROUTER_TYPE

Addr = tuple[str, int]

REFUSED = {"status": 403}
_NO_LIMIT = {"max_connections": 1_000_000, "max_pending_requests": 1_000_000,
             "max_requests": 1_000_000}


def bootstrap(listen: Addr, admin: Addr, allowed_hosts: Sequence[str], target: Addr) -> dict[str, Any]:
    """An Envoy that accepts ``CONNECT <host>:443`` for ``allowed_hosts`` only (exact authority,
    port included: Envoy matches the virtual host on the whole ``:authority``), tunnels it to
    ``target`` and refuses every other request with 403 (the catch-all virtual host)."""
    tunnel = {"match": {"connect_matcher": {}},
              # 0s: a tunnel lives as long as the client keeps it (the route's 15-s default would cut it)
              "route": {"cluster": "public", "timeout": "0s",
                        "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}}
    refuse = [{"match": {"connect_matcher": {}}, "direct_response": REFUSED},
              {"match": {"prefix": "/"}, "direct_response": REFUSED}]
    hcm = {
        "@type": HCM_TYPE, "stat_prefix": "connect",
        "upgrade_configs": [{"upgrade_type": "CONNECT"}],
        "http_filters": [{"name": ROUTER, "typed_config": {"@type": ROUTER_TYPE}}],
        "access_log": [{"name": "envoy.access_loggers.stdout", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"text_format_source": {"inline_string":
                "[%START_TIME%] %REQ(:METHOD)% %REQ(:AUTHORITY)% %RESPONSE_CODE% %RESPONSE_FLAGS% "
                "%DURATION%ms\n"}}},
            # tunnels are many (every refresh of every replica); log what it refuses or fails
            "filter": {"status_code_filter": {"comparison": {"op": "GE", "value": {
                "default_value": 300, "runtime_key": "connect_proxy.log_min_status"}}}}}],
        "route_config": {"name": "connect", "virtual_hosts": [
            {"name": "allowed", "domains": sorted({f"{h.lower()}:443" for h in allowed_hosts}),
             "routes": [tunnel, {"match": {"prefix": "/"}, "direct_response": REFUSED}]},
            {"name": "refused", "domains": ["*"], "routes": refuse},
        ]},
    }
    return {
        "admin": {"address": {"socket_address": {"address": admin[0], "port_value": admin[1]}}},
        "static_resources": {
            "listeners": [{"name": "connect",
                           "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                           "filter_chains": [{"filters": [{"name": HCM, "typed_config": hcm}]}]}],
            "clusters": [{"name": "public", "type": "STATIC", "connect_timeout": "5s",
                          "circuit_breakers": {"thresholds": [_NO_LIMIT]},
                          "load_assignment": {"cluster_name": "public", "endpoints": [{"lb_endpoints": [
                              {"endpoint": {"address": {"socket_address": {
                                  "address": target[0], "port_value": target[1]}}}}]}]}}],
        },
    }


class EnvoyConnectProxy:
    """:func:`bootstrap` run by Envoy on a free loopback port (log ``<directory>/<name>.log``)."""

    def __init__(self, allowed_hosts: Sequence[str], target: Addr, directory: Path,
                 name: str = "connect-proxy") -> None:
        self.address: Addr = ("127.0.0.1", free_port())
        self.admin: Addr = ("127.0.0.1", free_port())
        self.boot = bootstrap(self.address, self.admin, allowed_hosts, target)
        self.directory = directory
        self.name = name
        self.process: Process | None = None

    def start(self, timeout: float = 60) -> EnvoyConnectProxy:
        self.process = envoy.start(self.name, self.boot, self.directory, what="CONNECT proxy",
                                   args=["--concurrency", "1"])
        wait_for(self.name, lambda: envoy.ready(self.admin, [self.address]), timeout, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
