"""The translation adapter: Istio's own translation (``tools/istio-xds``) -> static Envoy bootstraps.

Nothing here reads an Istio object to decide what Envoy should do: that is istiod's code, run by
the ``istio-xds`` translator (see ``docs/e2e.md``). This module only

1. models what a cluster would give istiod and the render lacks (:func:`workloads`): the gateway
   pods, the app pods and Services, the oauth2-proxy pod and every EndpointSlice, each labelled
   :data:`HARNESS_LABEL` so a reader can tell them from the render's objects;
2. runs the translator over the render's Istio objects, its mesh config and those additions
   (:func:`translate`);
3. assembles each proxy's listeners/routes/clusters/endpoints into a static bootstrap for the
   upstream Envoy the harness runs (:func:`bootstraps`): RDS inlined, EDS endpoints mapped to the
   run's loopback addresses, SDS secrets replaced by the run's certificate files, listener
   addresses moved to the run's addresses, and the Istio-only extensions upstream Envoy cannot
   load removed (:data:`ISTIO_ONLY`, each listed in the result). Anything else the real Envoy
   rejects fails the run with Envoy's own message naming it.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from authproxy_local import local_map

HARNESS_LABEL = "authproxy.local/harness-addition"
"""Label on every Kubernetes object the harness adds to the translator's input."""

HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "envoy.filters.http.router"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

ISTIO_ONLY: dict[tuple[str, str], str] = {
    # (where, filter name) -> why removing it changes no authentication/authorization decision
    ("http_filter", "istio.metadata_exchange"):
        "peer metadata exchange (io.istio.http.peer_metadata) for telemetry labels; no filter "
        "of this stack reads it",
    ("http_filter", "istio.alpn"):
        "sets the upstream ALPN to istio-peer-exchange for telemetry; upstream mTLS/ALPN and "
        "routing are unchanged",
    ("http_filter", "istio.stats"):
        "Istio's Prometheus metrics (stats.PluginConfig); counts requests, decides nothing",
    ("network_filter", "istio.metadata_exchange"):
        "TCP peer metadata exchange for telemetry (envoy.tcp.metadataexchange.config)",
    ("network_filter", "istio.stats"):
        "Istio's TCP metrics (stats.PluginConfig); counts bytes, decides nothing",
    ("cluster_filter", "istio.metadata_exchange"):
        "upstream peer metadata exchange on outbound clusters, for telemetry",
}
"""The Istio-only extensions the adapter removes. Anything else upstream Envoy cannot load fails
the run (``envoy --mode validate`` names it)."""

POD_CIDR = "10.88"
"""Pod IPs the harness gives the workloads it models (never routable: the adapter maps them)."""


class AdapterError(RuntimeError):
    """The translator's output holds something the adapter has no local counterpart for."""


# --------------------------------------------------------------------------------------------
# 1. What a cluster would give istiod: pods, Services, EndpointSlices
# --------------------------------------------------------------------------------------------


@dataclass
class Proxy:
    name: str
    type: str  # "router" | "sidecar"
    namespace: str
    ip: str
    labels: dict[str, str]
    app: str | None = None


@dataclass
class Workloads:
    objects: list[dict[str, Any]] = field(default_factory=list)
    proxies: list[Proxy] = field(default_factory=list)
    endpoints: dict[tuple[str, int], local_map.Addr] = field(default_factory=dict)
    """(pod IP, container port) -> the local address serving it."""
    inbound: dict[str, dict[int, local_map.Addr]] = field(default_factory=dict)
    """sidecar proxy name -> {pod port: the local app (echo) serving it}."""
    sidecar_listen: dict[str, local_map.Addr] = field(default_factory=dict)
    """sidecar proxy name -> the local address its inbound listener binds."""


def _meta(name: str, namespace: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {**(labels or {}), HARNESS_LABEL: "true"}}


