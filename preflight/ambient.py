"""The preflight check of ambient apps (``apps[].dataplane: ambient``, docs/ambient.md): the
ambient counterpart of ``app-sidecar``.

A sidecar app is protected by its pods' sidecars; an ambient app by its waypoint (the JWT and group
checks) and by ztunnel at its pods (only the waypoint may reach them). So before anything is
created this checks, per ambient app, that istiod runs Istio 1.24+ (the gateway honours
``istio.io/ingress-use-waypoint``), that the pods behind its Service run **without** a sidecar, are
enrolled (``istio.io/dataplane-mode: ambient``) and captured by ztunnel (istio-cni's
``ambient.istio.io/redirection: enabled``), and that its waypoint can exist: the ``istio-waypoint``
GatewayClass (istiod makes it only with ambient enabled) for a waypoint the stack creates, or the
existing waypoint Gateway, of that class and Programmed, its pods running as the identity
ztunnel's L4 policy admits (``apps[].waypoint.serviceAccount``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from components.config import GATEWAY_NAME_LABEL, MIN_AMBIENT_ISTIO, App, StackConfig
from preflight.checks import (
    SIDECAR,
    K,
    dataplane,
    has_sidecar,
    istio_version,
    istiod,
    istiod_query,
    live_pods,
    no_selector,
    service_pods_query,
    service_query,
)
from preflight.core import Failure, Get, List, Query, Snapshot, check, labels_of

NAME = "app-ambient"
WAYPOINT_CLASS = "istio-waypoint"
"""The GatewayClass of waypoints; istiod creates it when ambient is enabled (PILOT_ENABLE_AMBIENT,
the ambient profile): pilot/pkg/config/kube/gatewaycommon/classinfo.go."""
REDIRECTION = "ambient.istio.io/redirection"
"""istio-cni's annotation on a pod once ztunnel captures its traffic (value `enabled`)."""
GATEWAY_API = "gateway.networking.k8s.io/v1"


def _meta(o: Mapping[str, Any], key: str) -> dict[str, str]:
    return dict((o.get("metadata") or {}).get(key) or {})


def _first(pods: list[dict[str, Any]]) -> str:
    return str((pods[0].get("metadata") or {}).get("name", ""))


def waypoint_query(app: App) -> Get:
    """The app's waypoint: the class a created one needs, or the existing Gateway."""
    wp = app.waypoint_ref
    if wp.create:
        return Get(GATEWAY_API, "GatewayClass", WAYPOINT_CLASS)
    return Get(GATEWAY_API, "Gateway", wp.name, app.waypoint_namespace)


def waypoint_pods_query(app: App) -> List:
    """The pods of the app's waypoint (istiod's waypoint template labels them with the Gateway's
    name)."""
    return List("v1", "Pod", app.waypoint_namespace, labels_of({GATEWAY_NAME_LABEL: app.waypoint_ref.name}))


def _reads(cfg: StackConfig, snap: Snapshot) -> list[Query]:
    apps = cfg.ambient_apps
    if not apps:
        return []
    reads: list[Query] = [istiod_query(cfg)]
    for app in apps:
        reads += [service_query(app), Get("v1", "Namespace", app.service.namespace), waypoint_query(app)]
        if not app.waypoint_ref.create:  # an existing waypoint: its pods' identity
            reads.append(waypoint_pods_query(app))
        q = service_pods_query(app, snap)
        if q is not None:
            reads.append(q)
    return reads


