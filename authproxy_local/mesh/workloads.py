"""What a cluster would give istiod and the render lacks: the gateway pods, the app pods and
Services, the oauth2-proxy pod and every EndpointSlice, each labelled :data:`HARNESS_LABEL` so a
reader can tell them from the render's objects (:func:`workloads`).

Nothing here reads an Istio object to decide what Envoy should do: that is istiod's code.

Imports: :mod:`authproxy_local.core.local_map`, :mod:`.envoy_config`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authproxy_local.core import local_map
from authproxy_local.core.pki import spiffe_id

from .envoy_config import HARNESS_LABEL, POD_CIDR


class AdapterError(RuntimeError):
    """The translator's input or output holds something the adapter has no local counterpart for."""


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


def app_pods(cfg: Any) -> list[AppPod]:
    """The pods the harness models, per app: one sidecar-injected pod with the configured
    ``workloadLabels``; for :func:`exposed_app` also, behind the same Service, a sidecar-injected
    pod with *other* labels (the sidecar policies miss it) and a pod *without* a sidecar, as a
    cluster where the selector or the injection is wrong would have them. The gateway must keep a
    user outside the app's groups out of all three."""
    out = []
    exposed = exposed_app(cfg)
    for app in cfg.apps:
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


def service_selector(cfg: Any, app: Any) -> dict[str, str]:
    """The app Service's selector the harness models: the configured labels, or for
    :func:`exposed_app` the label all three of its pods carry."""
    if app.name == exposed_app(cfg):
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
    w.proxies.append(Proxy("gateway", "router", gw_ns, gw_ip, gw_labels, identity=GATEWAY_IDENTITY))
    w.objects.append(_pod("ingressgateway-harness", gw_ns, gw_labels, gw_ip, [],
                          cfg.gateway_service_account or "istio-ingressgateway"))

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

    # Each app: its pods (app_pods: sidecar-injected, or not), a Service with an http port, an
    # EndpointSlice of its pods. A sidecar-injected pod gets its own sidecar proxy, which the
    # gateway reaches with Istio mTLS; a pod without one is its echo app, reached directly.
    pods = app_pods(cfg)
    n = 0
    for i, app in enumerate(cfg.apps):
        ns, name, port = app.service.namespace, app.service.name, int(app.service.port)
        members = []
        for p in (p for p in pods if p.app == app.name):
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
            "apiVersion": "v1", "kind": "Service", "metadata": _meta(name, ns),
            "spec": {"selector": service_selector(cfg, app), "clusterIP": f"{POD_CIDR}.3.{i + 1}",
                     "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]},
        })
        w.objects.append(_slice(name, ns, members, "", [("http", port)]))
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


