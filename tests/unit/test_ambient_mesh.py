"""The ambient pieces of the harness wing: what an ambient cluster gives istiod (mesh/workloads),
istiod's push to ztunnel as ztunnel's local file (mesh/ztunnel), the adapter's HBONE parts
(internal listeners, tunnels to a waypoint through the run's relay, upstream's filter-state
factory), the SPIFFE certificates (core/pki) and ztunnel's build copy (install/ztunnel). The live
path runs in tests/e2e/test_53_ambient.py."""

from __future__ import annotations

import base64
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from authproxy_local.core import local_map
from authproxy_local.core.pki import make_tls, spiffe_certificate
from authproxy_local.install.engine_tools import third_party_dir
from authproxy_local.install.ztunnel import cargo_toml_without_git_dependency
from authproxy_local.mesh import adapter, ztunnel
from authproxy_local.mesh.envoy_config import HARNESS_LABEL
from authproxy_local.mesh.workloads import workloads
from authproxy_local.render import is_patch, render

IP = "127.78.0.1"


@pytest.fixture(scope="module")
def ambient_render() -> Any:
    return render("ambient", "extension-provider")


def _ep(r: Any, tmp: Path, **kw: Any) -> local_map.LocalEndpoints:
    tls = make_tls(["echo.authproxy.test"], tmp)
    return local_map.LocalEndpoints(gateway_ip=IP, oauth2_proxy=(IP, 4180), oauth2_proxy_metrics=(IP, 44180),
                                    cert_file=tls.cert_file, key_file=tls.key_file, ca_file=tls.ca_file, **kw)


# ---------------------------------------------------------------- what the cluster gives istiod


