"""The ambient renders (the ambient stack behind both ingress APIs, both ext_authz modes): what
the upstream validators cannot see, checked against the render and the stack config. Every
ambient app's Service is patched to use a waypoint that exists (rendered with class
istio-waypoint and its one HBONE listener, or configured as existing), its JWT and group
policies attach to that Service by targetRefs, ztunnel's L4 policy selects the app's pods and
admits only the waypoint's identity, and its NetworkPolicy admits HBONE from the waypoint's
pods. The check is shown to find broken references."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from authproxy_local.render import is_patch
from tests.conformance.conftest import MODES, report
from tests.conformance.support import concrete

AMBIENT = [(s, m) for s in ("ambient", "ambient-gateway-api") for m in MODES]


def ambient_problems(objs: list[dict[str, Any]], cfg: Any) -> tuple[list[str], int]:
    """(problems, references checked) of the ambient objects in a render."""
    problems: list[str] = []
    checked = 0
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    waypoints = {(o["metadata"]["namespace"], o["metadata"]["name"])
                 for o in by_kind.get("Gateway", [])
                 if o["spec"].get("gatewayClassName") == "istio-waypoint"}
    for o in by_kind.get("Gateway", []):
        if (o["metadata"]["namespace"], o["metadata"]["name"]) in waypoints:
            checked += 1
            if o["spec"]["listeners"] != [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]:
                problems.append(f"waypoint {o['metadata']['name']}: listeners are not the one "
                                "HBONE listener on 15008 istiod accepts")
            if o["metadata"].get("labels", {}).get("istio.io/waypoint-for") != "service":
                problems.append(f"waypoint {o['metadata']['name']}: not for service traffic")
    existing = {(a.waypoint_namespace, a.waypoint_ref.name) for a in cfg.ambient_apps
                if not a.waypoint_ref.create}
    patches = {(o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"].get("labels", {})
               for o in objs if is_patch(o)}
    app_services = {(a.service.namespace, a.service.name) for a in cfg.apps}
    for (ns, name), labels in patches.items():
        checked += 1
        if (ns, name) not in app_services:
            problems.append(f"patch of Service {ns}/{name}: not an app's Service")
        wp = (labels.get("istio.io/use-waypoint-namespace", ns), labels.get("istio.io/use-waypoint"))
        if wp not in waypoints | existing:
            problems.append(f"Service {ns}/{name}: waypoint {wp[0]}/{wp[1]} is neither rendered "
                            "nor configured as existing")
        if labels.get("istio.io/ingress-use-waypoint") != "true":
            problems.append(f"Service {ns}/{name}: ingress traffic would skip the waypoint")
    for kind in ("AuthorizationPolicy", "RequestAuthentication"):
        for o in by_kind.get(kind, []):
            ns = o["metadata"]["namespace"]
            for ref in o["spec"].get("targetRefs", []):
                if ref.get("kind") != "Service":
                    continue
                checked += 1
                if (ns, ref["name"]) not in patches:
                    problems.append(f"{kind} {ns}/{o['metadata']['name']}: targetRefs Service "
                                    f"{ref['name']} does not use a waypoint")
    for app in cfg.ambient_apps:
        ns, svc = app.service.namespace, app.service.name
        wp_ns, wp = app.waypoint_namespace, app.waypoint_ref
        checked += 3
        if (ns, svc) not in patches:
            problems.append(f"app {app.name}: its Service {ns}/{svc} is not patched")
        principal = f"*/ns/{wp_ns}/sa/{wp.identity_account}"
        l4 = [o for o in by_kind.get("AuthorizationPolicy", []) if o["metadata"]["namespace"] == ns
              and o["spec"].get("selector", {}).get("matchLabels") == app.selector_labels
              and o["spec"].get("action") == "DENY"]
        if [o["spec"]["rules"] for o in l4] != [[{"from": [{"source": {"notPrincipals": [principal]}}]}]]:
            problems.append(f"app {app.name}: no single L4 DENY admitting only {principal}")
        hbone = [o for o in by_kind.get("NetworkPolicy", []) if o["metadata"]["namespace"] == ns
                 and o["spec"]["podSelector"].get("matchLabels") == app.selector_labels
                 and any({"protocol": "TCP", "port": 15008} in r.get("ports", [])
                         and {"matchLabels": {"gateway.networking.k8s.io/gateway-name": wp.name}}
                         in [f.get("podSelector") for f in r.get("from", [])]
                         for r in o["spec"].get("ingress", []))]
        if len(hbone) != 1:
            problems.append(f"app {app.name}: no NetworkPolicy admitting HBONE from {wp.name}")
    return problems, checked


@pytest.mark.parametrize("stack,mode", AMBIENT, ids=[f"{s}-{m}" for s, m in AMBIENT])
def test_ambient_references_resolve_and_broken_ones_are_found(renders, stack, mode):
    r = renders[(stack, mode)].result
    objs = [concrete(o) for o in r.kubernetes]
    problems, checked = ambient_problems(objs, r.config)
    assert problems == [] and checked > 0
    assert len([o for o in objs if is_patch(o)]) == len(r.config.ambient_apps) == 2
    broken = copy.deepcopy(objs)
    for o in broken:
        if is_patch(o):
            o["metadata"]["labels"]["istio.io/use-waypoint"] += "x"
        for ref in (o.get("spec") or {}).get("targetRefs", []) if isinstance(o.get("spec"), dict) else []:
            if ref["kind"] == "Service":
                ref["name"] += "x"
    found, _ = ambient_problems(broken, r.config)
    # 2 waypoint references, 3 policies per app attached to a Service
    assert len(found) == 2 + 3 * 2, found
    report("ambient references", f"{stack}-{mode}: {checked} references checked (waypoints, "
                                 "Service patches, targetRefs, L4 policy, HBONE NetworkPolicy); "
                                 f"{len(found)} misspelled references found")
