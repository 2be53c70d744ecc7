"""The translation adapter: Istio's own translation (``tools/istio-xds``) -> static Envoy bootstraps.

Nothing here reads an Istio object to decide what Envoy should do: that is istiod's code, run by
the ``istio-xds`` translator (see ``docs/e2e.md``). This module only

1. takes what a cluster would give istiod and the render lacks (:mod:`.workloads`);
2. runs the translator over the render's Istio objects, its mesh config and those additions
   (:func:`translate`);
3. assembles each proxy's listeners/routes/clusters/endpoints into a static bootstrap for the
   upstream Envoy the harness runs (:func:`bootstraps`): RDS inlined, EDS endpoints mapped to the
   run's loopback addresses, SDS secrets replaced by the run's certificate files, listener
   addresses moved to the run's addresses, and the Istio-only extensions upstream Envoy cannot
   load removed (:data:`ISTIO_ONLY`, each listed in the result). Anything else the real Envoy
   rejects fails the run with Envoy's own message naming it.
4. for the Services whose endpoints change during a run (oauth2-proxy's replicas: they start,
   turn ready, terminate), keeps the clusters EDS and hands Envoy istiod's ClusterLoadAssignment
   through Envoy's own file-based xDS subscription (a watched file, replaced atomically), so a
   new translation reaches the running Envoy as istiod's push would, without a restart
   (:func:`write_endpoints`).

Imports: :mod:`authproxy_local.core.local_map`, :mod:`.workloads`, :mod:`.envoy_config`.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authproxy_local.core import local_map
from authproxy_local.render import is_patch

from .envoy_config import (
    DOWNSTREAM_TLS_TYPE,
    HCM,
    HCM_TYPE,
    INTERNAL_LISTENER,
    ISTIO_ONLY,
    ROUTER,
    ROUTER_TYPE,
    UPSTREAM_FACTORIES,
)
from .workloads import AdapterError, Proxy, Workloads, is_gateway_api

# --------------------------------------------------------------------------------------------
# 2. Running the translator
# --------------------------------------------------------------------------------------------


def write_input(render: Any, w: Workloads, directory: Path,
                mesh_extra: Mapping[str, Any] | None = None) -> Path:
    """The translator's input folder: the render's objects, its mesh config (with
    ``mesh_extra``'s keys on top, e.g. a diagnostic ``accessLogFile``), the harness additions (in
    their own file) and the proxies to generate for."""
    directory.mkdir(parents=True, exist_ok=True)
    # The render's objects as the cluster holds them: a patch is merged into the object the
    # harness models (its labels are on that Service), and the status the cluster writes is set.
    objs = []
    for o in render.kubernetes:
        if is_patch(o):
            continue
        key = (o["kind"], o["metadata"].get("namespace") or "default", o["metadata"]["name"])
        objs.append({**o, "status": w.status[key]} if key in w.status else o)
    (directory / "kubernetes.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
    (directory / "harness-additions.yaml").write_text(yaml.safe_dump_all(w.objects, sort_keys=False))
    mesh = {**(render.mesh_config or {}), **(mesh_extra or {})}
    (directory / "mesh-config.yaml").write_text(yaml.safe_dump(mesh, sort_keys=False))
    (directory / "proxies.json").write_text(json.dumps(
        [{"name": p.name, "type": p.type, "namespace": p.namespace, "ip": p.ip, "labels": p.labels}
         for p in w.proxies], indent=1))
    return directory


def translate(exe: Path, directory: Path, env: Mapping[str, str] | None = None,
              timeout: float = 120) -> dict[str, Any]:
    """Run the translator over ``directory``; its stderr (Istio's log) goes to ``istio-xds.log``."""
    out = directory / "xds.json"
    with open(directory / "istio-xds.log", "w") as log:
        proc = subprocess.run([str(exe), "-in", str(directory), "-out", str(out)], stdout=log, stderr=log,
                              env=dict(env) if env is not None else None, timeout=timeout)
    if proc.returncode != 0:
        tail = (directory / "istio-xds.log").read_text()[-3000:]
        raise AdapterError(f"istio-xds failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# --------------------------------------------------------------------------------------------
# 3. Static bootstraps for upstream Envoy
# --------------------------------------------------------------------------------------------


@dataclass
class Secrets:
    """SDS secret name -> the run's files."""

    certs: dict[str, tuple[str, str]]
    """name -> (certificate chain file, private key file)"""
    cas: dict[str, str]
    """name -> CA bundle file"""


@dataclass
class MeshIdentities:
    """Ambient runs: the mesh's root (ztunnel's fake CA) and each Envoy's SPIFFE certificate, for
    the HBONE hops (gateway -> waypoint -> ztunnel): SDS ``default`` and ``ROOTCA``."""

    root_file: str
    certs: dict[str, tuple[str, str]]
    """proxy name -> (certificate chain file, private key file)"""


def run_secrets(ep: local_map.LocalEndpoints, credential_names: Iterable[str], identity: str = "") -> Secrets:
    """The SDS secrets of one proxy: the Gateway's ``credentialName`` secrets -> the run's gateway
    certificate; Istio's workload certificate (``default``) -> the proxy's own SPIFFE certificate
    (``identity``, :func:`authproxy_local.core.pki.mesh_identities`) and ``ROOTCA`` -> the mesh's
    CA, as istiod's SDS would serve them; the gateway and the sidecars then speak Istio mTLS and
    authorization policies on the caller's principal decide on real peer identities."""
    certs = {n if "://" in n else f"kubernetes://{n}": (ep.cert_file, ep.key_file)
             for n in credential_names}
    if identity:
        if identity not in ep.identities:
            raise AdapterError(f"no workload certificate for identity {identity!r}")
        certs["default"] = ep.identities[identity]
    return Secrets(certs=certs, cas={"ROOTCA": ep.mesh_ca_file or ep.ca_file})


def _walk(value: Any) -> Iterable[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def _sock(addr: Mapping[str, Any]) -> tuple[str, int]:
    sa = addr.get("socket_address") or {}
    return sa.get("address", ""), int(sa.get("port_value", 0))


def _addr(ip: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": ip, "port_value": port}}


def static_cluster(name: str, addr: local_map.Addr, timeout: str = "2s") -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": timeout,
            "load_assignment": {"cluster_name": name, "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _addr(*addr)}}]}]}}


def _replace_sds(doc: Any, secrets: Secrets, where: str) -> None:
    for d in _walk(doc):
        if "tls_certificate_sds_secret_configs" in d:
            certs = []
            for s in d.pop("tls_certificate_sds_secret_configs"):
                if s["name"] not in secrets.certs:
                    raise AdapterError(f"{where}: SDS certificate {s['name']!r} has no local counterpart")
                c, k = secrets.certs[s["name"]]
                certs.append({"certificate_chain": {"filename": c}, "private_key": {"filename": k}})
            d["tls_certificates"] = certs
        if "validation_context_sds_secret_config" in d:
            s = d.pop("validation_context_sds_secret_config")
            if s["name"] not in secrets.cas:
                raise AdapterError(f"{where}: SDS validation context {s['name']!r} has no local counterpart")
            d["validation_context"] = {"trusted_ca": {"filename": secrets.cas[s["name"]]}}
        cvc = d.get("combined_validation_context")
        if isinstance(cvc, dict) and "validation_context_sds_secret_config" in cvc:
            s = cvc.pop("validation_context_sds_secret_config")
            if s["name"] not in secrets.cas:
                raise AdapterError(f"{where}: SDS validation context {s['name']!r} has no local counterpart")
            vc = cvc.pop("default_validation_context", {})
            vc["trusted_ca"] = {"filename": secrets.cas[s["name"]]}
            d.pop("combined_validation_context")
            d["validation_context"] = vc


def _strip_filters(filters: list[dict[str, Any]], where: str, removed: set[str]) -> list[dict[str, Any]]:
    """``filters`` without the Istio-only ones (:data:`ISTIO_ONLY`), each recorded in ``removed``
    as ``"<where> <name> (<type>)"``."""
    kept = []
    for f in filters:
        if (where, f.get("name", "")) in ISTIO_ONLY:
            tc = f.get("typed_config") or {}
            # Istio wraps some of its own configs in a TypedStruct: name the type inside.
            tname = str(tc.get("type_url") or tc.get("@type", "?")).rsplit("/", 1)[-1]
            removed.add(f"{where} {f.get('name')} ({tname})")
            continue
        kept.append(f)
    return kept


def _hcms(listener: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    for chain in listener.get("filter_chains", []):
        for f in chain.get("filters", []):
            if f.get("name") == HCM:
                yield f["typed_config"]


def cluster_refs(doc: Any) -> set[str]:
    """Every cluster name a listener (or route) refers to."""
    refs: set[str] = set()
    for d in _walk(doc):
        c = d.get("cluster")
        if isinstance(c, str):
            refs.add(c)
        wcs = d.get("weighted_clusters")
        if isinstance(wcs, dict):
            refs.update(wc["name"] for wc in wcs.get("clusters", []))
    return refs


def is_dynamic(cluster_name: str, w: Workloads) -> bool:
    """An outbound cluster of a Service whose endpoints change during the run."""
    return cluster_name.startswith("outbound|") and cluster_name.rsplit("|", 1)[-1] in w.dynamic_hosts


def eds_file(directory: Path, cluster_name: str) -> Path:
    return directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", cluster_name) + ".json")


def mapped_load_assignment(name: str, cname: str, cla: Mapping[str, Any] | None,
                           w: Workloads, proxy_type: str = "") -> dict[str, Any]:
    """istiod's ClusterLoadAssignment for ``cname`` with every endpoint at its local address
    (an HBONE tunnel endpoint mapped to the run's relay; a waypoint reaches pods where they are)."""
    lbs = []
    for loc in (cla or {}).get("endpoints", []):
        for lb in loc.get("lb_endpoints", []):
            lb = copy.deepcopy(lb)
            if "envoy_internal_address" in lb["endpoint"]["address"]:
                _map_tunnel(lb, w, f"{name}: cluster {cname}")
                lbs.append(lb)
                continue
            addr = _sock(lb["endpoint"]["address"])
            if addr in w.endpoints:
                lb["endpoint"]["address"] = _addr(*w.endpoints[addr])
            elif proxy_type != "waypoint":
                raise AdapterError(f"{name}: cluster {cname} endpoint {addr} has no local counterpart")
            lbs.append(lb)
    return {"cluster_name": cname, "endpoints": [{"lb_endpoints": lbs}] if lbs else []}


def write_endpoints(xds: Mapping[str, Any], w: Workloads, directory: Path, version: str) -> list[str]:
    """Write istiod's ClusterLoadAssignments of the dynamic clusters of every proxy as the files
    their Envoy watches (a DiscoveryResponse each, replaced by rename so Envoy never reads half a
    file). Returns the clusters written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for pname, proxy_xds in sorted(xds.get("proxies", {}).items()):
        cla = {e["cluster_name"]: e for e in proxy_xds.get("endpoints", [])}
        for c in proxy_xds.get("clusters", []):
            cname = c["name"]
            if c.get("type") != "EDS" or not is_dynamic(cname, w):
                continue
            doc = {"version_info": version, "resources": [{
                "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                **mapped_load_assignment(pname, cname, cla.get(cname), w)}]}
            path = eds_file(directory / pname, cname)
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name("." + path.name + ".tmp")
            tmp.write_text(json.dumps(doc))
            tmp.replace(path)
            written.append(f"{pname}/{cname}")
    return written


def _proxy_bootstrap(name: str, xds: Mapping[str, Any], proxy: Proxy, w: Workloads,
                     ep: local_map.LocalEndpoints, secrets: Secrets, admin: local_map.Addr,
                     removed: set[str], eds_dir: Path | None = None) -> dict[str, Any]:
    routes = {r["name"]: r for r in xds.get("routes", [])}
    clusters = {c["name"]: c for c in xds.get("clusters", [])}
    cla = {e["cluster_name"]: e for e in xds.get("endpoints", [])}

    listeners = []
    for lst in copy.deepcopy(xds.get("listeners", [])):
        _, port = _sock(lst.get("address") or {})
        if "address" not in lst or proxy.type == "waypoint":
            pass  # internal listeners; a waypoint listens where its pod is (its own namespace)
        elif proxy.type == "router":
            local = {443: ep.https_port, 80: ep.http_port}.get(port)
            if local is None:
                raise AdapterError(f"{name}: gateway listener {lst['name']} on port {port} has no local port")
            lst["address"] = _addr(ep.gateway_ip, local)
        else:
            if lst["name"] != "virtualInbound":
                continue  # outbound listeners: the apps make no outbound calls here
            lip, lport = w.sidecar_listen[name]
            lst["address"] = _addr(lip, lport)
            inbound_ports = w.inbound[name]
            for chain in lst.get("filter_chains", []):
                m = chain.get("filter_chain_match") or {}
                if m.get("destination_port") in inbound_ports:
                    m["destination_port"] = lport
        for chain in lst.get("filter_chains", []):
            chain["filters"] = _strip_filters(chain.get("filters", []), "network_filter", removed)
        for hcm in _hcms(lst):
            hcm["http_filters"] = _strip_filters(hcm.get("http_filters", []), "http_filter", removed)
            if "rds" in hcm:
                rname = hcm.pop("rds")["route_config_name"]
                if rname not in routes:
                    raise AdapterError(f"{name}: listener {lst['name']} uses route {rname!r}, "
                                       "which istiod did not emit")
                hcm["route_config"] = copy.deepcopy(routes[rname])
        _replace_sds(lst, secrets, f"{name} listener {lst['name']}")
        listeners.append(lst)

    out_clusters: dict[str, dict[str, Any]] = {}
    todo = sorted(cluster_refs(listeners))
    while todo:
        cname = todo.pop()
        if cname in out_clusters:
            continue
        if cname not in clusters:
            raise AdapterError(f"{name}: the config refers to cluster {cname!r}, which istiod did not emit")
        c = copy.deepcopy(clusters[cname])
        if c.get("filters"):
            c["filters"] = _strip_filters(c["filters"], "cluster_filter", removed)
            if not c["filters"]:
                c.pop("filters")
        ctype = c.get("type")
        if ctype == "EDS" and eds_dir is not None and is_dynamic(cname, w):
            # istiod's EDS, from a file Envoy watches (write_endpoints keeps it current)
            directory = eds_dir / name
            c["eds_cluster_config"] = {"service_name": cname, "eds_config": {
                "resource_api_version": "V3",
                "path_config_source": {"path": str(eds_file(directory, cname)),
                                       "watched_directory": {"path": str(directory)}}}}
        elif ctype == "EDS":
            c.pop("eds_cluster_config", None)
            c["type"] = "STATIC"
            c["load_assignment"] = mapped_load_assignment(name, cname, cla.get(cname), w, proxy.type)
        elif ctype == "ORIGINAL_DST" and cname.startswith("inbound|"):
            # The inbound cluster forwards to the app container: the local echo app.
            port = int(cname.split("|")[1])
            if port not in w.inbound.get(name, {}):
                raise AdapterError(f"{name}: inbound cluster {cname} for a port the app does not serve")
            for k in ("lb_policy", "original_dst_lb_config", "upstream_bind_config"):
                c.pop(k, None)
            c["type"] = "STATIC"
            c["load_assignment"] = {"cluster_name": cname, "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _addr(*w.inbound[name][port])}}]}]}
        _replace_sds(c, secrets, f"{name} cluster {cname}")
        out_clusters[cname] = c
        todo += sorted(cluster_refs(c) - set(out_clusters))
    boot: dict[str, Any] = {
        "node": {"id": f"{proxy.type}~{proxy.ip}~{proxy.name}.{proxy.namespace}~"
                       f"{proxy.namespace}.svc.cluster.local",
                 "cluster": f"{proxy.name}.{proxy.namespace}"},
        "admin": {"address": _addr(*admin)},
        "static_resources": {"listeners": listeners, "clusters": [out_clusters[k] for k in sorted(out_clusters)]},
    }
    if any("address" not in lst for lst in listeners):
        boot["bootstrap_extensions"] = [copy.deepcopy(INTERNAL_LISTENER)]
    for d in _walk(boot["static_resources"]):
        if d.get("factory_key") in UPSTREAM_FACTORIES:
            d["factory_key"] = UPSTREAM_FACTORIES[d["factory_key"]]
    return boot


TUNNEL_METADATA = "envoy.filters.listener.original_dst"


def _map_tunnel(lb: dict[str, Any], w: Workloads, where: str) -> None:
    """An HBONE endpoint (``connect_originate`` internal address): its tunnel's far end (the
    ``waypoint`` metadata istiod sets, else the endpoint itself) moves to the run's address for
    it when the run has one (the gateway reaches a waypoint through a relay); a pod address the
    run has no counterpart for stays (a waypoint reaches pods where they are)."""
    meta = lb.get("metadata", {}).get("filter_metadata", {}).get(TUNNEL_METADATA, {})
    far = meta.get("waypoint")
    if far:
        ip, _, port = far.rpartition(":")
        if (ip, int(port)) in w.endpoints:
            new = "{}:{}".format(*w.endpoints[(ip, int(port))])
            meta["waypoint"] = new
            lb["endpoint"]["address"]["envoy_internal_address"]["endpoint_id"] = new
        elif w.waypoints:
            raise AdapterError(f"{where}: the tunnel to {far} has no local counterpart")


def keycloak_chain(kc_host: str, ep: local_map.LocalEndpoints) -> tuple[dict[str, Any], dict[str, Any]]:
    """Harness addition on the gateway's HTTPS listener: Keycloak is outside the mesh in the render,
    so the gateway serves its host (with its own certificate) straight to the local Keycloak.
    Returns (filter chain, cluster)."""
    hcm = {
        "@type": HCM_TYPE, "stat_prefix": "harness_keycloak",
        "use_remote_address": True,
        "route_config": {"name": "harness-keycloak", "virtual_hosts": [{
            "name": "keycloak", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "harness|keycloak", "timeout": "30s"}}]}]},
        "http_filters": [{"name": ROUTER, "typed_config": {"@type": ROUTER_TYPE}}],
    }
    chain = {
        "name": "harness-keycloak",
        "filter_chain_match": {"server_names": [kc_host]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": ep.keycloak_cert_file or ep.cert_file},
                                      "private_key": {"filename": ep.keycloak_key_file or ep.key_file}}]}}},
        "filters": [{"name": HCM, "typed_config": hcm}],
    }
    return chain, static_cluster("harness|keycloak", ep.keycloak)


@dataclass
class Bootstraps:
    by_proxy: dict[str, dict[str, Any]]
    removed: list[str]
    istio_version: str


def bootstraps(xds: Mapping[str, Any], w: Workloads, ep: local_map.LocalEndpoints, kc_host: str,
               admin: Mapping[str, local_map.Addr], credential_names: Iterable[str],
               eds_dir: Path | None = None, mesh: MeshIdentities | None = None) -> Bootstraps:
    """One bootstrap per Envoy of ``w``: the gateway, each app's sidecar, each waypoint
    (ztunnel's part of the translation is :mod:`.ztunnel`'s). Static, except with ``eds_dir``: the
    clusters of :attr:`Workloads.dynamic_hosts` then read istiod's endpoints from files there
    (written here, updated by :func:`write_endpoints`). ``mesh``: the identities of an ambient run
    (ztunnel's root), for the HBONE hops; they replace the run's mesh identities."""
    names = list(credential_names)
    removed: set[str] = set()
    out: dict[str, dict[str, Any]] = {}
    if eds_dir is not None:
        write_endpoints(xds, w, eds_dir, "1")
    for p in w.proxies:
        if p.type == "ztunnel":
            continue
        if p.name not in xds.get("proxies", {}):
            raise AdapterError(f"the translator produced nothing for proxy {p.name}")
        secrets = run_secrets(ep, names, p.identity)
        if mesh is not None and p.name in mesh.certs:
            secrets = Secrets(certs={**secrets.certs, "default": mesh.certs[p.name]},
                              cas={**secrets.cas, "ROOTCA": mesh.root_file})
        elif p.type == "waypoint":
            raise AdapterError(f"{p.name}: a waypoint needs its mesh identity (bootstraps(mesh=...))")
        b = _proxy_bootstrap(p.name, xds["proxies"][p.name], p, w, ep, secrets, admin[p.name], removed,
                             eds_dir)
        if p.type == "router":
            https = [lst for lst in b["static_resources"]["listeners"]
                     if _sock(lst.get("address") or {}) == (ep.gateway_ip, ep.https_port)]
            if not https:
                raise AdapterError("the gateway has no HTTPS listener")
            chain, cluster = keycloak_chain(kc_host, ep)
            https[0]["filter_chains"].append(chain)
            b["static_resources"]["clusters"].append(cluster)
        out[p.name] = b
    return Bootstraps(out, sorted(removed), str(xds.get("istio_version", "")))


def credential_names(render: Any) -> list[str]:
    """The Gateway servers' ``tls.credentialName`` values; for a Gateway API Gateway the SDS
    names istiod gives its listeners' Secrets (``kubernetes-gateway://<namespace>/<name>``)."""
    names = []
    for o in render.kubernetes:
        if o.get("kind") == "Gateway" and is_gateway_api(o):
            ns = o["metadata"].get("namespace") or "default"
            for lst in o["spec"].get("listeners", []):
                for ref in (lst.get("tls") or {}).get("certificateRefs", []):
                    sds = f"kubernetes-gateway://{ref.get('namespace', ns)}/{ref['name']}"
                    if sds not in names:
                        names.append(sds)
        elif o.get("kind") == "Gateway":
            for s in o["spec"].get("servers", []):
                n = (s.get("tls") or {}).get("credentialName")
                if n and n not in names:
                    names.append(n)
    return names


def translator_env(base: Mapping[str, str], https_proxy: local_map.Addr | None, ca_file: str) -> dict[str, str]:
    """The translator's environment: istiod fetches each ``jwksUri`` itself (its default,
    PILOT_JWT_ENABLE_REMOTE_JWKS=istiod) through ``https_proxy`` (a CONNECT proxy that only
    knows the Keycloak host) and trusts the run's CA, as an istiod that reaches Keycloak would."""
    env = {k: v for k, v in base.items() if k in ("PATH", "HOME", "TMPDIR")}
    env["PILOT_JWT_ENABLE_REMOTE_JWKS"] = "istiod"
    env["SSL_CERT_FILE"] = ca_file
    if https_proxy is not None:
        env["HTTPS_PROXY"] = f"http://{https_proxy[0]}:{https_proxy[1]}"
    return env


__all__ = [
    "Bootstraps",
    "MeshIdentities",
    "bootstraps",
    "cluster_refs",
    "credential_names",
    "keycloak_chain",
    "static_cluster",
    "translate",
    "translator_env",
    "write_input",
]
