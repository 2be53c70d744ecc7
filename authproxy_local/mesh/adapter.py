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

Imports: :mod:`authproxy_local.core.local_map`, :mod:`.workloads`, :mod:`.envoy_config`.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authproxy_local.core import local_map

from .envoy_config import DOWNSTREAM_TLS_TYPE, HCM, HCM_TYPE, ISTIO_ONLY, ROUTER, ROUTER_TYPE
from .workloads import AdapterError, Proxy, Workloads, is_gateway_api

# --------------------------------------------------------------------------------------------
# 2. Running the translator
# --------------------------------------------------------------------------------------------


def write_input(render: Any, w: Workloads, directory: Path) -> Path:
    """The translator's input folder: the render's objects, its mesh config, the harness
    additions (in their own file) and the proxies to generate for."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kubernetes.yaml").write_text(yaml.safe_dump_all(render.kubernetes, sort_keys=False))
    (directory / "harness-additions.yaml").write_text(yaml.safe_dump_all(w.objects, sort_keys=False))
    (directory / "mesh-config.yaml").write_text(yaml.safe_dump(render.mesh_config or {}, sort_keys=False))
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


def _proxy_bootstrap(name: str, xds: Mapping[str, Any], proxy: Proxy, w: Workloads,
                     ep: local_map.LocalEndpoints, secrets: Secrets, admin: local_map.Addr,
                     removed: set[str]) -> dict[str, Any]:
    routes = {r["name"]: r for r in xds.get("routes", [])}
    clusters = {c["name"]: c for c in xds.get("clusters", [])}
    cla = {e["cluster_name"]: e for e in xds.get("endpoints", [])}

    listeners = []
    for lst in copy.deepcopy(xds.get("listeners", [])):
        _, port = _sock(lst.get("address") or {})
        if proxy.type == "router":
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
        if ctype == "EDS":
            c.pop("eds_cluster_config", None)
            c["type"] = "STATIC"
            lbs = []
            for loc in (cla.get(cname) or {}).get("endpoints", []):
                for lb in loc.get("lb_endpoints", []):
                    addr = _sock(lb["endpoint"]["address"])
                    if addr not in w.endpoints:
                        raise AdapterError(f"{name}: cluster {cname} endpoint {addr} has no local counterpart")
                    lb = copy.deepcopy(lb)
                    lb["endpoint"]["address"] = _addr(*w.endpoints[addr])
                    lbs.append(lb)
            c["load_assignment"] = {"cluster_name": cname, "endpoints": [{"lb_endpoints": lbs}] if lbs else []}
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
    return {
        "node": {"id": f"{proxy.type}~{proxy.ip}~{proxy.name}.{proxy.namespace}~"
                       f"{proxy.namespace}.svc.cluster.local",
                 "cluster": f"{proxy.name}.{proxy.namespace}"},
        "admin": {"address": _addr(*admin)},
        "static_resources": {"listeners": listeners, "clusters": [out_clusters[k] for k in sorted(out_clusters)]},
    }


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
               admin: Mapping[str, local_map.Addr], credential_names: Iterable[str]) -> Bootstraps:
    """One static bootstrap per proxy of ``w``: the gateway and each app's sidecar."""
    names = list(credential_names)
    removed: set[str] = set()
    out: dict[str, dict[str, Any]] = {}
    for p in w.proxies:
        if p.name not in xds.get("proxies", {}):
            raise AdapterError(f"the translator produced nothing for proxy {p.name}")
        secrets = run_secrets(ep, names, p.identity)
        b = _proxy_bootstrap(p.name, xds["proxies"][p.name], p, w, ep, secrets, admin[p.name], removed)
        if p.type == "router":
            https = [lst for lst in b["static_resources"]["listeners"]
                     if _sock(lst["address"]) == (ep.gateway_ip, ep.https_port)]
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
    "bootstraps",
    "cluster_refs",
    "credential_names",
    "keycloak_chain",
    "static_cluster",
    "translate",
    "translator_env",
    "write_input",
]
