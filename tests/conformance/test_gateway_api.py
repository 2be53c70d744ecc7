"""Gateway API objects (istio.ingressApi=gateway-api) validate strictly against the upstream
Gateway API CRDs: the standard-channel CustomResourceDefinitions of the sigs.k8s.io/gateway-api
module istio.io/istio is built against (authproxy_local.install "gateway-api-crds"). Their
OpenAPI v3 schemas are applied as JSON Schema with unknown fields rejected (patterns, enums,
lengths, list sizes all checked); the CEL rules (x-kubernetes-validations) are the API server's
and run in `make engine`. The validator is shown to reject deliberately broken objects."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from authproxy_local.install import gateway_api_crd_files
from authproxy_local.render import is_patch
from tests.conformance.conftest import CASE_IDS, CASES, report
from tests.conformance.support import (
    category,
    concrete,
    crd_errors,
    ident,
    load_crd_schemas,
    misspell,
)


@pytest.fixture(scope="session")
def schemas(gateway_api_crds: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return load_crd_schemas(gateway_api_crd_files(gateway_api_crds))


def _objects(renders, stack: str, mode: str) -> list[dict[str, Any]]:
    return [concrete(o) for o in renders[(stack, mode)].result.kubernetes if category(o) == "gateway-api"]


@pytest.mark.parametrize("stack,mode", CASES, ids=CASE_IDS)
def test_gateway_api_objects_validate_against_the_upstream_crds(renders, schemas, stack, mode):
    objs = _objects(renders, stack, mode)
    problems = [f"{ident(o)}: {e}" for o in objs for e in crd_errors(schemas, o)]
    kinds = Counter(o["kind"] for o in objs)
    report("Gateway API CRDs (strict)",
           f"{stack}-{mode}: {len(objs)} objects validated "
           f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items())) or 'none'}); "
           f"{len(problems)} problems")
    assert problems == []
    cfg = renders[(stack, mode)].result.config
    expected: Counter[str] = Counter()
    if cfg.istio.ingress_api == "gateway-api":
        # A stack that uses the Gateway API has the Gateway, the routes (redirect, auth host, one
        # per app) and one ReferenceGrant per backend namespace (authproxy, demo).
        expected.update({"Gateway": 1, "HTTPRoute": 2 + len(cfg.apps), "ReferenceGrant": 2})
    # Ambient apps: the waypoint Gateways the stack creates (one per namespace and name).
    waypoints = {(a.waypoint_namespace, a.waypoint_ref.name) for a in cfg.ambient_apps
                 if a.waypoint_ref.create}
    expected["Gateway"] += len(waypoints)
    assert kinds == +expected
    assert {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs
            if o["kind"] == "Gateway" and o["spec"]["gatewayClassName"] == "istio-waypoint"} == waypoints


def _variants(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Copies with one misspelled field each: a top-level spec field, and one nested inside the
    first listener / rule / grant entry."""
    out = []
    o = copy.deepcopy(obj)
    k = sorted(o["spec"])[0]
    o["spec"][misspell(k)] = o["spec"].pop(k)
    out.append((f"spec.{misspell(k)}", o))
    for field in ("listeners", "rules", "from"):
        if o_list := obj["spec"].get(field):
            o = copy.deepcopy(obj)
            entry = o["spec"][field][0]
            k = sorted(entry)[0]
            entry[misspell(k)] = entry.pop(k)
            out.append((f"spec.{field}[0].{misspell(k)}", o))
            assert o_list
    return out


@pytest.mark.parametrize("stack", ["gateway-api", "ambient"])
@pytest.mark.parametrize("mode", ["extension-provider", "envoy-filter"])
def test_a_misspelled_field_in_any_gateway_api_object_is_rejected(renders, schemas, stack, mode):
    objs = _objects(renders, stack, mode)
    tried, accepted = 0, []
    for obj in objs:
        for what, broken in _variants(obj):
            tried += 1
            if not crd_errors(schemas, broken):
                accepted.append(f"{ident(obj)} with {what}")
    report("Gateway API CRDs (strict)",
           f"{stack}-{mode}: {tried} deliberately misspelled variants, {tried - len(accepted)} rejected")
    assert tried >= 2 * len(objs)
    assert accepted == []


def _route(renders) -> dict[str, Any]:
    objs = _objects(renders, "gateway-api", "extension-provider")
    return next(o for o in objs if o["kind"] == "HTTPRoute" and o["metadata"]["name"] == "authproxy-app-echo")


