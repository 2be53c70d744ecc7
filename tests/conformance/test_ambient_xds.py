"""Istio's own translation of the ambient render (tools/istio-xds, istiod's config generation
in-process, ambient mode on as the ambient profile sets it): the **waypoint's** Envoy config for
each ambient app, the ingress gateway's route to the waypoint (HBONE), and what istiod pushes to
ztunnel (workloads, services, authorization policies). The tests read the JWT, RBAC and group
rules out of the waypoint's config and ztunnel's L4 policy out of its push; and they show what
the stack's pre-ambient, selector-bound policies become in an ambient namespace (nothing at the
waypoint, "deny all" at ztunnel) and that without `istio.io/ingress-use-waypoint` the gateway goes
straight to the pods.

The cluster's part of the input (ambient namespace, captured pods, waypoint Service and pods,
Gateway status) is authproxy_local/mesh/workloads.py's, as for the live harness.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import ipaddress
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authproxy_local import render
from authproxy_local.core import local_map
from authproxy_local.core.pki import make_tls
from authproxy_local.mesh import adapter as xa
from authproxy_local.mesh.envoy_config import HCM, POD_CIDR, ROUTER
from authproxy_local.mesh.workloads import workloads
from authproxy_local.render import is_patch
from tests.conformance.conftest import installed, report

JWT = "envoy.filters.http.jwt_authn"
RBAC = "envoy.filters.http.rbac"
PEER_PRINCIPAL = "io.istio.peer_principal"
"""The filter state a waypoint's RBAC reads ``source.principals`` from: the SPIFFE identity of the
peer of the HBONE connection (set where the waypoint terminates it)."""
WAYPOINT = "waypoint-authproxy-waypoint"
WAYPOINT_IP = f"{POD_CIDR}.6.1"
IP = "127.78.0.1"
CASES = {
    "istio-extension-provider": ("extension-provider", {}),
    "istio-envoy-filter": ("envoy-filter", {}),
    "gateway-api-extension-provider": ("extension-provider", {"istio": {"ingressApi": "gateway-api"}}),
}


@pytest.fixture(scope="session")
def istio_xds() -> Path:
    return installed("istio-xds", "istio-xds",
                     "istio-xds (tools/istio-xds, istio.io/istio {istio}), {path}")


def _endpoints(r: Any, tmp: Path) -> local_map.LocalEndpoints:
    tls = make_tls(["echo.authproxy.test", "keycloak.authproxy.test"], tmp,
                   keycloak_host="keycloak.authproxy.test")
    apps = [a.name for a in r.config.apps]
    return local_map.LocalEndpoints(
        gateway_ip=IP, oauth2_proxy=(IP, 4180), oauth2_proxy_metrics=(IP, 44180),
        sidecars={a: (IP, 15000 + i) for i, a in enumerate(apps)},
        apps={a: (IP, 16000 + i) for i, a in enumerate(apps)},
        cert_file=tls.cert_file, key_file=tls.key_file, ca_file=tls.ca_file)


def translate(exe: Path, r: Any, tmp: Path) -> dict[str, Any]:
    xa.write_input(r, workloads(r, _endpoints(r, tmp)), tmp / "in")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR")}
    return xa.translate(exe, tmp / "in", env=env)


@pytest.fixture(scope="module")
def xds(istio_xds: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, dict[str, Any]]]:
    out = {}
    for case, (mode, overrides) in CASES.items():
        r = render.render("ambient", mode, overrides)
        out[case] = (r, translate(istio_xds, r, tmp_path_factory.mktemp(f"xds-{case}")))
    return out


# ------------------------------------------------------------------ reading Envoy's config


def _chain(proxy: dict[str, Any], listener: str, name: str) -> dict[str, Any]:
    (lst,) = [x for x in proxy["listeners"] if x["name"] == listener]
    (fc,) = [f for f in lst["filter_chains"] if f.get("name") == name]
    return fc


def _hcm(fc: dict[str, Any]) -> dict[str, Any]:
    (hcm,) = [f["typed_config"] for f in fc["filters"] if f["name"] == HCM]
    return hcm


def _app_filters(xd: dict[str, Any], svc: str, port: int = 8080) -> list[dict[str, Any]]:
    """The HTTP filters of the waypoint's inbound chain for a Service (main_internal)."""
    fc = _chain(xd["proxies"][WAYPOINT], "main_internal",
                f"inbound-vip|{port}|http|{svc}.demo.svc.cluster.local")
    filters: list[dict[str, Any]] = _hcm(fc)["http_filters"]
    return filters