def test_ambient_cluster_additions(ambient_render: Any, tmp_path: Path) -> None:
    w = workloads(ambient_render, _ep(ambient_render, tmp_path))
    kinds = {(o["kind"], o["metadata"]["name"]) for o in w.objects}
    ns = next(o for o in w.objects if o["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"
    for app in ambient_render.config.apps:
        pod = next(o for o in w.objects if o["kind"] == "Pod" and o["metadata"]["name"] == f"{app.name}-harness")
        assert pod["metadata"]["annotations"] == {"ambient.istio.io/redirection": "enabled"}
        assert pod["spec"]["serviceAccountName"] == app.service.name
        svc = next(o for o in w.objects if o["kind"] == "Service" and o["metadata"]["name"] == app.service.name)
        # the stack's patch, merged as server-side apply merges it into the user's Service
        assert svc["metadata"]["labels"]["istio.io/use-waypoint"] == "authproxy-waypoint"
        assert svc["metadata"]["labels"]["istio.io/ingress-use-waypoint"] == "true"
        assert svc["metadata"]["labels"][HARNESS_LABEL] == "true"
    assert {("GatewayClass", "istio-waypoint"), ("Service", "authproxy-waypoint"),
            ("Pod", "authproxy-waypoint-harness"), ("Pod", "mesh-client-harness")} <= kinds
    wp_pod = next(o for o in w.objects if o["metadata"]["name"] == "authproxy-waypoint-harness")
    assert wp_pod["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "authproxy-waypoint"
    assert wp_pod["metadata"]["labels"]["istio.io/dataplane-mode"] == "none"
    assert wp_pod["spec"]["serviceAccountName"] == "authproxy-waypoint"
    assert w.status[("Gateway", "demo", "authproxy-waypoint")]["addresses"][0] == {
        "type": "Hostname", "value": "authproxy-waypoint.demo.svc.cluster.local"}
    assert [p.type for p in w.proxies] == ["router", "waypoint", "ztunnel"]  # no sidecars
    assert not w.sidecar_listen


def test_translator_input_holds_the_cluster_view(ambient_render: Any, tmp_path: Path) -> None:
    w = workloads(ambient_render, _ep(ambient_render, tmp_path))
    d = adapter.write_input(ambient_render, w, tmp_path / "in")
    docs = list(yaml.safe_load_all((d / "kubernetes.yaml").read_text()))
    assert not [o for o in docs if is_patch(o)]  # merged into the harness's Service instead
    wp = next(o for o in docs if o["kind"] == "Gateway" and o["metadata"]["name"] == "authproxy-waypoint")
    assert wp["status"]["addresses"]
    assert not any("status" in o for o in docs if o is not wp)


def test_the_gateways_tunnel_to_a_waypoint_goes_to_the_runs_relay(ambient_render: Any, tmp_path: Path) -> None:
    relay = ("127.78.0.9", 15008)
    w = workloads(ambient_render, _ep(ambient_render, tmp_path, waypoints={"waypoint-authproxy-waypoint": relay}))
    assert w.endpoints[("10.88.6.1", 15008)] == relay
    lb = {"endpoint": {"address": {"envoy_internal_address": {
        "server_listener_name": "connect_originate", "endpoint_id": "10.88.6.1:15008"}}},
        "metadata": {"filter_metadata": {"envoy.filters.listener.original_dst": {
            "local": "10.88.3.1:8080", "waypoint": "10.88.6.1:15008"}}}}
    adapter._map_tunnel(lb, w, "test")
    assert lb["endpoint"]["address"]["envoy_internal_address"]["endpoint_id"] == "127.78.0.9:15008"
    meta = lb["metadata"]["filter_metadata"]["envoy.filters.listener.original_dst"]
    assert meta == {"local": "10.88.3.1:8080", "waypoint": "127.78.0.9:15008"}  # the authority stays
    w2 = workloads(ambient_render, _ep(ambient_render, tmp_path))
    with pytest.raises(adapter.AdapterError, match="no local counterpart"):
        adapter._map_tunnel(lb | {"metadata": {"filter_metadata": {"envoy.filters.listener.original_dst": {
            "waypoint": "10.88.6.1:15008"}}}}, w2, "test")


# ---------------------------------------------------------------- ztunnel's local file

PUSH: dict[str, Any] = {
    # the shape istiod's generators push (tools/istio-xds "ztunnel" entry, proto JSON)
    "addresses": [
        {"workload": {"uid": "Kubernetes//Pod/demo/echo-harness", "name": "echo-harness", "namespace": "demo",
                      "addresses": [base64.b64encode(bytes([10, 88, 2, 1])).decode()], "tunnel_protocol": "HBONE",
                      "service_account": "echo", "node": "harness-node", "workload_type": "POD",
                      "services": {"demo/echo.demo.svc.cluster.local": {"ports": [{"service_port": 8080,
                                                                                    "target_port": 8080}]}},
                      "authorization_policies": ["demo/authproxy-echo-waypoint-only"], "cluster_id": "Kubernetes"}},
        {"service": {"name": "echo", "namespace": "demo", "hostname": "echo.demo.svc.cluster.local",
                     "addresses": [{"address": base64.b64encode(bytes([10, 88, 3, 1])).decode()}],
                     "ports": [{"service_port": 8080, "target_port": 8080}],
                     "waypoint": {"hostname": {"namespace": "demo",
                                               "hostname": "authproxy-waypoint.demo.svc.cluster.local"},
                                  "hbone_mtls_port": 15008},
                     "canonical": True, "ingress_use_waypoint": True}},
    ],
    "authorizations": [
        {"name": "authproxy-echo-waypoint-only", "namespace": "demo", "scope": "WORKLOAD_SELECTOR",
         "action": "DENY", "groups": [{"rules": [{"matches": [
             {"not_principals": [{"suffix": "/ns/demo/sa/authproxy-waypoint"}]}]}]}]},
        {"name": "rule-less", "namespace": "demo", "scope": "WORKLOAD_SELECTOR"},
    ],
}


def test_ztunnel_local_config_is_istiods_push_in_ztunnels_format() -> None:
    cfg = ztunnel.local_config(PUSH)
    (w,) = cfg["workloads"]
    assert w["workloadIps"] == ["10.88.2.1"] and w["protocol"] == "HBONE"
    assert w["trustDomain"] == "cluster.local"  # empty in the push: ztunnel's own default
    assert w["authorizationPolicies"] == ["demo/authproxy-echo-waypoint-only"]
    assert w["services"] == {"demo/echo.demo.svc.cluster.local": {8080: 8080}}
    (svc,) = cfg["services"]
    assert svc["vips"] == ["/10.88.3.1"]
    assert svc["waypoint"] == {"destination": "demo/authproxy-waypoint.demo.svc.cluster.local", "hboneMtlsPort": 15008}
    deny, ruleless = cfg["policies"]
    assert deny["action"] == "Deny" and deny["scope"] == "WorkloadSelector"
    assert deny["rules"] == [[[{"notPrincipals": [ztunnel.Tagged("Suffix", "/ns/demo/sa/authproxy-waypoint")]}]]]
    assert ruleless["action"] == "Allow" and ruleless["rules"] == []  # proto JSON's defaults
    text = ztunnel.local_config_yaml(PUSH)
    assert "- !Suffix '/ns/demo/sa/authproxy-waypoint'" in text


# ---------------------------------------------------------------- certificates, build copy


def test_spiffe_certificate_names_the_identity_and_chains_to_the_root(tmp_path: Path) -> None:
    from authproxy_local.core.pki import Authority

    root = Authority("mesh root", tmp_path / "root")
    key = tmp_path / "root" / "root.key"
    from cryptography.hazmat.primitives import serialization

    key.write_bytes(root.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_file, _ = spiffe_certificate("spiffe://cluster.local/ns/demo/sa/authproxy-waypoint", root.ca_file, key,
                                      tmp_path, "waypoint")
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/demo/sa/authproxy-waypoint"]
    assert cert.issuer == root.cert.subject
    cert.verify_directly_issued_by(root.cert)
    with pytest.raises(ValueError, match="SPIFFE"):
        spiffe_certificate("demo/waypoint", root.ca_file, key, tmp_path, "bad")


def test_ztunnel_build_copy_drops_the_git_dependency() -> None:
    tarball = third_party_dir() / "ztunnel-62d82653.tar.gz"
    if not tarball.is_file():
        msg = f"the ztunnel snapshot is not at {tarball}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (CI=true)")
        pytest.skip(msg + " (a laptop without ../shared; set CI=true to make this a failure)")
    with tarfile.open(tarball) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith("/Cargo.toml") and m.name.count("/") == 1)
        f = tf.extractfile(member)
        assert f is not None
        text = io.TextIOWrapper(f).read()
    assert "boring-rustls-provider" in text
    out = cargo_toml_without_git_dependency(text)
    assert "boring-rustls-provider" not in out and 'tls-boring = ["dep:boring", "dep:boring-sys"]' in out
    assert out.count("\n") == text.rstrip("\n").count("\n")  # one line less, nothing else
