"""Istio objects of every render pass Istio's own validators, from an istioctl built from the
pinned istio.io/istio module:

- `istioctl validate -f kubernetes.yaml`: strict parse of every Istio object (unknown fields are
  errors) plus Istio's value rules; Kubernetes objects get Istio's convention checks.
- `istioctl analyze -A --use-kube=false --meshConfigFile mesh-config.yaml -o json kubernetes.yaml`:
  Istio's analyzers. `-A` matters: without it, offline analysis only looks at the `default`
  namespace. Offline, analyze ignores Pods, Services, Secrets, Namespaces and Nodes in files, so
  the analyzers that need them are skipped (the test reports which); test_references_resolve
  covers the references those analyzers would have checked.

Zero errors and zero warnings are allowed outside ALLOWLIST (each entry says why; mirrored in
docs/render.md). Both validators are shown to fail on deliberately broken objects.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from authproxy_local.render import dump_yaml_all, is_patch
from tests.conformance.conftest import CASE_IDS, CASES, report
from tests.conformance.support import category, concrete, ident, misspell_spec

ALLOWLIST: list[tuple[str, str, str]] = [
    # (tool:code, regex on "<origin> <message>", why it is accepted)
    (
        "analyze:IST0133",
        r"^AuthorizationPolicy [a-z0-9-]+/authproxy-[a-z0-9-]+-deny-unsigned Schema validation "
        r"warning: configured AuthorizationPolicy will deny all traffic to TCP ports under its "
        r"scope due to the use of only HTTP attributes in a DENY rule",
        "The DENY an ambient app's waypoint enforces (no principal of our issuer, or no group) "
        "is meant to refuse plain TCP to the app's Service too: TCP through the waypoint would "
        "carry no HTTP request to check, so it must not pass. Scoping it to ports, as Istio "
        "suggests, would let TCP on any other port of the Service through.",
    ),
    (
        "analyze:IST0133",
        r"^EnvoyFilter [a-z0-9-]+/authproxy-[a-z0-9-]+ Schema validation warning: EnvoyFilter exposes "
        r"internal implementation details",
        "Istio warns about every EnvoyFilter. Ours are deliberate: envoy-filter mode exists for "
        "meshes whose mesh config cannot be changed (the ext_authz filter), and the gateway "
        "hardening filter (strip client-sent identity headers, normalize paths) has no Istio API "
        "equivalent. Both are pinned to the Envoy v3 API and covered by tests.",
    ),
]


def allowed(tool_code: str, text: str) -> str | None:
    for code, pattern, why in ALLOWLIST:
        if code == tool_code and re.search(pattern, text):
            return why
    return None


def run(cmd: list[Any], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)


def validate(istioctl: Path, *files: Path) -> tuple[int, list[str], str]:
    """(exit code, warning lines, error text) of `istioctl validate -f F...`."""
    args: list[str] = []
    for f in files:
        args += ["-f", str(f)]
    p = run([istioctl, "validate", *args])
    warnings = [
        line for line in p.stdout.splitlines()
        if line.strip() and not re.match(r'^".*" is valid$', line.strip())
    ]
    return p.returncode, warnings, p.stderr


SKIPPED: set[str] = set()


def analyze(istioctl: Path, files: list[Path], mesh: Path | None) -> list[dict]:
    cmd: list[Any] = [istioctl, "analyze", "-A", "--use-kube=false", "--verbose", "-o", "json"]
    if mesh is not None:
        cmd += ["--meshConfigFile", mesh]
    p = run([*cmd, *files])
    # 0: nothing at the failure threshold; 79: analyzers found errors. Anything else is a crash.
    assert p.returncode in (0, 79), f"istioctl analyze failed ({p.returncode}): {p.stderr}"
    assert "Error(s) adding files" not in p.stderr, p.stderr
    skipped = re.search(r"Skipped analyzers:\n((?:\t.*\n)*)", p.stderr)
    if skipped:
        SKIPPED.update(line.strip() for line in skipped.group(1).splitlines() if line.strip())
    start = p.stdout.find("[")
    assert start >= 0, f"no JSON in istioctl analyze output: {p.stdout!r} {p.stderr!r}"
    return json.loads(p.stdout[start:])


def istio_objects(r) -> list[dict]:
    return [o for o in r.kubernetes if category(o) == "istio"]


# ------------------------------------------------------------------------------- the renders


@pytest.mark.parametrize("stack,mode", CASES, ids=CASE_IDS)
def test_render_has_istio_objects(renders, stack, mode):
    """The render carries the ingress and authorization objects (so the checks below are not
    vacuous)."""
    kinds = Counter(o["kind"] for o in istio_objects(renders[(stack, mode)].result))
    report("istioctl", f"{stack}-{mode}: Istio objects: "
                       f"{', '.join(f'{n} {k}' for k, n in sorted(kinds.items())) or 'none'}")
    if renders[(stack, mode)].result.config.istio.ingress_api == "gateway-api":
        # The ingress is Gateway API objects (tests/conformance/test_gateway_api.py); the Istio
        # objects are the policies and EnvoyFilters attached to its Gateway by targetRefs.
        assert kinds["Gateway"] == kinds["VirtualService"] == 0
        assert kinds["RequestAuthentication"] >= 1
    else:
        assert kinds["Gateway"] >= 1
        assert kinds["VirtualService"] >= 1
    assert kinds["AuthorizationPolicy"] >= 1
    # EnvoyFilters that insert an ext_authz HTTP filter (not ones that merely mention it, nor
    # extension-provider mode's MERGE of a retry policy into the filter istiod makes)
    ext_authz_filters = [o for o in istio_objects(renders[(stack, mode)].result)
                         if o["kind"] == "EnvoyFilter" and any(
                             str((p.get("patch") or {}).get("operation", "")).startswith("INSERT")
                             and ((p.get("patch") or {}).get("value") or {}).get("name")
                             == "envoy.filters.http.ext_authz"
                             for p in o["spec"].get("configPatches") or [])]
    assert len(ext_authz_filters) == (1 if mode == "envoy-filter" else 0)


def without_patches(rd, tmp_path: Path) -> tuple[Path, int]:
    """kubernetes.yaml minus the stack's patches of the apps' Services: `istioctl validate`
    panics on a Service without spec (validateServicePortPrefix reads spec.ports from a nil map;
    istio.io/istio at the pinned version). The patches are validated by kubernetes-validate
    (strict) and their labels by tests/conformance/test_ambient.py."""
    patches = [o for o in rd.result.kubernetes if is_patch(o)]
    if not patches:
        return rd.out / "kubernetes.yaml", 0
    f = tmp_path / "kubernetes-without-patches.yaml"
    f.write_text(dump_yaml_all([o for o in rd.result.kubernetes if not is_patch(o)]))
    return f, len(patches)


@pytest.mark.parametrize("stack,mode", CASES, ids=CASE_IDS)
def test_istioctl_validate(renders, istioctl, stack, mode, tmp_path):
    rd = renders[(stack, mode)]
    f, patches = without_patches(rd, tmp_path)
    code, warnings, err = validate(istioctl, f)
    findings = [w for w in warnings if not allowed("validate", w)]
    others = len(rd.result.kubernetes) - len(istio_objects(rd.result)) - patches
    report("istioctl", f"{stack}-{mode}: istioctl validate: {len(istio_objects(rd.result))} Istio "
                       f"objects (+{others} Kubernetes objects for Istio's conventions"
                       f"{f'; {patches} Service patches left out' if patches else ''}), exit {code}, "
                       f"{len(warnings)} warnings ({len(warnings) - len(findings)} allowlisted)")
    assert code == 0, err
    assert findings == []


@pytest.mark.parametrize("stack,mode", CASES, ids=CASE_IDS)
def test_istioctl_analyze(renders, istioctl, stack, mode):
    rd = renders[(stack, mode)]
    mesh = rd.out / "mesh-config.yaml" if rd.result.mesh_config is not None else None
    messages = analyze(istioctl, [rd.out / "kubernetes.yaml"], mesh)
    levels = Counter(m["level"] for m in messages)
    accepted = [m for m in messages if allowed(f"analyze:{m['code']}", f"{m['origin']} {m['message']}")]
    bad = [m for m in messages if m["level"] in ("Error", "Warning") and m not in accepted]
    info = [f"{m['code']} {m['origin']}" for m in messages if m["level"] == "Info"]
    report("istioctl", f"{stack}-{mode}: istioctl analyze -A with mesh config "
                       f"{'from ' + rd.result.mesh_config_source if mesh else '(none: Istio defaults)'}: "
                       f"{len(rd.result.kubernetes)} objects; {levels.get('Error', 0)} errors, "
                       f"{levels.get('Warning', 0)} warnings ({len(accepted)} allowlisted: "
                       f"{', '.join(sorted(m['code'] + ' ' + m['origin'] for m in accepted)) or '-'}), "
                       f"{levels.get('Info', 0)} info{' (' + '; '.join(info) + ')' if info else ''}")
    if SKIPPED:
        report("istioctl", "analyzers skipped offline (they need Pods/Services/Secrets/Namespaces, "
                           "which files-only analysis ignores): " + ", ".join(sorted(SKIPPED)))
    assert bad == [], json.dumps(bad, indent=1)


@pytest.mark.parametrize("stack,mode", CASES, ids=CASE_IDS)
def test_custom_policies_name_a_mesh_extension_provider(renders, stack, mode):
    """What analyze does not check: a CUSTOM AuthorizationPolicy's provider must exist in the mesh
    config's extensionProviders (else istiod rejects the policy and the gateway denies all)."""
    r = renders[(stack, mode)].result
    custom = [o for o in istio_objects(r)
              if o["kind"] == "AuthorizationPolicy" and o["spec"].get("action") == "CUSTOM"]
    providers = {p.get("name") for p in (r.mesh_config or {}).get("extensionProviders", [])}
    if mode == "extension-provider":
        assert custom, "extension-provider mode protects apps with CUSTOM AuthorizationPolicies"
        assert r.mesh_config is not None, "extension-provider mode needs the mesh config"
    else:
        assert custom == [], "envoy-filter mode wires ext_authz with an EnvoyFilter, not CUSTOM"
    for o in custom:
        assert o["spec"]["provider"]["name"] in providers, ident(o)


