"""The one mapping from the render's cluster addresses to the local harness's addresses.

The live harness runs the rendered stack on this machine. Everything it runs gets exactly the
rendered settings, except addresses that only exist inside a cluster. This module is the only place
that rewrites them, and it rewrites nothing else:

=================================  =====================================================
in the render (cluster)            locally
=================================  =====================================================
public hosts: the auth host,       the gateway Envoy on a per-run loopback address
every app host, the Keycloak host  ``127.x.y.z`` ports 443 (HTTPS) and 80 (HTTP). Names
(``https://keycloak.authproxy.     resolve there only inside the harness: the test process
test``), port 443/80               patches ``socket.getaddrinfo``, Chromium gets
                                   ``--host-resolver-rules``, oauth2-proxy (Go) goes through a
                                   local CONNECT proxy (``HTTPS_PROXY``) that only knows these
                                   hosts. Keycloak is *outside* the cluster in the render, so
                                   the gateway also routes the Keycloak host to the local
                                   Keycloak (its one addition to the rendered routes).
the Keycloak host's certificate    a certificate of its own (the gateway's does not name it),
                                   so browsers never coalesce Keycloak requests onto a gateway
                                   HTTP/2 connection (one address serves every host locally)
``jwksUri`` (Keycloak host)        Envoy's ``jwt_authn`` fetches it from the local Keycloak's
                                   HTTP listener directly (istiod would fetch it and inline it)
oauth2-proxy listen addresses      ``--http-address`` / ``--metrics-address`` ->
(``0.0.0.0:4180``, ``:44180``)     ``<run IP>:<free port>``, one pair per replica (pod)
the oauth2-proxy Service           every replica's ``<run IP>:<http port>``: the endpoints of
(``oauth2-proxy.authproxy.svc``)   the ext_authz cluster, as istiod translates the Service's
                                   EndpointSlice (ready / terminating)
Redis (``redis://HOST:6379`` or    ``redis://<run IP>:<free port>`` (sentinels likewise)
sentinel URLs)
an app's Service                   the listener that plays the app's sidecar
(``echo.demo.svc:8080``)           (``<run IP>:<free port>``), which forwards to the echo app
Secret references (secretKeyRef)   the values the harness generated for this run
files mounted from a ConfigMap      the same files, as the kubelet writes them, in the run's
(``volumeMounts``, e.g. Keycloak's  directory; a flag naming a path under the mount path names
CA for ``--provider-ca-file``)      that path under the run's copy
GOMAXPROCS from limits.cpu         the container's CPU limit, rounded up (what the kubelet
                                   would expose)
=================================  =====================================================

``<run IP>`` is the run's own loopback address (the gateway's): every local listener sits there,
so no other process on the machine takes a port between allocation and bind.

All functions here are pure; the harness feeds them the ports it allocated.

Imports: the standard library only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

Addr = tuple[str, int]

CLUSTER_SUFFIXES = (".svc", ".svc.cluster.local")


class MappingError(ValueError):
    """A cluster address the harness has no local counterpart for."""


@dataclass
class ProxyPod:
    """One oauth2-proxy replica the harness runs: a pod of the Deployment, an endpoint of the
    Service (its EndpointSlice conditions are what istiod translates)."""

    name: str
    pod_ip: str
    """The pod IP istiod sees (never routable; the adapter maps it to ``http``)."""
    http: Addr
    metrics: Addr
    ready: bool = False
    """The kubelet's readiness verdict (the rendered readinessProbe)."""
    terminating: bool = False
    """Deleted: the EndpointSlice says ``terminating`` (istiod drops the endpoint)."""

    @property
    def conditions(self) -> dict[str, bool]:
        """The EndpointSlice endpoint conditions Kubernetes writes for the pod: a terminating pod
        is not ready but still serving (during its preStop hook)."""
        if self.terminating:
            return {"ready": False, "serving": True, "terminating": True}
        return {"ready": self.ready, "serving": self.ready, "terminating": False}


