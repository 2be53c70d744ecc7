"""Preflight: do the sidecar policies select the pods that serve each app, and do those pods run a
sidecar? Does the gateway run as the identity the sidecars and waypoints admit tokens from?

The sidecar policies, the STRICT mTLS PeerAuthentication and the JWT check of an app select its
pods by ``apps[].workloadLabels`` (components/authz.py). Nothing is guessed, but a configured
selector can still be wrong: pods behind the app's Service that the labels miss serve the app with
no sidecar check, and labels that select no sidecar-injected pod check nothing (with the built-in
``app-sidecar`` check, which proves every pod behind the Service is sidecar-injected, labels that
cover those pods select sidecar-injected pods; one line per problem). And the sidecars
(and an ambient app's waypoint) admit a user's token only from the gateway's workload identity
(``istio.gateway.serviceAccount``), so gateway pods running under another service account are
refused (fail closed, but every request fails); a stack whose apps are all checked only at the
gateway does not depend on that account, and does not read it.

Pure functions over the objects read from the cluster (dicts as the API server returns them), so
the tests give them plain data; the two checks at the end plug them into the preflight framework
(:mod:`preflight.core`: ``reads`` names the objects, ``verify`` yields one line per problem).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from components.config import NAMESPACE, App, StackConfig
from preflight.checks import has_sidecar, live_pods, service_query
from preflight.core import Failure, List, Query, Snapshot, check, labels_of

K = NAMESPACE + ":"
CHECK_NAME = "app-workload-labels"
GATEWAY_CHECK_NAME = "gateway-identity"


def labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def selects(selector: Mapping[str, str], obj: Mapping[str, Any]) -> bool:
    """Whether an equality selector (``matchLabels``) selects the object."""
    have = labels(obj)
    return all(have.get(k) == v for k, v in selector.items())


def service_selector(service: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((service or {}).get("spec") or {}).get("selector") or {})


def workload_label_problems(index: int, app: App, service: Mapping[str, Any] | None,
                            namespace_pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """What is wrong with ``apps[index].workloadLabels`` given the app's Service and the pods of
    its namespace (at most one line); empty when the sidecar policies select every pod the Service
    sends traffic to. What the ``app-sidecar`` check reports is left to it: a missing Service, a
    Service without a selector, no pods behind it, pods behind it without a sidecar (when the labels
    cover every pod behind the Service, a sidecar on each of those is a sidecar the labels select).
    Apps without sidecar checks have nothing to select."""
    if not app.sidecar_checks or service is None:
        return []
    sel = service_selector(service)
    if not sel:
        return []
    key = f"{K}apps[{index}].workloadLabels"
    s = app.service
    wanted = app.selector_labels
    pods = live_pods(namespace_pods)
    behind = [p for p in pods if selects(sel, p)]
    missed = [p for p in behind if not selects(wanted, p)]
    if not missed:
        return []
    chosen = [p for p in pods if selects(wanted, p)]
    if not chosen:
        what = "select no pod at all"
    elif not any(has_sidecar(p) for p in chosen):
        what = f"select {len(chosen)} pods, none of them sidecar-injected"
    else:
        what = f"select {len(chosen)} pods"
    return [f"{len(missed)} of {len(behind)} pods behind Service {s.namespace}/{s.name} (e.g. "
            f"{name(missed[0])}) do not carry {key} {wanted}, so the app's sidecar policies and "
            f"STRICT mTLS miss them; in namespace {s.namespace} they {what}. Set {key} to "
            f"labels every pod behind the Service carries (the Service's selector is {sel})"]


def gateway_identity_checkers(cfg: StackConfig) -> list[str]:
    """Who admits users' tokens only from the gateway's identity, as the failure line names them
    ("the sidecars of ['a']", "the waypoints of ['b']"); empty when no app's own proxy checks
    (every app `authorizeAt: gateway`) or the stack installs Istio and its gateway (whose account
    it knows): then the gateway's account matters to nothing and is not read."""
    if cfg.istio.install.enabled:
        return []
    sidecar = [a.name for a in cfg.apps if a.sidecar_checks]
    waypoint = [a.name for a in cfg.apps if a.waypoint_checks]
    return ([f"the sidecars of {sidecar}"] if sidecar else []) + (
        [f"the waypoints of {waypoint}"] if waypoint else [])


