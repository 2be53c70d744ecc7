"""The CRDs a user's cluster has before `pulumi up`, as their projects publish them: Istio's (the
istio.io/istio module the installer pins), the Gateway API's standard channel, cert-manager's
Certificate/ClusterIssuer and the Prometheus operator's ServiceMonitor (their Go modules, through
the Go module proxy, checksum-verified).

Imports: :mod:`authproxy_local.install`, PyYAML.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from authproxy_local import install


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def istio_crds() -> list[dict[str, Any]]:
    """Istio's CRDs from the istio.io/istio module the installer pins (manifests/charts/base)."""
    root = install.go_module(install.ISTIO_MODULE, install.VERSIONS["istio"])
    return _yaml_docs(root / "manifests/charts/base/files/crd-all.gen.yaml")


ADDON_CRDS: dict[str, tuple[str, tuple[str, ...]]] = {
    # Go module -> (pinned version, CRD files in it): what the prod stack's Certificate (cert-manager)
    # and ServiceMonitors (Prometheus operator) need in a cluster, as their projects publish them.
    "github.com/cert-manager/cert-manager": ("v1.19.1", (
        "deploy/crds/cert-manager.io_certificates.yaml", "deploy/crds/cert-manager.io_clusterissuers.yaml")),
    "github.com/prometheus-operator/prometheus-operator": ("v0.85.0", (
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",)),
}


def addon_crds() -> list[dict[str, Any]]:
    """cert-manager's Certificate/ClusterIssuer and the Prometheus operator's ServiceMonitor CRDs,
    from their Go modules."""
    docs: list[dict[str, Any]] = []
    for module, (version, files) in ADDON_CRDS.items():
        root = install.go_module(module, version)
        for f in files:
            docs += _yaml_docs(root / f)
    return docs


def gateway_api_crds() -> list[dict[str, Any]]:
    """The standard-channel Gateway API CRDs of the pinned sigs.k8s.io/gateway-api module (what a
    cluster running Istio with the Gateway API has installed); their CEL rules run in this API
    server when the gateway-api stack creates its objects."""
    docs: list[dict[str, Any]] = []
    for f in install.gateway_api_crd_files(install.ensure("gateway-api-crds")):
        docs += _yaml_docs(f)
    return docs


@functools.cache
def cluster_crds() -> list[dict[str, Any]]:
    """Every CRD the stacks use, as a user's cluster has them before `pulumi up`: Istio's,
    cert-manager's Certificate/ClusterIssuer, the ServiceMonitor, the Gateway API's. Read once per
    process (every local cluster of a test session installs the same set)."""
    return istio_crds() + addon_crds() + gateway_api_crds()
