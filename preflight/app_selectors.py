"""Preflight: do the sidecar policies select the pods that serve each app, and do those pods run a
sidecar? Does the gateway run as the identity the sidecars admit tokens from?

The sidecar policies, the STRICT mTLS PeerAuthentication and the JWT check of an app select its
pods by ``apps[].workloadLabels`` (components/authz.py). Nothing is guessed, but a configured
selector can still be wrong: pods behind the app's Service that the labels miss serve the app with
no sidecar check, and labels that select no sidecar-injected pod check nothing. And the sidecars
admit a user's token only from the gateway's workload identity (``istio.gateway.serviceAccount``),
so gateway pods running under another service account are refused (fail closed, but every request
fails).

Pure functions over the objects read from the cluster (dicts as the API server returns them), so
the tests give them plain data; the preflight framework reads the cluster and registers the check
(:mod:`preflight.checks` style: ``reads`` names the objects, ``verify`` yields one line per
problem).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from components.config import NAMESPACE, App, StackConfig

K = NAMESPACE + ":"
SIDECAR = "istio-proxy"
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


def live(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods that are or will be running (not finished, not being deleted)."""
    return [p for p in pods
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and not (p.get("metadata") or {}).get("deletionTimestamp")]


def has_sidecar(pod: Mapping[str, Any]) -> bool:
    """An injected ``istio-proxy`` container (or native sidecar: an init container that always
    restarts)."""
    spec = pod.get("spec") or {}
    if any(c.get("name") == SIDECAR for c in spec.get("containers") or []):
        return True
    return any(c.get("name") == SIDECAR and c.get("restartPolicy") == "Always"
               for c in spec.get("initContainers") or [])


def service_selector(service: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((service or {}).get("spec") or {}).get("selector") or {})


def workload_label_problems(index: int, app: App, service: Mapping[str, Any] | None,
                            namespace_pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """What is wrong with ``apps[index].workloadLabels`` given the app's Service and the pods of
    its namespace; empty when the sidecar policies select every pod the Service sends traffic to
    and at least one of the selected pods runs a sidecar. A missing Service is another
    check's (``app-service``) to report; apps without sidecar checks have nothing to select."""
    if not app.sidecar_checks or service is None:
        return []
    key = f"{K}apps[{index}].workloadLabels"
    s = app.service
    wanted = app.selector_labels
    sel = service_selector(service)
    if not sel:
        return [f"Service {s.namespace}/{s.name} has no pod selector, so nothing shows which pods "
                f"serve the app; give it one, or set {K}apps[{index}].authorizeAt to 'gateway'"]
    pods = live(namespace_pods)
    behind = [p for p in pods if selects(sel, p)]
    missed = [p for p in behind if not selects(wanted, p)]
    problems = []
    if missed:
        problems.append(
            f"{len(missed)} of {len(behind)} pods behind Service {s.namespace}/{s.name} (e.g. "
            f"{name(missed[0])}) do not carry {key} {wanted}: the app's sidecar policies and STRICT "
            f"mTLS miss them. Set {key} to labels those pods carry (the Service's selector is "
            f"{sel})")
    chosen = [p for p in pods if selects(wanted, p)]
    if not any(has_sidecar(p) for p in chosen):
        what = "no pod" if not chosen else f"{len(chosen)} pods, none with an {SIDECAR} sidecar"
        problems.append(
            f"{key} {wanted} selects {what} in namespace {s.namespace}: the sidecar checks of the "
            f"app would run nowhere. Fix the labels (the Service's selector is {sel}) or enable "
            f"sidecar injection for {s.namespace} and restart the app")
    return problems


def gateway_identity_problems(cfg: StackConfig, gateway_pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """The gateway pods must run as the service account whose identity the apps' sidecars admit
    (otherwise every signed-in request is refused at the sidecar)."""
    if not any(a.sidecar_checks for a in cfg.apps) or cfg.istio.install.enabled:
        return []
    sa = cfg.gateway_service_account
    pods = live(gateway_pods)
    other = sorted({str((p.get("spec") or {}).get("serviceAccountName") or "default") for p in pods}
                   - {sa or ""})
    if not pods or not other:
        return []  # no gateway pods: the gateway check reports that
    return [f"the gateway pods in {cfg.istio.gateway.namespace} run as service account(s) {other}, "
            f"not {sa!r}: the apps' sidecars would refuse every request they forward. Set "
            f"{K}istio.gateway.serviceAccount to {other[0]!r}"]