def gateway_identity_problems(cfg: StackConfig, gateway_pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """The gateway pods must run as the service account whose identity the apps' sidecars and
    waypoints admit (otherwise every signed-in request is refused there)."""
    checkers = gateway_identity_checkers(cfg)
    if not checkers:
        return []
    sa = cfg.gateway_service_account
    pods = live_pods(gateway_pods)
    other = sorted({str((p.get("spec") or {}).get("serviceAccountName") or "default") for p in pods}
                   - {sa or ""})
    if not pods or not other:
        return []  # no gateway pods: the gateway check reports that
    return [f"the gateway pods in {cfg.istio.gateway.namespace} run as service account(s) {other}, "
            f"not {sa!r}: {' and '.join(checkers)} would refuse every request they forward. Set "
            f"{K}istio.gateway.serviceAccount to {other[0]!r}"]


# --------------------------------------------------------------------------------------------
# The checks, in the preflight framework
# --------------------------------------------------------------------------------------------


def _pods(namespace: str, selector: Mapping[str, str]) -> List:
    return List("v1", "Pod", namespace, labels_of(selector))


def _label_reads(cfg: StackConfig, snap: Snapshot) -> list[Query]:
    reads: list[Query] = []
    if cfg.istio.install.enabled:
        return reads  # the stack installs Istio: no pod can have a sidecar before the first up
    for app in cfg.apps:
        if not app.sidecar_checks:
            continue
        svc = service_query(app)
        reads.append(svc)
        sel = service_selector(snap.obj(svc))
        if sel:
            reads.append(_pods(app.service.namespace, sel))
        reads.append(_pods(app.service.namespace, app.selector_labels))
    return reads


@check(CHECK_NAME, "each app's workloadLabels select every pod behind its Service (the sidecar "
       "policies and STRICT mTLS select those labels; app-sidecar proves those pods are "
       "sidecar-injected)",
       _label_reads)
def app_workload_labels(cfg: StackConfig, snap: Snapshot) -> Iterator[Failure]:
    if cfg.istio.install.enabled:
        return
    for i, app in enumerate(cfg.apps):
        if not app.sidecar_checks:
            continue
        svc = snap.obj(service_query(app))
        sel = service_selector(svc)
        pods: dict[str, Mapping[str, Any]] = {}
        for q in ([_pods(app.service.namespace, sel)] if sel else []) + [
                _pods(app.service.namespace, app.selector_labels)]:
            pods.update({name(p): p for p in snap.objs(q)})
        for problem in workload_label_problems(i, app, svc, pods.values()):
            yield Failure(CHECK_NAME, problem, app.name)


def _gateway_pod_reads(cfg: StackConfig, _snap: Snapshot) -> list[Query]:
    if not gateway_identity_checkers(cfg):
        return []
    return [_pods(cfg.istio.gateway.namespace, cfg.gateway_pod_labels)]


@check(GATEWAY_CHECK_NAME, "the gateway pods run as the service account whose identity the "
       "apps' sidecars and waypoints admit tokens from (istio.gateway.serviceAccount)",
       _gateway_pod_reads)
def gateway_identity(cfg: StackConfig, snap: Snapshot) -> Iterator[Failure]:
    if not _gateway_pod_reads(cfg, snap):
        return
    pods = snap.objs(_pods(cfg.istio.gateway.namespace, cfg.gateway_pod_labels))
    for problem in gateway_identity_problems(cfg, pods):
        yield Failure(GATEWAY_CHECK_NAME, problem)
