"""What a cluster would give istiod and the render lacks: the gateway pods, the app pods and
Services, the oauth2-proxy pod and every EndpointSlice, each labelled :data:`HARNESS_LABEL` so a
reader can tell them from the render's objects (:func:`workloads`).

Ambient apps (``apps[].dataplane: ambient``) get what an ambient cluster has instead of a sidecar:
the namespace enrolled (``istio.io/dataplane-mode: ambient``), the pod annotated
``ambient.istio.io/redirection: enabled`` (istio-cni, once it redirected the pod) and running as a
service account of its own, the labels of the stack's patch merged into the Service (server-side
apply does that to the user's Service); per waypoint the GatewayClass istiod creates, the Service,
pod and EndpointSlice its deployment controller makes from the ``waypoint`` template, and the
Gateway's ``status.addresses`` its status writer sets once a waypoint pod is ready (:data:`Workloads.status`);
and one more workload in the mesh that is not the waypoint (:data:`MESH_CLIENT`), from which tests
try to reach the pods around the waypoint. The proxies then include each waypoint and one ztunnel.

Nothing here reads an Istio object to decide what Envoy should do: that is istiod's code.

Imports: :mod:`authproxy_local.core.local_map`, :mod:`authproxy_local.core.pki`, :mod:`authproxy_local.render`,
:mod:`.envoy_config`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authproxy_local.core import local_map
from authproxy_local.core.pki import spiffe_id
from authproxy_local.render import is_patch

from .envoy_config import HARNESS_LABEL, POD_CIDR


class AdapterError(RuntimeError):
    """The translator's input or output holds something the adapter has no local counterpart for."""


# --------------------------------------------------------------------------------------------
# 1. What a cluster would give istiod: pods, Services, EndpointSlices
# --------------------------------------------------------------------------------------------


@dataclass
class Proxy:
    name: str
    type: str  # "router" | "sidecar" | "waypoint" | "ztunnel"
    namespace: str
    ip: str
    labels: dict[str, str]
    app: str | None = None
    identity: str = ""
    """Key of its workload certificate in ``LocalEndpoints.identities`` (SDS ``default``)."""


SERVES_LABEL = "authproxy.local/serves"
"""The label the Service of the app with the extra pods selects (see :func:`app_pods`)."""
TLS_MODE_LABEL = "security.istio.io/tlsMode"
"""What Istio's sidecar injection puts on a pod (istiod marks its endpoints for mTLS by it)."""
GATEWAY_IDENTITY = "gateway"


@dataclass(frozen=True)
class AppPod:
    """One pod behind an app's Service, as the harness models it."""

    app: str
    name: str
    labels: dict[str, str]
    sidecar: bool
    service_account: str

    @property
    def proxy(self) -> str | None:
        """The sidecar proxy's name (the app's first pod keeps ``sidecar-<app>``)."""
        if not self.sidecar:
            return None
        return f"sidecar-{self.name.removesuffix('-harness')}"


def exposed_app(cfg: Any) -> str | None:
    """The app whose Service also sends traffic to pods its sidecar policies do not protect: the
    first app with groups that the sidecar checks (dev and gateway-api: ``admin``)."""
    return next((a.name for a in cfg.apps if a.groups and a.sidecar_checks), None)