@dataclass
class LocalEndpoints:
    """Where each piece of the rendered stack listens on this machine."""

    gateway_ip: str
    """Per-run loopback address of the gateway Envoy (127.x.y.z)."""
    https_port: int = 443
    http_port: int = 80
    keycloak: Addr = ("127.0.0.1", 0)
    """Keycloak's plain-HTTP listener (the gateway terminates TLS for the Keycloak host)."""
    keycloak_https: Addr = ("127.0.0.1", 0)
    """Keycloak's HTTPS listener (the Keycloak host's certificate): where istiod fetches the JWKS."""
    oauth2_proxy: Addr = ("127.0.0.1", 0)
    oauth2_proxy_metrics: Addr = ("127.0.0.1", 0)
    proxy_pods: list[ProxyPod] = field(default_factory=list)
    """The oauth2-proxy replicas, in start order (empty: one pod at ``oauth2_proxy``)."""
    redis: Addr = ("127.0.0.1", 0)
    sentinels: list[Addr] = field(default_factory=list)
    apps: dict[str, Addr] = field(default_factory=dict)
    """App name -> the echo app standing in for its pods."""
    sidecars: dict[str, Addr] = field(default_factory=dict)
    """App name -> the Envoy listener that plays the app's sidecar (its Service address)."""
    pods: dict[str, Addr] = field(default_factory=dict)
    """Pod name -> the echo app standing in for that pod (every app pod the harness models)."""
    pod_sidecars: dict[str, Addr] = field(default_factory=dict)
    """Pod name -> the listener of that pod's sidecar (sidecar-injected pods)."""
    mesh_ca_file: str = ""
    """The mesh's CA (istiod's role): SDS ``ROOTCA`` of every proxy."""
    identities: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Workload identity (``gateway``, an app's service account) -> (certificate, key) files with
    its SPIFFE URI: SDS ``default`` of the proxies of that identity."""
    envoy_admin: Addr = ("127.0.0.1", 0)
    misconfigured_pods: bool = True
    """The exposed app's Service also selects a pod with other labels and one without a sidecar
    (mesh.workloads.app_pods); off: one pod per app, as in a cluster the preflight accepts."""
    connect_proxy: Addr = ("127.0.0.1", 0)
    """The CONNECT proxy oauth2-proxy uses to reach the public hosts."""
    ca_file: str = ""
    cert_file: str = ""
    """The gateway's certificate (every gateway host)."""
    key_file: str = ""
    keycloak_cert_file: str = ""
    """A separate certificate for the Keycloak host (see pki.make_tls)."""
    keycloak_key_file: str = ""
    waypoints: dict[str, Addr] = field(default_factory=dict)
    """Ambient runs: waypoint proxy name -> where the gateway reaches its HBONE port (a relay in
    this namespace into the waypoint's pod namespace, on port 15008 as istiod's tunnel expects)."""

    @property
    def gateway_https(self) -> Addr:
        return (self.gateway_ip, self.https_port)


def is_cluster_host(host: str) -> bool:
    return any(host.endswith(s) for s in CLUSTER_SUFFIXES)


def service_key(host: str) -> tuple[str, str]:
    """'echo.demo.svc.cluster.local' -> ('echo', 'demo'); 'echo.demo.svc' likewise."""
    for suffix in sorted(CLUSTER_SUFFIXES, key=len, reverse=True):
        if host.endswith(suffix):
            parts = host[: -len(suffix)].split(".")
            if len(parts) == 2:
                return parts[0], parts[1]
    raise MappingError(f"{host!r} is not a <service>.<namespace>.svc[.cluster.local] name")


@dataclass(frozen=True)
class ServiceMap:
    """Cluster Services the render refers to -> local addresses."""

    services: Mapping[tuple[str, str, int], Addr]
    """(service, namespace, port) -> local address."""

    def resolve(self, host: str, port: int) -> Addr:
        key = (*service_key(host), port)
        if key not in self.services:
            known = ", ".join(f"{s}.{n}.svc:{p}" for s, n, p in sorted(self.services))
            raise MappingError(f"no local counterpart for {host}:{port}; known: {known}")
        return self.services[key]


def service_map(
    oauth2_proxy_service: tuple[str, str, Iterable[int]],
    apps: Iterable[tuple[str, str, str, int]],
    endpoints: LocalEndpoints,
) -> ServiceMap:
    """Build the Service table: oauth2-proxy's Service (name, namespace, ports: its http port
    maps to oauth2-proxy's HTTP listener, any other port to its metrics listener) and each app's
    Service (app name, service, namespace, port) -> that app's sidecar listener."""
    table: dict[tuple[str, str, int], Addr] = {}
    name, ns, ports = oauth2_proxy_service
    ports = list(ports)
    for i, p in enumerate(ports):
        table[(name, ns, p)] = endpoints.oauth2_proxy if i == 0 else endpoints.oauth2_proxy_metrics
    for app, svc, svc_ns, port in apps:
        table[(svc, svc_ns, port)] = endpoints.sidecars[app]
    return ServiceMap(table)


# --------------------------------------------------------------------------------------------
# oauth2-proxy's command line and environment
# --------------------------------------------------------------------------------------------

_ADDRESS_FLAGS = {"http-address": "oauth2_proxy", "metrics-address": "oauth2_proxy_metrics"}
_REDIS_URL_FLAGS = ("redis-connection-url",)
_SENTINEL_URL_FLAGS = ("redis-sentinel-connection-urls",)
_FLAG_RE = re.compile(r"^--([a-z0-9-]+)=(.*)$", re.S)


def _replace_netloc(url: str, addr: Addr) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{userinfo}{addr[0]}:{addr[1]}", parts.path, parts.query, parts.fragment))


def configmap_volume_files(volume: Mapping[str, Any], data: Mapping[str, str] | None) -> dict[str, str]:
    """The files the kubelet writes for a ``configMap`` volume: every key of the ConfigMap, or
    with ``items`` only those, each at its ``path``. A missing ConfigMap or key fails the pod
    (as the kubelet does) unless the volume is ``optional``."""
    cm = volume.get("configMap")
    if cm is None:
        raise MappingError(f"volume {volume.get('name')!r}: only configMap volumes are supported")
    optional = bool(cm.get("optional"))
    if data is None:
        if optional:
            return {}
        raise MappingError(f"volume {volume['name']!r}: ConfigMap {cm['name']!r} does not exist")
    items = cm.get("items")
    if items is None:
        return dict(data)
    out: dict[str, str] = {}
    for it in items:
        if it["key"] not in data:
            if optional:
                continue
            raise MappingError(f"volume {volume['name']!r}: ConfigMap {cm['name']!r} has no key {it['key']!r}")
        if it["path"].startswith("/") or ".." in it["path"].split("/"):
            raise MappingError(f"volume {volume['name']!r}: item path {it['path']!r} leaves the volume")
        out[it["path"]] = data[it["key"]]
    return out


def _mounted(value: str, mounts: Mapping[str, str]) -> str | None:
    """``value`` as a path under the local copy of the mount it lies in, else None."""
    for mount_path, local in sorted(mounts.items(), key=lambda m: len(m[0]), reverse=True):
        root = mount_path.rstrip("/")
        if value == root or value.startswith(root + "/"):
            return local.rstrip("/") + value[len(root):]
    return None


def rewrite_proxy_args(args: Iterable[str], endpoints: LocalEndpoints,
                       mounts: Mapping[str, str] | None = None, pod: ProxyPod | None = None) -> list[str]:
    """oauth2-proxy's rendered args with only the cluster addresses replaced:
    listen addresses -> the run's ports (``pod``'s, for one replica of several), Redis (and
    sentinel) URLs -> the local Redis (sentinels), and a path under a volume's mount path
    (``mounts``: mount path -> the run's copy of the volume) -> the same path in the copy.
    Every other flag is returned unchanged, in order. Flags must be ``--name=value``."""
    listen = {"http-address": pod.http, "metrics-address": pod.metrics} if pod else {
        flag: getattr(endpoints, attr) for flag, attr in _ADDRESS_FLAGS.items()}
    out: list[str] = []
    sentinel_i = 0
    for a in args:
        m = _FLAG_RE.match(a)
        if not m:
            raise MappingError(f"oauth2-proxy arg {a!r} is not --name=value; cannot map it")
        name, value = m.groups()
        if name in _ADDRESS_FLAGS:
            host, port = listen[name]
            out.append(f"--{name}={host}:{port}")
        elif name in _REDIS_URL_FLAGS:
            out.append(f"--{name}={_replace_netloc(value, endpoints.redis)}")
        elif name in _SENTINEL_URL_FLAGS:
            if sentinel_i >= len(endpoints.sentinels):
                raise MappingError("the render names more sentinels than the harness started")
            out.append(f"--{name}={_replace_netloc(value, endpoints.sentinels[sentinel_i])}")
            sentinel_i += 1
        elif mounts and (local := _mounted(value, mounts)) is not None:
            out.append(f"--{name}={local}")
        else:
            if any(is_cluster_host(h) for h in re.findall(r"[a-z0-9.-]+", value)):
                raise MappingError(f"--{name} names a cluster address ({value}); add a rule to local_map")
            out.append(a)
    return out


def cpu_limit_procs(quantity: str | None) -> int:
    """What a ``resourceFieldRef`` on limits.cpu with divisor 1 yields: the limit rounded up."""
    if not quantity:
        raise MappingError("GOMAXPROCS refers to limits.cpu but the container has no CPU limit")
    q = str(quantity)
    value = float(q[:-1]) / 1000 if q.endswith("m") else float(q)
    return max(1, math.ceil(value))


def resolve_env(
    env: Iterable[Mapping[str, Any]],
    secret_data: Callable[[str, str], str],
    resources: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """A container's env list -> a plain environment: ``value`` as is, ``secretKeyRef`` through
    ``secret_data(secret_name, key)`` (the rendered Secret with the run's values), and
    ``resourceFieldRef`` limits.cpu through :func:`cpu_limit_procs`."""
    out: dict[str, str] = {}
    for e in env:
        name = e["name"]
        if "value" in e:
            out[name] = str(e["value"])
            continue
        ref = e.get("valueFrom") or {}
        if "secretKeyRef" in ref:
            s = ref["secretKeyRef"]
            out[name] = secret_data(s["name"], s["key"])
        elif "resourceFieldRef" in ref:
            rf = ref["resourceFieldRef"]
            if rf.get("resource") != "limits.cpu" or str(rf.get("divisor", "1")) != "1":
                raise MappingError(f"env {name}: unsupported resourceFieldRef {rf}")
            out[name] = str(cpu_limit_procs(((resources or {}).get("limits") or {}).get("cpu")))
        else:
            raise MappingError(f"env {name}: unsupported valueFrom {sorted(ref)}")
    return out


def public_hosts(render_hosts: Iterable[str], keycloak_host: str) -> list[str]:
    """Hosts that resolve to the gateway inside the harness: the rendered gateway hosts (no
    wildcards) plus the Keycloak host."""
    hosts = {h for h in render_hosts if not h.startswith("*.")}
    hosts.add(keycloak_host)
    return sorted(hosts)


def host_resolver_rules(hosts: Iterable[str], ip: str) -> str:
    """Chromium's ``--host-resolver-rules`` value mapping each host to the gateway address."""
    return ", ".join(f"MAP {h} {ip}" for h in sorted(hosts))