def _pod(name: str, ns: str, labels: Mapping[str, str], ip: str, ports: Iterable[tuple[str, int]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": _meta(name, ns, labels),
        "spec": {"containers": [{"name": "main", "image": "harness",
                                 "ports": [{"name": n, "containerPort": p} for n, p in ports]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def _slice(svc: str, ns: str, pod: str, ip: str, ports: Iterable[tuple[str, int]]) -> dict[str, Any]:
    meta = _meta(f"{svc}-harness", ns, {"kubernetes.io/service-name": svc})
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "name": pod, "namespace": ns}}],
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
    }


def _target_port(port: Mapping[str, Any], container_ports: Mapping[str, int]) -> int:
    tp = port.get("targetPort", port["port"])
    if isinstance(tp, int) or str(tp).isdigit():
        return int(tp)
    if tp not in container_ports:
        raise AdapterError(f"Service port {port} names container port {tp!r}, which the pod does not have")
    return container_ports[tp]


GATEWAY_API_GROUP = "gateway.networking.k8s.io"
ISTIO_GATEWAY_CONTROLLER = "istio.io/gateway-controller"
"""The ``controllerName`` of the GatewayClasses istiod creates and serves (``istio``)."""


def is_gateway_api(obj: Mapping[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).split("/")[0] == GATEWAY_API_GROUP


def deployed_gateway_labels(gw: Mapping[str, Any]) -> dict[str, str]:
    """The labels istiod's gateway deployment template gives the pods of a Gateway API Gateway
    (istio.io/istio manifests/charts/istio-control/istio-discovery/files/kube-gateway.yaml): the
    Deployment is ``<name>-<class>``; ``targetRefs`` policies find the pods by the gateway name."""
    name, cls = gw["metadata"]["name"], gw["spec"]["gatewayClassName"]
    return {
        "sidecar.istio.io/inject": "false",
        "service.istio.io/canonical-name": f"{name}-{cls}",
        "service.istio.io/canonical-revision": "latest",
        f"{GATEWAY_API_GROUP}/gateway-name": name,
        f"{GATEWAY_API_GROUP}/gateway-class-name": cls,
        "gateway.istio.io/managed": "istio.io-gateway-controller",
    }


def deployed_gateway_service(gw: Mapping[str, Any]) -> dict[str, Any]:
    """The Service istiod's deployment controller creates for a Gateway API Gateway
    (``<name>-<class>``: the status port and one port per listener port, named after the first
    listener on it; pilot/pkg/config/kube/gatewaycommon/deploymentcontroller.go
    extractServicePorts). istiod binds the Gateway's servers to the proxies behind it."""
    name, cls = gw["metadata"]["name"], gw["spec"]["gatewayClassName"]
    ns = gw["metadata"].get("namespace") or "default"
    # targetPort as the API server defaults it (= port): the pods listen on the listener ports.
    ports: list[dict[str, Any]] = [{"name": "status-port", "port": 15021, "targetPort": 15021,
                                    "protocol": "TCP", "appProtocol": "tcp"}]
    seen: set[int] = set()
    for lst in gw["spec"].get("listeners", []):
        if lst["port"] in seen:
            continue
        seen.add(lst["port"])
        ports.append({"name": lst["name"], "port": lst["port"], "targetPort": lst["port"],
                      "protocol": "TCP", "appProtocol": str(lst["protocol"]).lower()})
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(f"{name}-{cls}", ns, {f"{GATEWAY_API_GROUP}/gateway-name": name,
                                                 f"{GATEWAY_API_GROUP}/gateway-class-name": cls}),
        "spec": {"selector": {f"{GATEWAY_API_GROUP}/gateway-name": name},
                 "clusterIP": f"{POD_CIDR}.4.1", "ports": ports},
    }


def gateway_class(name: str) -> dict[str, Any]:
    """The GatewayClass istiod creates in a cluster (its ``gatewayClass`` controller)."""
    return {"apiVersion": f"{GATEWAY_API_GROUP}/v1", "kind": "GatewayClass",
            "metadata": {"name": name, "labels": {HARNESS_LABEL: "true"}},
            "spec": {"controllerName": ISTIO_GATEWAY_CONTROLLER}}


def gateway_api_tls_secrets(gw: Mapping[str, Any], ep: local_map.LocalEndpoints) -> list[dict[str, Any]]:
    """The TLS Secrets the Gateway's listeners reference, holding the run's gateway certificate:
    istiod's Gateway API conversion only accepts a listener whose Secret exists and holds a valid
    key pair (a cluster has it from cert-manager or the operator)."""

    ns = gw["metadata"].get("namespace") or "default"
    crt = base64.b64encode(Path(ep.cert_file).read_bytes()).decode()
    key = base64.b64encode(Path(ep.key_file).read_bytes()).decode()
    out = []
    for name in sorted({r["name"] for lst in gw["spec"].get("listeners", [])
                        for r in (lst.get("tls") or {}).get("certificateRefs", [])}):
        out.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": _meta(name, ns), "data": {"tls.crt": crt, "tls.key": key}})
    return out


def workloads(render: Any, ep: local_map.LocalEndpoints) -> Workloads:
    """The objects and proxies the harness models for the render and the run's addresses."""
    cfg = render.config
    objs = render.kubernetes
    w = Workloads()

    # The ingress gateway pods: the Gateway's namespace, labelled as its selector (Istio
    # Gateway) or as istiod labels the pods of a Gateway API Gateway it deploys.
    gws = [o for o in objs if o.get("kind") == "Gateway"]
    if len(gws) != 1:
        raise AdapterError(f"expected one Gateway in the render, found {len(gws)}")
    gw = gws[0]
    gw_ns = gw["metadata"].get("namespace") or "default"
    gw_ip = f"{POD_CIDR}.0.1"
    if is_gateway_api(gw):
        gw_labels = deployed_gateway_labels(gw)
        w.objects.append(gateway_class(gw["spec"]["gatewayClassName"]))
        w.objects += gateway_api_tls_secrets(gw, ep)
        svc = deployed_gateway_service(gw)
        w.objects.append(svc)
        w.objects.append(_slice(svc["metadata"]["name"], gw_ns, "ingressgateway-harness", gw_ip,
                                [(p["name"], p["port"]) for p in svc["spec"]["ports"]]))
    else:
        gw_labels = dict(gw["spec"].get("selector") or {})
    w.proxies.append(Proxy("gateway", "router", gw_ns, gw_ip, gw_labels))
    w.objects.append(_pod("ingressgateway-harness", gw_ns, gw_labels, gw_ip, []))

    # oauth2-proxy: the render's Deployment and Service; the pod and EndpointSlice are ours.
    proxy_svc, proxy_ns, proxy_ports = _oauth2_proxy_service(render)
    dep, svc = _oauth2_proxy_objects(render, proxy_svc, proxy_ns)
    pod_labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    cports = {p["name"]: int(p["containerPort"])
              for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", []) if p.get("name")}
    ip = f"{POD_CIDR}.1.1"
    slice_ports = []
    for sp in svc["spec"]["ports"]:
        target = _target_port(sp, cports)
        slice_ports.append((sp.get("name") or str(sp["port"]), target))
        local = ep.oauth2_proxy if sp["port"] == proxy_ports[0] else ep.oauth2_proxy_metrics
        w.endpoints[(ip, target)] = local
    w.objects.append(_pod("oauth2-proxy-harness", proxy_ns, pod_labels, ip, list(cports.items())))
    w.objects.append(_slice(proxy_svc, proxy_ns, "oauth2-proxy-harness", ip, slice_ports))

    # Each app: a pod (with a sidecar), a Service with an http port, an EndpointSlice.
    for i, app in enumerate(cfg.apps):
        ns, name, port = app.service.namespace, app.service.name, int(app.service.port)
        labels = dict(app.selector_labels)
        ip = f"{POD_CIDR}.2.{i + 1}"
        pod = f"{app.name}-harness"
        w.objects.append(_pod(pod, ns, labels, ip, [("http", port)]))
        w.objects.append({
            "apiVersion": "v1", "kind": "Service", "metadata": _meta(name, ns),
            "spec": {"selector": labels, "clusterIP": f"{POD_CIDR}.3.{i + 1}",
                     "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]},
        })
        w.objects.append(_slice(name, ns, pod, ip, [("http", port)]))
        pname = f"sidecar-{app.name}"
        w.proxies.append(Proxy(pname, "sidecar", ns, ip, labels, app=app.name))
        w.endpoints[(ip, port)] = ep.sidecars[app.name]
        w.sidecar_listen[pname] = ep.sidecars[app.name]
        w.inbound[pname] = {port: ep.apps[app.name]}
    return w


def _oauth2_proxy_objects(render: Any, svc_name: str, ns: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = next(d for d in render.kubernetes if d.get("kind") == "Deployment"
               and any(str(a).startswith("--provider=") for c in d["spec"]["template"]["spec"]["containers"]
                       for a in c.get("args", [])))
    svc = next(s for s in render.kubernetes if s.get("kind") == "Service"
               and s["metadata"]["name"] == svc_name and (s["metadata"].get("namespace") or "") == ns)
    return dep, svc


def _oauth2_proxy_service(render: Any) -> tuple[str, str, list[int]]:
    """The Service in front of the oauth2-proxy pods: (name, namespace, [http port, others...])."""
    pod_labels = None
    ns = ""
    for d in render.kubernetes:
        if d.get("kind") != "Deployment":
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            if any(str(a).startswith("--provider=") for a in c.get("args", [])):
                pod_labels = d["spec"]["template"]["metadata"].get("labels") or {}
                ns = d["metadata"].get("namespace") or ""
    if pod_labels is None:
        raise AdapterError("no oauth2-proxy Deployment in the render")
    for s in render.kubernetes:
        if s.get("kind") != "Service":
            continue
        sel = s["spec"].get("selector") or {}
        if (s["metadata"].get("namespace") or "") == ns and sel and all(pod_labels.get(k) == v for k, v in sel.items()):
            ports = s["spec"]["ports"]
            http = [p["port"] for p in ports if p.get("name") == "http"] or [ports[0]["port"]]
            return s["metadata"]["name"], ns, http + [p["port"] for p in ports if p["port"] not in http]
    raise AdapterError("no Service selects the oauth2-proxy pods")


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


def run_secrets(ep: local_map.LocalEndpoints, credential_names: Iterable[str]) -> Secrets:
    """The Gateway's ``credentialName`` secrets -> the run's gateway certificate; Istio's workload
    identity (``default``) -> the same certificate and ``ROOTCA`` -> the run's CA. No pod carries
    the ``security.istio.io/tlsMode`` label, so the gateway talks plaintext to the sidecars and the
    workload certificate is only loaded, never presented (nothing in the stack depends on peer
    identity)."""
    certs = {n if "://" in n else f"kubernetes://{n}": (ep.cert_file, ep.key_file)
             for n in credential_names}
    certs["default"] = (ep.cert_file, ep.key_file)
    return Secrets(certs=certs, cas={"ROOTCA": ep.ca_file})


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
    secrets = run_secrets(ep, credential_names)
    removed: set[str] = set()
    out: dict[str, dict[str, Any]] = {}
    for p in w.proxies:
        if p.name not in xds.get("proxies", {}):
            raise AdapterError(f"the translator produced nothing for proxy {p.name}")
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
    "HARNESS_LABEL",
    "ISTIO_ONLY",
    "AdapterError",
    "Bootstraps",
    "Proxy",
    "Workloads",
    "bootstraps",
    "cluster_refs",
    "credential_names",
    "keycloak_chain",
    "static_cluster",
    "translate",
    "translator_env",
    "workloads",
    "write_input",
]