def test_the_crd_rules_the_route_plan_relies_on_are_enforced(renders, schemas):
    """The limits the stack's routes live close to: at most 16 removed headers per modifier, rule
    names as DNS labels, header matches of type Exact or RegularExpression (no Prefix)."""
    good = _route(renders)
    assert crd_errors(schemas, good) == []

    too_many = copy.deepcopy(good)
    rule = next(r for r in too_many["spec"]["rules"] if r.get("filters"))
    rule["filters"][0]["requestHeaderModifier"]["remove"] = [f"x-h-{i}" for i in range(17)]
    assert any("is too long" in e or "maxItems" in e or "17" in e for e in crd_errors(schemas, too_many))

    bad_name = copy.deepcopy(good)
    bad_name["spec"]["rules"][0]["name"] = "Echo_Default"
    assert any("does not match" in e for e in crd_errors(schemas, bad_name))

    prefix = copy.deepcopy(good)
    r = next(r for r in prefix["spec"]["rules"] if r["matches"][0].get("headers"))
    r["matches"][0]["headers"][0]["type"] = "Prefix"
    assert any("is not one of" in e for e in crd_errors(schemas, prefix))


def reference_problems(objs: list[dict[str, Any]], config: Any) -> list[str]:
    """References istioctl analyze does not check for the Gateway API: route parentRefs (Gateway
    and listener), policy targetRefs (a Gateway of the policy's namespace), backendRefs (a Service
    the render or the config names, and a ReferenceGrant wherever a route crosses namespaces)."""
    gateways = {(o["metadata"]["namespace"], o["metadata"]["name"]): {lst["name"] for lst in o["spec"]["listeners"]}
                for o in objs if o["kind"] == "Gateway" and category(o) == "gateway-api"}
    services = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs
                if o["kind"] == "Service" and not is_patch(o)}
    services |= {(a.service.namespace, a.service.name) for a in config.apps}
    grants = {(o["metadata"]["namespace"], f["namespace"], t["name"])
              for o in objs if o["kind"] == "ReferenceGrant"
              for f in o["spec"]["from"] if f["kind"] == "HTTPRoute"
              for t in o["spec"]["to"] if t["kind"] == "Service"}
    problems = []
    for o in objs:
        ns, name = o["metadata"].get("namespace"), o["metadata"]["name"]
        spec = o.get("spec") or {}
        for ref in spec.get("targetRefs", []) if isinstance(spec, dict) else []:
            if ref.get("kind") == "Gateway" and (ns, ref["name"]) not in gateways:
                problems.append(f"{o['kind']} {ns}/{name}: targetRefs Gateway {ref['name']} not found")
            if ref.get("kind") == "Service" and (ns, ref["name"]) not in services:
                problems.append(f"{o['kind']} {ns}/{name}: targetRefs Service {ref['name']} not found")
        if o["kind"] != "HTTPRoute":
            continue
        for ref in spec["parentRefs"]:
            listeners = gateways.get((ref.get("namespace", ns), ref["name"]))
            if listeners is None or ref.get("sectionName") not in listeners:
                problems.append(f"HTTPRoute {ns}/{name}: parentRef {ref} not found")
        for rule in spec["rules"]:
            for b in rule.get("backendRefs", []):
                bns = b.get("namespace", ns)
                if (bns, b["name"]) not in services:
                    problems.append(f"HTTPRoute {ns}/{name}: backend Service {bns}/{b['name']} not found")
                if bns != ns and (bns, ns, b["name"]) not in grants:
                    problems.append(f"HTTPRoute {ns}/{name}: no ReferenceGrant in {bns} for Service {b['name']}")
    return problems


@pytest.mark.parametrize("stack", ["gateway-api", "ambient-gateway-api"])
@pytest.mark.parametrize("mode", ["extension-provider", "envoy-filter"])
def test_gateway_api_references_resolve_and_broken_ones_are_found(renders, stack, mode):
    r = renders[(stack, mode)].result
    objs = [concrete(o) for o in r.kubernetes]
    assert reference_problems(objs, r.config) == []
    grants = [o for o in objs if o["kind"] == "ReferenceGrant"]
    broken = copy.deepcopy(objs)
    for o in broken:
        spec = o.get("spec") if isinstance(o.get("spec"), dict) else {}
        for ref in spec.get("targetRefs", []) + spec.get("parentRefs", []):
            ref["name"] += "x"
    found = reference_problems(broken, r.config)
    expected = sum(len(o["spec"].get("targetRefs", [])) + len(o["spec"].get("parentRefs", []))
                   for o in objs if isinstance(o.get("spec"), dict))
    assert len(found) == expected > 0
    # Without the grants every cross-namespace backend is reported.
    no_grants = [o for o in objs if o["kind"] != "ReferenceGrant"]
    assert grants and any("no ReferenceGrant" in p for p in reference_problems(no_grants, r.config))
    report("Gateway API references", f"{stack}-{mode}: parentRefs, targetRefs, backendRefs and "
                                     f"ReferenceGrants resolve; {len(found)} misspelled references found")