def app_pods(cfg: Any, misconfigured: bool = True) -> list[AppPod]:
    """The pods the harness models, per app: one sidecar-injected pod with the configured
    ``workloadLabels``; for :func:`exposed_app` also, behind the same Service, a sidecar-injected
    pod with *other* labels (the sidecar policies miss it) and a pod *without* a sidecar, as a
    cluster where the selector or the injection is wrong would have them. The gateway must keep a
    user outside the app's groups out of all three. Without ``misconfigured``, one pod per app: a
    cluster the preflight accepts (the soak measures that one)."""
    out = []
    exposed = exposed_app(cfg) if misconfigured else None
    for app in cfg.apps:
        if app.ambient:
            continue  # no sidecar: its pod is an AmbientPod (workloads)
        labels = app.selector_labels or {"app.kubernetes.io/name": app.service.name}
        sa = app.service.name
        if app.name != exposed:
            out.append(AppPod(app.name, f"{app.name}-harness", labels, True, sa))
            continue
        mark = {SERVES_LABEL: app.name}
        out += [
            AppPod(app.name, f"{app.name}-harness", {**labels, **mark}, True, sa),
            AppPod(app.name, f"{app.name}-other-labels-harness",
                   {**mark, "app.kubernetes.io/name": f"{app.service.name}-canary"}, True, sa),
            AppPod(app.name, f"{app.name}-no-sidecar-harness", {**labels, **mark}, False, sa),
        ]
    return out


def service_selector(cfg: Any, app: Any, misconfigured: bool = True) -> dict[str, str]:
    """The app Service's selector the harness models: the configured labels, or for
    :func:`exposed_app` the label all three of its pods carry."""
    if misconfigured and app.name == exposed_app(cfg):
        return {SERVES_LABEL: app.name}
    return dict(app.selector_labels or {"app.kubernetes.io/name": app.service.name})


def identities(cfg: Any) -> dict[str, str]:
    """Workload identity name -> SPIFFE URI for every proxy the harness runs: the gateway (its
    configured or derived service account) and each app's service account."""

    gw_sa = cfg.gateway_service_account or "istio-ingressgateway"
    out = {GATEWAY_IDENTITY: spiffe_id(cfg.istio.gateway.namespace, gw_sa)}
    for p in app_pods(cfg):
        app = next(a for a in cfg.apps if a.name == p.app)
        out[p.service_account] = spiffe_id(app.service.namespace, p.service_account)
    return out


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
    status: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    """(kind, namespace, name) of a render object -> the ``status`` the cluster gives it."""
    ambient_pods: dict[str, AmbientPod] = field(default_factory=dict)
    """Pod name -> an ambient pod (apps, the mesh client): where the live run puts it."""
    waypoints: dict[str, AmbientPod] = field(default_factory=dict)
    """Waypoint proxy name -> its pod."""
    dynamic_hosts: set[str] = field(default_factory=set)
    """Service hosts whose endpoints change while the run goes on (oauth2-proxy's replicas come,
    go ready and terminate): their clusters get the endpoints through a watched file, as istiod
    pushes EDS (:mod:`.adapter`)."""


@dataclass
class AmbientPod:
    name: str
    namespace: str
    ip: str
    service_account: str
    app: str | None = None
    """The app it serves (None: the mesh client, or a waypoint)."""
    port: int = 0
    """The app's container port."""


def _meta(name: str, namespace: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {**(labels or {}), HARNESS_LABEL: "true"}}


def _pod(name: str, ns: str, labels: Mapping[str, str], ip: str, ports: Iterable[tuple[str, int]],
         service_account: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "harness",
                                            "ports": [{"name": n, "containerPort": p} for n, p in ports]}]}
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": _meta(name, ns, labels), "spec": spec,
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def _slice(svc: str, ns: str, pod: str | list[tuple[str, str]], ip: str,
           ports: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """An EndpointSlice of a Service: one pod (``pod``, ``ip``) or several ((pod, ip) pairs)."""
    meta = _meta(f"{svc}-harness", ns, {"kubernetes.io/service-name": svc})
    pods = pod if isinstance(pod, list) else [(pod, ip)]
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "name": n, "namespace": ns}} for n, a in pods],
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
    }


