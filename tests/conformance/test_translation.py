"""Istio's own translation of the renders reads the fail-closed rules out of the Envoy config
istiod would push (tools/istio-xds, istiod's config generation run in-process), for the dev stack
(Istio Gateway) and the gateway-api stack, in both ext_authz modes:

- the gateway runs ext_authz first, before jwt_authn and RBAC, in both modes, and its RBAC
  refuses a missing principal and a token without the app's *full* group path;
- the check goes to oauth2-proxy under the path prefix with the gateway-set client address;
- header names with ``_`` are rejected by every gateway HTTP connection manager;
- HSTS on our virtual hosts and on the HTTPS listeners' local replies;
- client-sent tokens of oauth2-proxy's own client are refused on the API-client route;
- the gateway reaches the apps with Istio mTLS (the DestinationRule), and the apps' sidecars accept
  only mTLS (STRICT) and admit a token only from the gateway's SPIFFE identity.

The workloads are the harness's (authproxy_local/mesh/workloads.py), what a cluster gives istiod:
pods labelled as the Services select them, sidecar-injected (``security.istio.io/tlsMode: istio``),
with their service accounts; the group app also has a pod its policies miss and one without a
sidecar.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from authproxy_local import render
from authproxy_local.mesh import adapter as xds_adapter
from authproxy_local.mesh import workloads as mesh_workloads
from authproxy_local.mesh.envoy_config import HCM
from tests.conformance.conftest import installed, report
from tests.envoy_proc import offline_endpoints

CASES = [(s, m) for s in ("dev", "gateway-api") for m in render.MODES]
IP = "127.77.0.1"
GATEWAY_SA = {"dev": "istio-ingressgateway", "gateway-api": "authproxy-istio"}


@pytest.fixture(scope="module")
def xds(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[Any, dict[str, Any]]]:
    exe = installed("istio-xds", "istio-xds", "istio-xds (istiod's translation, istio.io/istio {istio}), {path}")
    out = {}
    for stack, mode in CASES:
        tmp = tmp_path_factory.mktemp(f"xds-{stack}-{mode}")
        r = render.render(stack, mode)
        ep = offline_endpoints(tmp, r, IP)
        w = mesh_workloads.workloads(r, ep)
        env = xds_adapter.translator_env(os.environ, None, ep.ca_file)
        out[stack, mode] = (r, xds_adapter.translate(exe, xds_adapter.write_input(r, w, tmp / "in"), env))
    return out


def _hcms(proxy: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(lst["name"], f["typed_config"]) for lst in proxy["listeners"]
            for chain in lst.get("filter_chains", []) for f in chain.get("filters", [])
            if f.get("name") == HCM]


@pytest.mark.parametrize("case", CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_the_gateway_checks_first_and_refuses_at_the_edge(xds, case) -> None:
    _, out = xds[case]
    gw = out["proxies"]["gateway"]
    hcms = _hcms(gw)
    assert hcms
    for name, hcm in hcms:
        order = [f["name"] for f in hcm["http_filters"]]
        ext = order.index("envoy.filters.http.ext_authz")
        # ext_authz before jwt_authn and the DENY RBAC, in both modes (istiod's CUSTOM shadow
        # rules, extension-provider mode only, come before it and decide nothing)
        assert ext < order.index("envoy.filters.http.jwt_authn"), (name, order)
        rbacs = [i for i, n in enumerate(order) if n == "envoy.filters.http.rbac"]
        assert rbacs and rbacs[-1] > ext, (name, order)
        # X_Auth_Request_Groups etc.: refused before any filter
        assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST", name
        (authz,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
        svc = authz["typed_config"]["http_service"]
        assert svc["path_prefix"] == "/authproxy-check"
        added = {h["key"]: h["value"] for h in svc["authorization_request"]["headers_to_add"]}
        assert added["x-envoy-external-address"] == "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
    report("istiod's translation", f"{case[0]}-{case[1]}: gateway ext_authz first in {len(hcms)} "
           "HCMs, underscores rejected, check under /authproxy-check")


@pytest.mark.parametrize("case", CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_hsts_on_our_virtual_hosts_and_the_gateways_local_replies(xds, case) -> None:
    r, out = xds[case]
    gw = out["proxies"]["gateway"]
    hosts = [r.config.auth_hostname, *(a.host for a in r.config.apps)]
    vhosts = {v["name"]: v for rc in gw["routes"] for v in rc.get("virtual_hosts", [])}
    for h in hosts:
        added = vhosts[f"{h}:443"].get("response_headers_to_add", [])
        assert {"header": {"key": "strict-transport-security", "value": "max-age=31536000"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"} in added, h
    https = [hcm for name, hcm in _hcms(gw) if "local_reply_config" in hcm]
    assert https, "no HTTPS listener carries the local-reply HSTS mapper"
    for hcm in https:
        (mapper,) = hcm["local_reply_config"]["mappers"]
        assert mapper["headers_to_add"][0]["header"]["key"] == "strict-transport-security"


@pytest.mark.parametrize("case", CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_groups_by_full_path_and_no_replayed_id_token_at_the_gateway(xds, case) -> None:
    r, out = xds[case]
    gw = json.dumps(out["proxies"]["gateway"]["listeners"])
    admin = next(a for a in r.config.apps if a.groups)
    for path in admin.group_paths:
        assert f'"exact": "{path}"' in gw  # the DENY rule's groups claim matcher, full path
    # the bearer route's replay rule: azp = oauth2-proxy's client, no checked mark
    assert '"key": "azp"' in gw and f'"exact": "{r.config.keycloak.client_id}"' in gw
    assert '"name": "x-auth-request-user"' in gw and '"present_match": true' in gw


@pytest.mark.parametrize("case", CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_gateway_to_sidecar_is_istio_mtls_and_sidecars_admit_tokens_only_from_the_gateway(xds, case) -> None:
    r, out = xds[case]
    stack = case[0]
    gw = out["proxies"]["gateway"]
    principal = f"spiffe://cluster.local/ns/{r.config.istio.gateway.namespace}/sa/{GATEWAY_SA[stack]}"
    for app in r.config.apps:
        host = f"{app.service.name}.{app.service.namespace}.svc.cluster.local"
        (cluster,) = [c for c in gw["clusters"] if c["name"] == f"outbound|{app.service.port}||{host}"]
        ts = cluster.get("transport_socket") or {}
        assert ts.get("name") == "envoy.transport_sockets.tls", (app.name, cluster.get("transport_socket_matches"))
        ctx = ts["typed_config"]["common_tls_context"]
        assert ctx["tls_certificate_sds_secret_configs"][0]["name"] == "default"  # the gateway's SPIFFE cert
        sans = json.dumps(ctx["combined_validation_context"]["default_validation_context"])
        assert f"spiffe://cluster.local/ns/{app.service.namespace}/sa/{app.name}" in sans
        side = out["proxies"][f"sidecar-{app.name}"]
        (inbound,) = [lst for lst in side["listeners"] if lst["name"] == "virtualInbound"]
        port_chains = [c for c in inbound["filter_chains"]
                       if (c.get("filter_chain_match") or {}).get("destination_port") == app.service.port]
        assert port_chains and all(c.get("transport_socket", {}).get("name") == "envoy.transport_sockets.tls"
                                   for c in port_chains), "STRICT: no plain-text chain for the app's port"
        rbac = [f["typed_config"] for c in port_chains for flt in c["filters"] if flt["name"] == HCM
                for f in flt["typed_config"]["http_filters"] if f["name"] == "envoy.filters.http.rbac"]
        allow = [p for cfg in rbac for name, p in (cfg.get("rules") or {}).get("policies", {}).items()
                 if (cfg.get("rules") or {}).get("action", "ALLOW") == "ALLOW"
                 and name == f"ns[{app.service.namespace}]-policy[authproxy-{app.name}-require-jwt]-rule[0]"]
        assert allow, f"{app.name}: no ALLOW rule of the sidecar policy in istiod's RBAC config"
        for policy in allow:
            text = json.dumps(policy["principals"])
            # the rule: the gateway's mTLS identity AND a request principal of our issuer
            assert f'"exact": "{principal}"' in text, text[:400]
            assert f'"exact": "{r.config.keycloak.issuer}"' in text  # payload.iss
    report("istiod's translation", f"{case[0]}-{case[1]}: gateway -> sidecars ISTIO_MUTUAL with "
           "SAN checks; sidecars STRICT and admit tokens from the gateway identity only")
