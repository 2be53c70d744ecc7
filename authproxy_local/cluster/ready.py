"""What a user's cluster holds when a stack can be deployed safely, as plain API objects, and a
reader over such objects.

:func:`ready_cluster` gives the objects (istiod with the merged mesh config, gateway pods running as
the gateway's service account, the apps' Services and sidecar-injected pods carrying the apps'
workloadLabels (ambient apps: enrolled, captured pods and their waypoint's class or Gateway), the
TLS Secret or a Ready issuer, a default StorageClass, nodes)
and Keycloak's discovery answer. The preflight's unit tests read them through :class:`FakeReader`
and break one thing at a time; `make engine` creates them in its API server (what an Istio install,
the apps' deployments and the cluster's operator would have made) to run the preflight both ways.

Imports: :mod:`components`, :mod:`preflight`, PyYAML.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml

from components.authz import mesh_config
from components.config import GATEWAY_NAME_LABEL, App, StackConfig
from components.stack import provider_args
from preflight.ambient import REDIRECTION, WAYPOINT_CLASS
from preflight.checks import discovery_query
from preflight.core import Get, HttpGet, List, Query, Result, ServerVersion


def obj(api_version: str, kind: str, name: str, namespace: str | None = None,
        labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
        **body: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **body}


def pod(name: str, namespace: str, labels: dict[str, str], sidecar: bool = True,
        annotations: dict[str, str] | None = None, service_account: str | None = None) -> dict[str, Any]:
    containers = [{"name": "app", "image": "example/app:1"}]
    if sidecar:
        containers.append({"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.31.0"})
    spec: dict[str, Any] = {"containers": containers}
    if service_account:
        spec["serviceAccountName"] = service_account
    return obj("v1", "Pod", name, namespace, labels, annotations, spec=spec, status={"phase": "Running"})


AMBIENT_NAMESPACE = {"istio.io/dataplane-mode": "ambient"}
CAPTURED = {REDIRECTION: "enabled"}
"""What istio-cni writes on a pod ztunnel captures."""


def waypoint_objects(app: App) -> list[dict[str, Any]]:
    """What an ambient cluster holds for an ambient app's waypoint before the stack: the class
    istiod makes with ambient enabled, or the existing waypoint Gateway, Programmed."""
    wp = app.waypoint_ref
    if wp.create:
        return [obj("gateway.networking.k8s.io/v1", "GatewayClass", WAYPOINT_CLASS,
                    spec={"controllerName": "istio.io/mesh-controller"})]
    # the existing waypoint's pod as istiod deploys it (labelled with the Gateway's name), and the
    # account it runs as (a real API server admits no pod under a missing ServiceAccount)
    return [obj("v1", "ServiceAccount", wp.identity_account, app.waypoint_namespace),
            pod(f"{wp.name}-0", app.waypoint_namespace, {GATEWAY_NAME_LABEL: wp.name}, sidecar=False,
                service_account=wp.identity_account),
            obj("gateway.networking.k8s.io/v1", "Gateway", wp.name, app.waypoint_namespace,
                {"istio.io/waypoint-for": "service"},
                spec={"gatewayClassName": WAYPOINT_CLASS,
                      "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
                status={"conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed",
                                        "lastTransitionTime": "2026-01-01T00:00:00Z", "message": ""}]})]


@dataclass
class Cluster:
    objects: list[dict[str, Any]]
    version: str = "v1.35.4"
    unserved: set[tuple[str, str]] = field(default_factory=set)
    forbidden: set[tuple[str, str]] = field(default_factory=set)
    http: dict[str, Result] = field(default_factory=dict)

    def find(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [o for o in self.objects
                if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]

    def drop(self, kind: str, name: str | None = None) -> Cluster:
        gone = self.find(kind, name)
        assert gone, f"no {kind} {name} to remove"
        self.objects = [o for o in self.objects if not any(o is g for g in gone)]
        return self

    def copy(self) -> Cluster:
        return copy.deepcopy(self)


class FakeReader:
    """The preflight's reader over a :class:`Cluster` (records every query asked)."""

    where = "the fake cluster"

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.asked: list[Query] = []

    def read(self, q: Query) -> Result:
        self.asked.append(q)
        c = self.cluster
        if isinstance(q, ServerVersion):
            return Result("ok", {"gitVersion": c.version})
        if isinstance(q, HttpGet):
            return c.http.get(q.url, Result("error", detail="ConnectionRefusedError"))
        key = (q.api_version, q.kind)
        if key in c.forbidden:
            return Result("forbidden", detail="HTTP 403")
        if key in c.unserved:
            return Result("unserved")
        same = [o for o in c.objects if (o["apiVersion"], o["kind"]) == key
                and (q.namespace is None or o["metadata"].get("namespace") == q.namespace)]
        if isinstance(q, Get):
            hit = [o for o in same if o["metadata"]["name"] == q.name]
            if not hit:
                return Result("absent")
            found = copy.deepcopy(hit[0])
            if q.metadata_only:
                found = {"kind": "PartialObjectMetadata", "metadata": found["metadata"]}
            return Result("ok", found)
        assert isinstance(q, List)
        return Result("ok", [copy.deepcopy(o) for o in same
                             if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in q.labels)])