def _proxy_pod(pod: local_map.ProxyPod, ns: str, labels: Mapping[str, str],
               ports: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """An oauth2-proxy pod as the API server shows it: Ready as the kubelet's probe says, with a
    deletion timestamp once it is terminating."""
    obj = _pod(pod.name, ns, labels, pod.pod_ip, ports)
    ready = pod.ready and not pod.terminating
    obj["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    if pod.terminating:
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        obj["metadata"]["deletionGracePeriodSeconds"] = 30
    return obj


def _proxy_slice(svc: str, ns: str, pods: Iterable[local_map.ProxyPod],
                 ports: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """The Service's EndpointSlice: one endpoint per pod with the conditions Kubernetes writes."""
    meta = _meta(f"{svc}-harness", ns, {"kubernetes.io/service-name": svc})
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
        "addressType": "IPv4",
        "endpoints": [{"addresses": [p.pod_ip], "conditions": p.conditions,
                       "targetRef": {"kind": "Pod", "name": p.name, "namespace": ns}} for p in pods],
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
    }


def proxy_pods(ep: local_map.LocalEndpoints) -> list[local_map.ProxyPod]:
    """The oauth2-proxy pods of the run: its replicas, or the one pod at ``ep.oauth2_proxy``."""
    if ep.proxy_pods:
        return ep.proxy_pods
    return [local_map.ProxyPod("oauth2-proxy-harness", f"{POD_CIDR}.1.1", ep.oauth2_proxy,
                               ep.oauth2_proxy_metrics, ready=True)]


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


WAYPOINT_CLASS = "istio-waypoint"
MESH_CONTROLLER = "istio.io/mesh-controller"
"""The ``controllerName`` of the GatewayClass istiod serves waypoints with."""
GATEWAY_NAME_LABEL = f"{GATEWAY_API_GROUP}/gateway-name"
AMBIENT_REDIRECTION = "ambient.istio.io/redirection"
NODE = "harness-node"
HBONE_PORT = 15008
MESH_CLIENT = "mesh-client"
"""A workload in the first ambient namespace, in the mesh (its own ztunnel and identity) and not
the waypoint: tests send from it straight to the app pods, around the waypoint."""


def is_waypoint(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == "Gateway" and (obj.get("spec") or {}).get("gatewayClassName") == WAYPOINT_CLASS


def waypoint_pod_labels(name: str) -> dict[str, str]:
    """The pod labels of istiod's waypoint template (manifests/charts/istio-control/
    istio-discovery/files/waypoint.yaml)."""
    return {
        "sidecar.istio.io/inject": "false",
        "istio.io/dataplane-mode": "none",
        "service.istio.io/canonical-name": name,
        "service.istio.io/canonical-revision": "latest",
        GATEWAY_NAME_LABEL: name,
        "gateway.istio.io/managed": "istio.io-mesh-controller",
    }


def _ambient_pod(pod: AmbientPod, labels: Mapping[str, str], ports: Iterable[tuple[str, int]]) -> dict[str, Any]:
    obj = _pod(pod.name, pod.namespace, labels, pod.ip, ports)
    obj["metadata"]["annotations"] = {AMBIENT_REDIRECTION: "enabled"}
    obj["spec"]["serviceAccountName"] = pod.service_account
    obj["spec"]["nodeName"] = NODE
    return obj


def _ambient_additions(render: Any, ep: local_map.LocalEndpoints, w: Workloads) -> None:
    """Namespaces, waypoints (class, Service, pod, slice, status), the mesh client and ztunnel."""
    cfg = render.config
    namespaces = sorted({a.service.namespace for a in cfg.ambient_apps})
    for ns in namespaces:
        w.objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": ns, "labels": {"istio.io/dataplane-mode": "ambient", HARNESS_LABEL: "true"}}})
    waypoints = [o for o in render.kubernetes if is_waypoint(o)]
    if waypoints:
        w.objects.append({"apiVersion": f"{GATEWAY_API_GROUP}/v1", "kind": "GatewayClass",
                          "metadata": {"name": WAYPOINT_CLASS, "labels": {HARNESS_LABEL: "true"}},
                          "spec": {"controllerName": MESH_CONTROLLER}})
    for i, gw in enumerate(waypoints):
        name, ns = gw["metadata"]["name"], gw["metadata"].get("namespace") or "default"
        vip, ip = f"{POD_CIDR}.5.{i + 1}", f"{POD_CIDR}.6.{i + 1}"
        ports = [("status-port", 15021, "tcp"), ("mesh", HBONE_PORT, "hbone")]
        w.objects.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": _meta(name, ns, {GATEWAY_NAME_LABEL: name,
                                         f"{GATEWAY_API_GROUP}/gateway-class-name": WAYPOINT_CLASS}),
            "spec": {"selector": {GATEWAY_NAME_LABEL: name}, "clusterIP": vip, "ports": [
                {"name": n, "port": p, "targetPort": p, "protocol": "TCP", "appProtocol": a}
                for n, p, a in ports]},
        })
        pod = AmbientPod(f"{name}-harness", ns, ip, name)
        labels = waypoint_pod_labels(name)
        obj = _pod(pod.name, ns, labels, ip, [(n, p) for n, p, _ in ports])
        obj["spec"]["serviceAccountName"] = name
        w.objects.append(obj)
        w.objects.append(_slice(name, ns, pod.name, ip, [(n, p) for n, p, _ in ports]))
        w.status[("Gateway", ns, name)] = {"addresses": [
            {"type": "Hostname", "value": f"{name}.{ns}.svc.cluster.local"},
            {"type": "IPAddress", "value": vip}]}
        proxy = f"waypoint-{name}"
        w.waypoints[proxy] = pod
        if proxy in ep.waypoints:
            w.endpoints[(ip, HBONE_PORT)] = ep.waypoints[proxy]
        w.proxies.append(Proxy(proxy, "waypoint", ns, ip, labels))
    if namespaces:
        client = AmbientPod(f"{MESH_CLIENT}-harness", namespaces[0], f"{POD_CIDR}.8.1", MESH_CLIENT)
        w.ambient_pods[client.name] = client
        w.objects.append(_ambient_pod(client, {"app": MESH_CLIENT}, []))
        w.proxies.append(Proxy("ztunnel", "ztunnel", "istio-system", f"{POD_CIDR}.7.1", {}))