# ------------------------------------------------------------------- the validators can fail


BROKEN_VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "broken", "namespace": "demo"},
    "spec": {"hostss": ["echo.example.test"],
             "http": [{"route": [{"destination": {"host": "echo.demo.svc.cluster.local"}}]}]},
}


def test_istioctl_validate_rejects_a_misspelled_field(istioctl, tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text(dump_yaml_all([BROKEN_VS]))
    code, _, err = validate(istioctl, f)
    assert code != 0
    assert 'unknown field "hostss"' in err
    # analyze alone does not catch this (it drops unknown fields), which is why both run:
    missed = not any("hostss" in m["message"] for m in analyze(istioctl, [f], None))
    report("istioctl", "self-check: istioctl validate rejects a misspelled VirtualService field; "
                       f"istioctl analyze alone {'ignores' if missed else 'also reports'} it")


@pytest.mark.parametrize("stack,mode", CASES, ids=CASE_IDS)
def test_istioctl_validate_rejects_each_rendered_istio_object_misspelled(renders, istioctl, stack, mode, tmp_path):
    objs = istio_objects(renders[(stack, mode)].result)
    assert objs
    broken = []
    for o in objs:
        _, b = misspell_spec(concrete(o))
        broken.append(b)
    f = tmp_path / "broken.yaml"
    f.write_text(dump_yaml_all(broken))
    code, _, err = validate(istioctl, f)
    assert code != 0
    missed = [ident(o) for o in objs
              if f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}" not in err]
    report("istioctl", f"{stack}-{mode}: istioctl validate rejected {len(objs) - len(missed)} of "
                       f"{len(objs)} deliberately misspelled Istio objects")
    assert missed == [], err


ISTIO_INGRESS_CASES = [(s, m) for s, m in CASES if not s.endswith("gateway-api")]


@pytest.mark.parametrize("stack,mode", ISTIO_INGRESS_CASES, ids=[f"{s}-{m}" for s, m in ISTIO_INGRESS_CASES])
def test_istioctl_analyze_reports_broken_gateway_references(renders, istioctl, stack, mode, tmp_path):
    """Analyze is shown to fail on our own objects: every VirtualService whose gateway reference
    is misspelled is reported (IST0101, referenced gateway not found). The gateway-api stack has
    no VirtualServices, and analyze checks neither HTTPRoute parentRefs nor policy targetRefs
    (tried: misspelled, nothing reported), so test_gateway_api.py checks those references."""
    rd = renders[(stack, mode)]
    objs, broken = [], []
    for o in rd.result.kubernetes:
        o = concrete(o)
        if o["kind"] == "VirtualService" and category(o) == "istio" and o["spec"].get("gateways"):
            o["spec"]["gateways"] = [g + "x" if g != "mesh" else g for g in o["spec"]["gateways"]]
            broken.append(o)
        objs.append(o)
    assert broken
    f = tmp_path / "broken.yaml"
    f.write_text(dump_yaml_all(objs))
    mesh = rd.out / "mesh-config.yaml" if rd.result.mesh_config is not None else None
    messages = analyze(istioctl, [f], mesh)
    errors = {m["origin"] for m in messages if m["level"] == "Error" and m["code"] == "IST0101"}
    missed = [ident(o) for o in broken
              if f"VirtualService {o['metadata']['namespace']}/{o['metadata']['name']}" not in errors]
    report("istioctl", f"{stack}-{mode}: istioctl analyze reported {len(broken) - len(missed)} of "
                       f"{len(broken)} VirtualServices with a misspelled gateway reference")
    assert missed == [], messages


# ------------------------------------------- references the offline-skipped analyzers would check


def _destinations(spec: dict) -> list[dict]:
    out = []
    for section in ("http", "tcp", "tls"):
        for route in spec.get(section, []) or []:
            for dest in route.get("route", []) or []:
                out.append(dest["destination"])
            if route.get("mirror"):
                out.append(route["mirror"])
    return out


def reference_problems(r) -> tuple[list[str], int]:
    """Problems with references between rendered objects and the cluster (what
    virtualservice.DestinationHostAnalyzer, gateway.SecretAnalyzer and the selector analyzers
    check against a live cluster), and how many references were checked."""
    cfg = r.config
    gw = cfg.istio.gateway
    problems: list[str] = []
    checked = 0
    services: dict[tuple[str, str], set[int]] = {}
    for o in r.kubernetes:
        if o["kind"] == "Service" and o["apiVersion"] == "v1" and not is_patch(o):
            services[(o["metadata"]["namespace"], o["metadata"]["name"])] = {
                p["port"] for p in o["spec"].get("ports", [])}
    for app in cfg.apps:  # the apps' Services exist in the cluster (not created by the stack)
        services.setdefault((app.service.namespace, app.service.name), set()).add(app.service.port)
    workloads: list[tuple[str, dict]] = [(gw.namespace, dict(gw.selector))]
    workloads += [(a.service.namespace, a.selector_labels) for a in cfg.apps]
    for o in r.kubernetes:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            workloads.append((o["metadata"]["namespace"],
                              o["spec"]["template"]["metadata"].get("labels", {})))
    gateways = {f"{o['metadata']['namespace']}/{o['metadata']['name']}"
                for o in r.kubernetes if o["kind"] == "Gateway" and category(o) == "istio"}
    certs = {(o["metadata"]["namespace"], o["spec"]["secretName"])
             for o in r.kubernetes if o["kind"] == "Certificate"}

    def selects(ns: str, labels: dict, what: str) -> None:
        nonlocal checked
        checked += 1
        if not any(ns == wns and labels.items() <= wl.items() for wns, wl in workloads):
            problems.append(f"{what}: selector {labels} in {ns} matches no known workload")

    for o in istio_objects(r):
        ns, spec, what = o["metadata"]["namespace"], o["spec"], ident(o)
        if o["kind"] == "VirtualService":
            for g in spec.get("gateways", []):
                checked += 1
                ref = g if "/" in g else f"{ns}/{g}"
                if g != "mesh" and ref not in gateways:
                    problems.append(f"{what}: gateway {g} is not rendered")
            for d in _destinations(spec):
                checked += 1
                parts = d["host"].split(".")
                key = (parts[1] if len(parts) > 1 else ns, parts[0])
                if d["host"] not in (f"{key[1]}.{key[0]}.svc.cluster.local", key[1]) or key not in services:
                    problems.append(f"{what}: destination {d['host']} is not a known Service")
                elif "port" in d and services[key] and d["port"]["number"] not in services[key]:
                    problems.append(f"{what}: destination {d['host']} has no port {d['port']['number']}")
        elif o["kind"] == "Gateway":
            checked += 1
            if ns != gw.namespace or spec.get("selector") != dict(gw.selector):
                problems.append(f"{what}: not in {gw.namespace} with selector {dict(gw.selector)}")
            for server in spec.get("servers", []):
                cn = (server.get("tls") or {}).get("credentialName")
                if cn:
                    checked += 1
                    if cn != gw.tls_credential_name:
                        problems.append(f"{what}: credentialName {cn} is not the configured "
                                        f"{gw.tls_credential_name}")
                    if cfg.istio.cert_manager.issuer and (ns, cn) not in certs:
                        problems.append(f"{what}: no Certificate writes Secret {ns}/{cn}")
        elif o["kind"] in ("AuthorizationPolicy", "RequestAuthentication", "PeerAuthentication"):
            if "selector" in spec:
                selects(ns, spec["selector"].get("matchLabels", {}), what)
        elif o["kind"] == "EnvoyFilter" and "workloadSelector" in spec:
            selects(ns, spec["workloadSelector"].get("labels", {}), what)
    return problems, checked


@pytest.mark.parametrize("stack,mode", CASES, ids=CASE_IDS)
def test_references_resolve(renders, stack, mode):
    r = renders[(stack, mode)].result
    problems, checked = reference_problems(r)
    report("references", f"{stack}-{mode}: {checked} references checked (VirtualService gateways and "
                         f"destination Services/ports, Gateway selector and credentialName, policy and "
                         f"EnvoyFilter selectors); {len(problems)} problems")
    assert checked > 0
    assert problems == []


def test_reference_check_can_fail(renders):
    import copy

    r = copy.deepcopy(renders[("prod", "extension-provider")].result)
    for o in r.kubernetes:
        if o["kind"] == "VirtualService":
            _destinations(o["spec"])[0]["host"] = "oauth2-proxyy.authproxy.svc.cluster.local"
        if o["kind"] == "AuthorizationPolicy" and "selector" in o["spec"]:
            o["spec"]["selector"]["matchLabels"] = {"istio": "ingresgateway"}
    problems, _ = reference_problems(r)
    assert any("oauth2-proxyy" in p for p in problems), problems
    assert any("ingresgateway" in p for p in problems), problems