def _programmed(gateway: Mapping[str, Any]) -> tuple[bool, str]:
    for c in (gateway.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Programmed":
            return c.get("status") == "True", str(c.get("message") or c.get("reason") or "")
    return False, "no Programmed condition: istiod has not deployed it"


def _waypoint(i: int, app: App, snap: Snapshot) -> Iterator[Failure]:
    q = waypoint_query(app)
    wp = app.waypoint_ref
    if snap.state(q) == "unserved":
        yield Failure(NAME, (
            "the Gateway API CRDs are not installed (no gateway.networking.k8s.io/v1 API), so no "
            "waypoint can exist: install them (standard channel) before Istio's ambient profile"),
            app.name)
        return
    found = snap.obj(q)
    if wp.create:
        if found is None:
            yield Failure(NAME, (
                f"GatewayClass {WAYPOINT_CLASS!r} does not exist, so istiod would not deploy the "
                "app's waypoint: install Istio with the ambient profile (istiod with ambient "
                "enabled, istio-cni, ztunnel)"), app.name)
        return
    where = f"{app.waypoint_namespace}/{wp.name}"
    if found is None:
        yield Failure(NAME, (
            f"waypoint Gateway {where} does not exist ({K}apps[{i}].waypoint.create is false): "
            f"create it (`istioctl waypoint apply -n {app.waypoint_namespace} --name {wp.name}`), "
            f"or set {K}apps[{i}].waypoint.create true"), app.name)
        return
    cls = (found.get("spec") or {}).get("gatewayClassName")
    if cls != WAYPOINT_CLASS:
        yield Failure(NAME, (
            f"Gateway {where} is of class {cls!r}, not a waypoint ({WAYPOINT_CLASS!r}): fix "
            f"{K}apps[{i}].waypoint.name / namespace"), app.name)
        return
    if _meta(found, "labels").get("istio.io/waypoint-for", "service") not in ("service", "all"):
        yield Failure(NAME, (
            f"waypoint {where} is for {_meta(found, 'labels')['istio.io/waypoint-for']!r} traffic; "
            "the app's Service needs one for `service` or `all` (label istio.io/waypoint-for)"),
            app.name)
        return
    ok, why = _programmed(found)
    if not ok:
        yield Failure(NAME, f"waypoint {where} is not Programmed ({why[:120]}): fix it first", app.name)
        return
    # ztunnel's L4 policy on the app's pods admits only the waypoint's identity
    # (apps[].waypoint.serviceAccount, default its name): pods under another account are refused
    # (closed, but every request fails)
    account = wp.identity_account
    other = sorted({str((p.get("spec") or {}).get("serviceAccountName") or "default")
                    for p in live_pods(snap.objs(waypoint_pods_query(app)))} - {account})
    if other:
        yield Failure(NAME, (
            f"the pods of waypoint {where} run as service account(s) {other}, not {account!r}: "
            "ztunnel's L4 policy on the app's pods admits only the waypoint's identity and would "
            f"refuse every request it forwards. Set {K}apps[{i}].waypoint.serviceAccount to "
            f"{other[0]!r}"), app.name)


@check(NAME, "ambient apps: istiod is 1.24+; the pods behind the Service run without a sidecar, "
       "enrolled in ambient and captured by ztunnel; the waypoint class, or the existing "
       "waypoint, exists and is Programmed", _reads)
def app_ambient(cfg: StackConfig, snap: Snapshot) -> Iterator[Failure]:
    if not cfg.ambient_apps:
        return
    d, _ = istiod(cfg, snap)  # no istiod: istio-control-plane says so
    v = istio_version(d) if d is not None else None
    if v is not None and v[:2] < MIN_AMBIENT_ISTIO:
        yield Failure(NAME, (
            f"istiod runs Istio {'.'.join(map(str, v))}; ambient apps need "
            f"{'.'.join(map(str, MIN_AMBIENT_ISTIO))} or newer (the gateway honours "
            f"istio.io/ingress-use-waypoint since): upgrade Istio, or set the apps' "
            f"{K}apps[].dataplane sidecar"))
    seen: set[Get] = set()
    for i, app in enumerate(cfg.apps):
        if not app.ambient:
            continue
        if waypoint_query(app) not in seen:  # apps sharing a waypoint: one line for it
            seen.add(waypoint_query(app))
            yield from _waypoint(i, app, snap)
        s = app.service
        if snap.obj(service_query(app)) is None:
            continue  # app-service says so
        q = service_pods_query(app, snap)
        if q is None:
            yield no_selector(NAME, app)
            continue
        pods = live_pods(snap.objs(q))
        if not pods:
            yield Failure(NAME, (
                f"no pods behind Service {s.namespace}/{s.name}: deploy or scale up the app (in a "
                "namespace enrolled in ambient) first"), app.name)
            continue
        ns = snap.obj(Get("v1", "Namespace", s.namespace))
        injected = [p for p in pods if has_sidecar(p)]
        outside = [p for p in pods if not has_sidecar(p) and dataplane(p, ns) != "ambient"]
        uncaptured = [p for p in pods if dataplane(p, ns) == "ambient"
                      and _meta(p, "annotations").get(REDIRECTION) != "enabled"]
        if injected:
            yield Failure(NAME, (
                f"{len(injected)} of {len(pods)} pods of Service {s.namespace}/{s.name} run an "
                f"{SIDECAR} sidecar (e.g. {_first(injected)}), which ambient policies do not reach: "
                f"turn injection off for {s.namespace} (`kubectl label namespace {s.namespace} "
                f"istio-injection-`) and restart the app, or set {K}apps[{i}].dataplane sidecar"),
                app.name)
        elif outside:
            yield Failure(NAME, (
                f"{len(outside)} of {len(pods)} pods of Service {s.namespace}/{s.name} are not in "
                f"ambient mode (e.g. {_first(outside)}): `kubectl label namespace {s.namespace} "
                "istio.io/dataplane-mode=ambient` (and no istio.io/dataplane-mode=none on the pods)"),
                app.name)
        elif uncaptured:
            yield Failure(NAME, (
                f"{len(uncaptured)} of {len(pods)} pods of Service {s.namespace}/{s.name} are "
                f"enrolled but not captured by ztunnel (no {REDIRECTION}: enabled, e.g. "
                f"{_first(uncaptured)}): check that istio-cni and ztunnel run on their nodes"),
                app.name)
        wanted = app.selector_labels
        unselected = [p for p in pods if any(_meta(p, "labels").get(k) != v for k, v in wanted.items())]
        if unselected:
            yield Failure(NAME, (
                f"{len(unselected)} of {len(pods)} pods of Service {s.namespace}/{s.name} do not carry "
                f"{K}apps[{i}].workloadLabels {wanted} (e.g. {_first(unselected)}), so ztunnel's L4 "
                "policy does not select them and they are reachable around the waypoint: set "
                "workloadLabels to labels every pod behind the Service carries"), app.name)


__all__ = ["REDIRECTION", "WAYPOINT_CLASS", "app_ambient", "waypoint_pods_query", "waypoint_query"]