def workloads(render: Any, ep: local_map.LocalEndpoints) -> Workloads:
    """The objects and proxies the harness models for the render and the run's addresses."""
    cfg = render.config
    objs = [o for o in render.kubernetes if not is_patch(o)]
    patches = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o["metadata"].get("labels") or {}
               for o in render.kubernetes if is_patch(o)}
    w = Workloads()

    # The ingress gateway pods: the Gateway's namespace, labelled as its selector (Istio
    # Gateway) or as istiod labels the pods of a Gateway API Gateway it deploys.
    gws = [o for o in objs if o.get("kind") == "Gateway" and not is_waypoint(o)]
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
    w.proxies.append(Proxy("gateway", "router", gw_ns, gw_ip, gw_labels, identity=GATEWAY_IDENTITY))
    w.objects.append(_pod("ingressgateway-harness", gw_ns, gw_labels, gw_ip, [],
                          cfg.gateway_service_account or "istio-ingressgateway"))

    # oauth2-proxy: the render's Deployment and Service; the pods (one per replica the harness
    # runs) and the EndpointSlice are ours.
    proxy_svc, proxy_ns, proxy_ports = _oauth2_proxy_service(render)
    dep, svc = _oauth2_proxy_objects(render, proxy_svc, proxy_ns)
    pod_labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    cports = {p["name"]: int(p["containerPort"])
              for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", []) if p.get("name")}
    pods = proxy_pods(ep)
    slice_ports = []
    for sp in svc["spec"]["ports"]:
        target = _target_port(sp, cports)
        slice_ports.append((sp.get("name") or str(sp["port"]), target))
        for proxy_pod in pods:
            w.endpoints[(proxy_pod.pod_ip, target)] = (
                proxy_pod.http if sp["port"] == proxy_ports[0] else proxy_pod.metrics)
    for proxy_pod in pods:
        w.objects.append(_proxy_pod(proxy_pod, proxy_ns, pod_labels, list(cports.items())))
    w.objects.append(_proxy_slice(proxy_svc, proxy_ns, pods, slice_ports))
    w.dynamic_hosts.add(f"{proxy_svc}.{proxy_ns}.svc.cluster.local")

    # Each app: its pods, a Service with an http port (and the labels the stack patched onto it),
    # an EndpointSlice of its pods. A sidecar app's pods (app_pods: sidecar-injected, or not): a
    # sidecar-injected pod gets its own sidecar proxy, which the gateway reaches with Istio mTLS; a
    # pod without one is its echo app, reached directly. An ambient app: one pod, enrolled and
    # captured (its ztunnel and echo app run in the pod's network namespace).
    apods = app_pods(cfg, ep.misconfigured_pods)
    n = 0
    for i, app in enumerate(cfg.apps):
        ns, name, port = app.service.namespace, app.service.name, int(app.service.port)
        members = []
        if app.ambient:
            n += 1
            ip = f"{POD_CIDR}.2.{n}"
            ap = AmbientPod(f"{app.name}-harness", ns, ip, app.service.name, app=app.name, port=port)
            w.ambient_pods[ap.name] = ap
            w.objects.append(_ambient_pod(ap, app.selector_labels, [("http", port)]))
            members.append((ap.name, ip))
        for p in (p for p in apods if p.app == app.name):
            n += 1
            ip = f"{POD_CIDR}.2.{n}"
            labels = {**p.labels, TLS_MODE_LABEL: "istio"} if p.sidecar else dict(p.labels)
            w.objects.append(_pod(p.name, ns, labels, ip, [("http", port)], p.service_account))
            members.append((p.name, ip))
            echo = ep.pods.get(p.name) or ep.apps[app.name]
            if p.proxy is None:
                w.endpoints[(ip, port)] = echo
                continue
            listen = ep.pod_sidecars.get(p.name) or ep.sidecars[app.name]
            w.proxies.append(Proxy(p.proxy, "sidecar", ns, ip, labels, app=app.name,
                                   identity=p.service_account))
            w.endpoints[(ip, port)] = listen
            w.sidecar_listen[p.proxy] = listen
            w.inbound[p.proxy] = {port: echo}
        w.objects.append({
            "apiVersion": "v1", "kind": "Service", "metadata": _meta(name, ns, patches.get((ns, name))),
            "spec": {"selector": service_selector(cfg, app, ep.misconfigured_pods),
                     "clusterIP": f"{POD_CIDR}.3.{i + 1}",
                     "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]},
        })
        w.objects.append(_slice(name, ns, members, "", [("http", port)]))
    if cfg.ambient_apps:
        _ambient_additions(render, ep, w)
    return w


def _oauth2_proxy_objects(render: Any, svc_name: str, ns: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = next(d for d in render.kubernetes if d.get("kind") == "Deployment"
               and any(str(a).startswith("--provider=") for c in d["spec"]["template"]["spec"]["containers"]
                       for a in c.get("args", [])))
    svc = next(s for s in render.kubernetes if s.get("kind") == "Service" and not is_patch(s)
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
        if s.get("kind") != "Service" or is_patch(s):
            continue
        sel = s["spec"].get("selector") or {}
        if (s["metadata"].get("namespace") or "") == ns and sel and all(pod_labels.get(k) == v for k, v in sel.items()):
            ports = s["spec"]["ports"]
            http = [p["port"] for p in ports if p.get("name") == "http"] or [ports[0]["port"]]
            return s["metadata"]["name"], ns, http + [p["port"] for p in ports if p["port"] not in http]
    raise AdapterError("no Service selects the oauth2-proxy pods")