def claims(node: Any, negated: bool = False) -> Iterator[tuple[bool, str, str]]:
    """(under a not_id/not_rule, claim, value) for every JWT-claim metadata matcher, every path
    matcher and every peer-principal matcher (claim ``peer``) in an RBAC principal or permission
    tree."""
    if isinstance(node, dict):
        if node.get("filter_state", {}).get("key") == PEER_PRINCIPAL:
            yield negated, "peer", node["filter_state"]["string_match"]["exact"]
            return
        if "metadata" in node and node["metadata"].get("filter") == JWT:
            m = node["metadata"]
            key = m["path"][-1]["key"]
            v = m["value"]
            for sm in [v.get("string_match")] + [
                    x.get("list_match", {}).get("one_of", {}).get("string_match")
                    for x in v.get("or_match", {}).get("value_matchers", [])]:
                if sm:
                    yield negated, key, sm.get("exact") or sm.get("safe_regex", {}).get("regex", "")
            return
        if "url_path" in node:
            yield negated, "path", node["url_path"]["path"].get("exact", "")
            return
        for k, v in node.items():
            yield from claims(v, negated ^ (k in ("not_id", "not_rule")))
    elif isinstance(node, list):
        for v in node:
            yield from claims(v, negated)


def rbac_policies(filters: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Policy name -> {action, principals (claims), permissions (claims)} over the RBAC filters."""
    out = {}
    for f in filters:
        if f["name"] != RBAC:
            continue
        rules = f["typed_config"].get("rules", {})
        for name, pol in rules.get("policies", {}).items():
            out[name] = {"action": rules.get("action", "ALLOW"),
                         "principals": set(claims(pol["principals"])),
                         "permissions": set(claims(pol["permissions"]))}
    return out


# ------------------------------------------------------------------ the waypoint


@pytest.mark.parametrize("case", CASES)
def test_waypoint_verifies_the_jwt_of_each_ambient_app(xds, case):
    r, xd = xds[case]
    kc = r.config.keycloak
    for app in r.config.ambient_apps:
        filters = _app_filters(xd, app.service.name)
        names = [f["name"] for f in filters]
        assert names.index(JWT) < names.index(RBAC) < names.index(ROUTER)
        (jwt,) = [f["typed_config"] for f in filters if f["name"] == JWT]
        (provider,) = jwt["providers"].values()
        assert provider["issuer"] == kc.issuer and provider["audiences"] == [kc.client_id]
        assert provider["forward"] is True
        # a token is optional for jwt_authn (public paths), its absence is RBAC's to refuse
        (rule,) = jwt["rules"]
        assert {"allow_missing": {}} in rule["requires"]["requires_any"]["requirements"]


@pytest.mark.parametrize("case", CASES)
def test_waypoint_refuses_users_outside_the_group_and_requests_without_a_token(xds, case):
    r, xd = xds[case]
    iss = r.config.keycloak.issuer
    signed = {(False, "iss", iss), (False, "sub", ".+")}
    gateway = "spiffe://" + r.config.gateway_principal
    for app in r.config.ambient_apps:
        pols = rbac_policies(_app_filters(xd, app.service.name))
        prefix = f"ns[demo]-policy[authproxy-{app.name}-"
        deny = {k: v for k, v in pols.items() if k.startswith(prefix + "deny-unsigned]")}
        allow = {k: v for k, v in pols.items() if k.startswith(prefix + "require-jwt]")}
        assert {p["action"] for p in deny.values()} == {"DENY"}
        assert {p["action"] for p in allow.values()} == {"ALLOW"}
        no_token = deny[prefix + "deny-unsigned]-rule[0]"]
        assert no_token["principals"] == {(True, "iss", iss), (True, "sub", ".+")}
        public = {(True, "path", p) for p in app.public_paths}
        assert no_token["permissions"] == public
        # A user's token replayed from inside the mesh: not from the gateway's identity.
        not_gateway = deny[prefix + "deny-unsigned]-rule[1]"]
        assert not_gateway["principals"] == {(True, "peer", gateway)}
        assert not_gateway["permissions"] == public
        groups = {(False, "groups", g) for g in app.group_paths}
        if app.groups:
            no_group = deny[prefix + "deny-unsigned]-rule[2]"]
            assert no_group["principals"] == {(True, "groups", g) for g in app.group_paths}
            assert no_group["permissions"] == public
        assert allow[prefix + "require-jwt]-rule[0]"]["principals"] == signed | groups | {(False, "peer", gateway)}
        if app.public_paths:
            assert allow[prefix + "require-jwt]-rule[1]"]["permissions"] == {
                (False, "path", p) for p in app.public_paths}
    report("istio-xds (ambient)", f"{case}: the waypoint's config verifies the realm's JWT and "
                                  "enforces the DENY/ALLOW principal, gateway-identity and group "
                                  "rules per app")


def _filter_state_sources(node: Any) -> Iterator[tuple[str, str]]:
    """(object_key, format string) of every filter-state value a config tree sets."""
    if isinstance(node, dict):
        if "object_key" in node and "format_string" in node:
            yield node["object_key"], node["format_string"]["text_format_source"]["inline_string"]
        for v in node.values():
            yield from _filter_state_sources(v)
    elif isinstance(node, list):
        for v in node:
            yield from _filter_state_sources(v)


@pytest.mark.parametrize("case", CASES)
def test_waypoint_takes_the_source_principal_from_the_hbone_peer(xds, case):
    """The gateway-identity rules above read the filter state the waypoint sets where it terminates
    HBONE: the URI SAN of the peer's certificate, the gateway's own when the gateway sends."""
    _, xd = xds[case]
    (terminate,) = [x for x in xd["proxies"][WAYPOINT]["listeners"] if x["name"] == "connect_terminate"]
    sources = dict(_filter_state_sources(terminate))
    assert sources[PEER_PRINCIPAL] == "%DOWNSTREAM_PEER_URI_SAN%", sources


@pytest.mark.parametrize("case", CASES)
def test_waypoint_reaches_the_pods_over_hbone(xds, case):
    r, xd = xds[case]
    wp = xd["proxies"][WAYPOINT]
    for i, app in enumerate(r.config.apps):
        (cla,) = [e for e in wp["endpoints"]
                  if e["cluster_name"] == f"inbound-vip|8080|http|{app.service.name}.demo.svc.cluster.local"]
        (lb,) = [lb for ep in cla["endpoints"] for lb in ep["lb_endpoints"]]
        pod = f"{POD_CIDR}.2.{i + 1}:8080"
        assert lb["endpoint"]["address"]["envoy_internal_address"] == {
            "server_listener_name": "connect_originate", "endpoint_id": pod}
        assert lb["metadata"]["filter_metadata"]["envoy.filters.listener.original_dst"] == {"local": pod}
    # connect_originate: HTTP/2 CONNECT to the pod's port 15008 over mutual TLS 1.3 with the
    # waypoint's workload certificate, accepting the mesh's SPIFFE identities (ztunnel's)
    (co,) = [c for c in wp["clusters"] if c["name"] == "connect_originate"]
    assert co["type"] == "ORIGINAL_DST" and co["original_dst_lb_config"]["upstream_port_override"] == 15008
    tls = co["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_3"
    assert [c["name"] for c in tls["tls_certificate_sds_secret_configs"]] == ["default"]
    assert tls["combined_validation_context"]["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    sans = tls["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
    assert {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}} in sans


# ------------------------------------------------------------------ the ingress gateway


@pytest.mark.parametrize("case", CASES)
def test_gateway_sends_ambient_apps_to_the_waypoint_over_hbone(xds, case):
    r, xd = xds[case]
    gw = xd["proxies"]["gateway"]
    for i, app in enumerate(r.config.apps):
        cluster = f"outbound|8080||{app.service.name}.demo.svc.cluster.local"
        (cla,) = [e for e in gw["endpoints"] if e["cluster_name"] == cluster]
        (lb,) = [lb for ep in cla["endpoints"] for lb in ep["lb_endpoints"]]
        addr = lb["endpoint"]["address"]["envoy_internal_address"]
        assert addr == {"server_listener_name": "connect_originate", "endpoint_id": f"{WAYPOINT_IP}:15008"}
        odst = lb["metadata"]["filter_metadata"]["envoy.filters.listener.original_dst"]
        assert odst == {"local": f"{POD_CIDR}.3.{i + 1}:8080", "waypoint": f"{WAYPOINT_IP}:15008"}
    # the gateway's own checks are there as in sidecar mode (ext_authz by either mode)
    text = json.dumps(gw["listeners"]) + json.dumps(gw["routes"])
    assert "envoy.filters.http.ext_authz" in text


# ------------------------------------------------------------------ ztunnel


def _ip(b64: str) -> str:
    return str(ipaddress.ip_address(base64.b64decode(b64)))


@pytest.mark.parametrize("case", CASES)
def test_ztunnel_admits_only_the_waypoint_at_the_app_pods(xds, case):
    r, xd = xds[case]
    z = xd["proxies"]["ztunnel"]
    policies = {f"{a['namespace']}/{a['name']}": a for a in z["authorizations"]}
    workloads = {w["workload"]["name"]: w["workload"] for w in z["addresses"] if "workload" in w}
    services = {s["service"]["name"]: s["service"] for s in z["addresses"] if "service" in s}
    for app in r.config.ambient_apps:
        w = workloads[f"{app.name}-harness"]
        assert w["tunnel_protocol"] == "HBONE"
        key = f"demo/authproxy-{app.name}-waypoint-only"
        assert w["authorization_policies"] == [key]
        assert policies[key] == {
            "name": f"authproxy-{app.name}-waypoint-only", "namespace": "demo",
            "scope": "WORKLOAD_SELECTOR", "action": "DENY",
            "groups": [{"rules": [{"matches": [
                {"not_principals": [{"suffix": "/ns/demo/sa/authproxy-waypoint"}]}]}]}]}
        svc = services[app.service.name]
        assert svc["waypoint"]["hostname"] == {
            "namespace": "demo", "hostname": "authproxy-waypoint.demo.svc.cluster.local"}
        assert svc["waypoint"]["hbone_mtls_port"] == 15008 and svc["ingress_use_waypoint"] is True
    # the waypoint's own pod is not captured: no policy of ours applies to it
    assert "authorization_policies" not in workloads["authproxy-waypoint-harness"]
    assert _ip(workloads["authproxy-waypoint-harness"]["addresses"][0]) == WAYPOINT_IP


# ------------------------------------------------------------------ against the old behaviour


def test_sidecar_style_policies_do_nothing_at_the_waypoint_and_deny_all_at_ztunnel(istio_xds, tmp_path):
    """The stack's policies for these apps before ambient support: RequestAuthentication and
    ALLOW by `selector` on the pods. In an ambient namespace istiod gives the waypoint no JWT or
    RBAC filter for them, and hands the ALLOW to ztunnel with its HTTP rules dropped (istiod:
    "rules matching HTTP attributes are omitted"): an ALLOW policy without rules, which admits
    nothing, signed in or not."""
    r = render.render("ambient", "extension-provider")
    old = copy.deepcopy(r.kubernetes)
    for o in old:
        if o["kind"] in ("AuthorizationPolicy", "RequestAuthentication") and o["spec"].get("targetRefs"):
            svc = o["spec"].pop("targetRefs")[0]["name"]
            if o["metadata"]["name"].endswith("-deny-unsigned"):
                o["metadata"]["name"] = "dropped"  # did not exist before
            o["spec"]["selector"] = {"matchLabels": {"app": svc}}
    old = [o for o in old if o["metadata"]["name"] != "dropped"]
    xd = translate(istio_xds, dataclasses.replace(r, kubernetes=old), tmp_path)
    for app in r.config.ambient_apps:
        names = [f["name"] for f in _app_filters(xd, app.service.name)]
        assert JWT not in names and RBAC not in names, names
    pols = {a["name"]: a for a in xd["proxies"]["ztunnel"]["authorizations"]}
    for app in r.config.ambient_apps:
        allow = pols[f"authproxy-{app.name}-require-jwt"]
        # proto JSON leaves out defaults: action ALLOW (0) and an empty rule list
        assert allow.get("action", "ALLOW") == "ALLOW" and allow.get("groups", []) == [], allow
    report("istio-xds (ambient)", "old behaviour: selector-bound JWT/group policies give the "
                                  "waypoint no jwt_authn/RBAC and ztunnel an ALLOW without rules "
                                  "(deny all)")


def test_without_ingress_use_waypoint_the_gateway_skips_the_waypoint(istio_xds, tmp_path):
    r = render.render("ambient", "extension-provider")
    unlabeled = copy.deepcopy(r.kubernetes)
    for o in unlabeled:
        if is_patch(o):
            del o["metadata"]["labels"]["istio.io/ingress-use-waypoint"]
    xd = translate(istio_xds, dataclasses.replace(r, kubernetes=unlabeled), tmp_path)
    gw = xd["proxies"]["gateway"]
    (cla,) = [e for e in gw["endpoints"] if e["cluster_name"] == "outbound|8080||echo.demo.svc.cluster.local"]
    text = json.dumps(cla)
    assert f"{WAYPOINT_IP}:15008" not in text
    assert f"{POD_CIDR}.2.1" in text  # the pod itself


