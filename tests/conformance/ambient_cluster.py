"""What an ambient cluster gives istiod for the ambient render, on top of what the harness's
translation adapter already models (authproxy_local/xds_adapter.workloads: gateway and
oauth2-proxy pods, app Services and pods, EndpointSlices). Each addition is what a component of a
real cluster would create, never a decision of the stack:

- the app namespace labelled ``istio.io/dataplane-mode: ambient`` (the user enrols it);
- the app pods annotated ``ambient.istio.io/redirection: enabled`` (istio-cni, once it set up the
  pod's redirection) and running as a service account of their own;
- the app Services carrying the labels of the stack's patch (server-side apply merges them into
  the user's Service; the render shows the patch as a Service without spec);
- per waypoint: the GatewayClass ``istio-waypoint`` (istiod's gatewayclass controller), the
  Gateway's ``status.addresses`` (istiod's status writer, once a waypoint pod is ready), and the
  waypoint's Service, pod and EndpointSlice (istiod's deployment controller, from its
  ``waypoint`` template: Service named as the Gateway, ports status-port 15021 and ``mesh`` 15008
  appProtocol hbone, pods labelled ``gateway.networking.k8s.io/gateway-name`` and running as the
  Gateway's service account).

The proxies: the ingress gateway (router), each waypoint (type ``waypoint``) and one ztunnel.
The app sidecars of the sidecar harness are dropped: ambient pods have none.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from authproxy_local.core import local_map
from authproxy_local.mesh import workloads as xa
from authproxy_local.mesh.envoy_config import HARNESS_LABEL, POD_CIDR
from authproxy_local.render import is_patch

WAYPOINT_CLASS = "istio-waypoint"
MESH_CONTROLLER = "istio.io/mesh-controller"
MESH_CONTROLLER_LABEL = "istio.io-mesh-controller"
GATEWAY_NAME = "gateway.networking.k8s.io/gateway-name"
REDIRECTION = "ambient.istio.io/redirection"


def waypoint_labels(name: str) -> dict[str, str]:
    """The waypoint template's pod labels (manifests/charts/istio-control/istio-discovery/files/
    waypoint.yaml)."""
    return {
        "sidecar.istio.io/inject": "false",
        "istio.io/dataplane-mode": "none",
        "service.istio.io/canonical-name": name,
        "service.istio.io/canonical-revision": "latest",
        GATEWAY_NAME: name,
        "gateway.istio.io/managed": MESH_CONTROLLER_LABEL,
    }


def ambient_input(render: Any, ep: local_map.LocalEndpoints, directory: Path) -> list[xa.Proxy]:
    """Write the translator's input for the ambient render into ``directory``; the proxies."""
    cfg = render.config
    waypoints = [o for o in render.kubernetes if o["kind"] == "Gateway"
                 and o["spec"].get("gatewayClassName") == WAYPOINT_CLASS]
    # The adapter models the ingress gateway (the render's one other Gateway).
    w = xa.workloads(dataclasses.replace(
        render, kubernetes=[o for o in render.kubernetes if not any(o is g for g in waypoints)]), ep)
    ambient = {a.name: a for a in cfg.ambient_apps}
    patches = {(o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"].get("labels", {})
               for o in render.kubernetes if is_patch(o)}
    objects: list[dict[str, Any]] = []
    namespaces = sorted({a.service.namespace for a in ambient.values()})
    for ns in namespaces:
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": ns, "labels": {"istio.io/dataplane-mode": "ambient", HARNESS_LABEL: "true"}}})
    app_pods = {f"{a.name}-harness": a for a in ambient.values()}
    for o in w.objects:
        o = copy.deepcopy(o)
        meta = o["metadata"]
        if o["kind"] == "Pod" and meta["name"] in app_pods:
            meta.setdefault("annotations", {})[REDIRECTION] = "enabled"
            o["spec"]["serviceAccountName"] = app_pods[meta["name"]].name
            o["spec"]["nodeName"] = "node-1"
        if o["kind"] == "Service":
            meta["labels"].update(patches.get((meta["namespace"], meta["name"]), {}))
        objects.append(o)
    proxies = [p for p in w.proxies if not (p.type == "sidecar" and p.app in ambient)]
    if waypoints:
        objects.append({"apiVersion": f"{xa.GATEWAY_API_GROUP}/v1", "kind": "GatewayClass",
                        "metadata": {"name": WAYPOINT_CLASS, "labels": {HARNESS_LABEL: "true"}},
                        "spec": {"controllerName": MESH_CONTROLLER}})
    statuses: dict[tuple[str, str], dict[str, Any]] = {}
    for i, gw in enumerate(waypoints):
        name, ns = gw["metadata"]["name"], gw["metadata"]["namespace"]
        vip, ip = f"{POD_CIDR}.5.{i + 1}", f"{POD_CIDR}.6.{i + 1}"
        ports = [("status-port", 15021, "tcp"), ("mesh", 15008, "hbone")]
        objects.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": {
                GATEWAY_NAME: name, "gateway.networking.k8s.io/gateway-class-name": WAYPOINT_CLASS,
                HARNESS_LABEL: "true"}},
            "spec": {"selector": {GATEWAY_NAME: name}, "clusterIP": vip, "ports": [
                {"name": n, "port": p, "targetPort": p, "protocol": "TCP", "appProtocol": a}
                for n, p, a in ports]},
        })
        pod = f"{name}-harness"
        labels = waypoint_labels(name)
        pod_obj = xa._pod(pod, ns, labels, ip, [(n, p) for n, p, _ in ports])
        pod_obj["spec"]["serviceAccountName"] = name
        objects.append(pod_obj)
        objects.append(xa._slice(name, ns, pod, ip, [(n, p) for n, p, _ in ports]))
        statuses[(ns, name)] = {"addresses": [
            {"type": "Hostname", "value": f"{name}.{ns}.svc.cluster.local"},
            {"type": "IPAddress", "value": vip}]}
        proxies.append(xa.Proxy(f"waypoint-{name}", "waypoint", ns, ip, labels))
    proxies.append(xa.Proxy("ztunnel", "ztunnel", "istio-system", f"{POD_CIDR}.7.1", {}))

    rendered = []
    for o in render.kubernetes:
        if is_patch(o):
            continue
        key = (o["metadata"].get("namespace"), o["metadata"]["name"])
        if o["kind"] == "Gateway" and key in statuses:
            o = {**o, "status": statuses[key]}
        rendered.append(o)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kubernetes.yaml").write_text(yaml.safe_dump_all(rendered, sort_keys=False))
    (directory / "harness-additions.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    (directory / "mesh-config.yaml").write_text(yaml.safe_dump(render.mesh_config or {}, sort_keys=False))
    (directory / "proxies.json").write_text(json.dumps(
        [{"name": p.name, "type": p.type, "namespace": p.namespace, "ip": p.ip, "labels": p.labels}
         for p in proxies], indent=1))
    return proxies