def ready_cluster(cfg: StackConfig) -> Cluster:
    """What a cluster holds when the stack ``cfg`` can be deployed safely."""
    objects: list[dict[str, Any]] = []
    ns = cfg.preflight.istio_namespace
    objects.append(obj("apps/v1", "Deployment", "istiod", ns,
                       {"app": "istiod", "istio.io/rev": "default",
                        "app.kubernetes.io/version": "1.31.0"},
                       spec={"selector": {"matchLabels": {"app": "istiod"}},
                             "template": {"metadata": {"labels": {"app": "istiod"}},
                                          "spec": {"containers": [
                                              {"name": "discovery",
                                               "image": "docker.io/istio/pilot:1.31.0"}]}}}))
    mesh = mesh_config(cfg.istio.ext_authz_mode, provider_args(cfg))
    objects.append(obj("v1", "ConfigMap", "istio", ns, data={"mesh": yaml.safe_dump(mesh)}))
    gw = cfg.istio.gateway
    gw_sa = cfg.gateway_service_account
    if gw_sa and gw_sa != "default":
        objects.append(obj("v1", "ServiceAccount", gw_sa, gw.namespace))
    if cfg.istio.ingress_api == "istio":
        objects.append(pod("ingressgateway-0", gw.namespace, dict(gw.selector),
                           service_account=gw_sa))
    elif cfg.istio.gateway_api.create:
        objects.append(obj("gateway.networking.k8s.io/v1", "GatewayClass",
                           cfg.istio.gateway_api.class_name,
                           spec={"controllerName": "istio.io/gateway-controller"}))
    else:
        ga = cfg.istio.gateway_api
        objects.append(obj("gateway.networking.k8s.io/v1", "Gateway", gw.name, gw.namespace,
                           spec={"listeners": [{"name": ga.http_listener}, {"name": ga.https_listener}]}))
        objects.append(pod(f"{gw.name}-istio-0", gw.namespace, {GATEWAY_NAME_LABEL: gw.name},
                           service_account=gw_sa))
    seen_ns: set[str] = set()
    ambient_ns = {a.service.namespace for a in cfg.ambient_apps}
    for app in cfg.apps:
        s = app.service
        if s.namespace not in seen_ns:
            objects.append(obj("v1", "Namespace", s.namespace, labels=AMBIENT_NAMESPACE if s.namespace
                               in ambient_ns else {"istio-injection": "enabled"}))
            seen_ns.add(s.namespace)
        # The Service selects `app: <name>`; the pods also carry the labels the app's sidecar
        # policies select (apps[].workloadLabels), as a chart's pods carry both.
        objects.append(obj("v1", "Service", s.name, s.namespace,
                           spec={"selector": {"app": s.name}, "ports": [{"port": s.port}]}))
        labels = {**app.selector_labels, "app": s.name}
        if app.ambient:
            objects.append(pod(f"{s.name}-app-0", s.namespace, labels, sidecar=False, annotations=CAPTURED))
            objects += [o for o in waypoint_objects(app) if o not in objects]
        else:
            objects.append(pod(f"{s.name}-app-0", s.namespace, labels))
    for ns in sorted({gw.namespace, *(a.service.namespace for a in cfg.apps)}):
        # the account pods run as by default (the ServiceAccount admission plugin requires it)
        objects.append(obj("v1", "ServiceAccount", "default", ns))
    cm = cfg.istio.cert_manager
    if cm.issuer:
        objects.append(obj("cert-manager.io/v1", cm.issuer_kind, cm.issuer,
                           gw.namespace if cm.issuer_kind == "Issuer" else None,
                           spec={"selfSigned": {}},
                           status={"conditions": [{"type": "Ready", "status": "True"}]}))
    else:
        objects.append(obj("v1", "Secret", gw.tls_credential_name, gw.namespace,
                           type="kubernetes.io/tls", data={"tls.crt": "Y2VydA==", "tls.key": "a2V5"}))
    sc = cfg.redis.persistence.storage_class or "standard"
    objects.append(obj("storage.k8s.io/v1", "StorageClass", sc,
                       annotations={"storageclass.kubernetes.io/is-default-class": "true"},
                       provisioner="example.com/disk"))
    for i in range(3):
        objects.append(obj("v1", "Node", f"node-{i}",
                           status={"conditions": [{"type": "Ready", "status": "True"}]}))
    kc = cfg.keycloak
    realm = kc.realm if kc.realm_mode == "existing" else kc.admin.realm
    http = {discovery_query(cfg).url: Result("ok", {"status": 200, "json": {
        "issuer": f"{kc.url}/realms/{realm}"}})}
    return Cluster(objects, http=http)


__all__ = ["Cluster", "FakeReader", "obj", "pod", "ready_cluster", "waypoint_objects"]
