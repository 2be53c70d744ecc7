"""Optional Istio install for dev clusters (``istio.install.enabled``, off by default): Helm releases
of Istio's ``base`` (CRDs, cluster roles), ``istiod`` and ``gateway`` charts, all at the pinned
``istio.install.version`` from ``istio.install.repository``.

istiod's ``meshConfig`` value is :func:`components.authz.mesh_config` (the very structure exported as
the ``meshConfig`` stack output), so an installed mesh and a merged one register the same
extension provider. The gateway release carries the configured gateway selector as its pod labels,
so the Gateway, the policies and the EnvoyFilters select its pods.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_kubernetes as k8s

ISTIO_NAMESPACE = "istio-system"
BASE_RELEASE = "istio-base"
ISTIOD_RELEASE = "istiod"
GATEWAY_RELEASE = "istio-ingressgateway"
"""The gateway chart derives its default labels from the release name
(``app: istio-ingressgateway``, ``istio: ingressgateway``)."""


class IstioInstallArgs(TypedDict):
    repository: str
    version: str
    mesh_config: dict[str, Any]
    """istiod's meshConfig (from components.authz.mesh_config)."""
    gateway_namespace: str
    gateway_labels: dict[str, str]
    """The configured gateway selector; set as the gateway pods' labels."""
    jwks_extra_root_ca: NotRequired[str | None]
    """PEM of a private CA istiod must trust when it fetches the realm's JWKS (keycloak.caCertificate)."""


def istiod_values(args: IstioInstallArgs) -> dict[str, Any]:
    values: dict[str, Any] = {"meshConfig": args["mesh_config"]}
    if args.get("jwks_extra_root_ca"):
        # The istiod chart puts it into the ConfigMap pilot-jwks-extra-cacerts, mounted as
        # /cacerts/extra.pem: istiod's JWKS resolver trusts it next to the system roots.
        values["jwksResolverExtraRootCA"] = args["jwks_extra_root_ca"]
    return values


def gateway_values(args: IstioInstallArgs) -> dict[str, Any]:
    return {"labels": dict(args["gateway_labels"])}


def releases(args: IstioInstallArgs) -> list[dict[str, Any]]:
    """The three releases in install order: (release name, chart, namespace, values)."""
    return [
        {"name": BASE_RELEASE, "chart": "base", "namespace": ISTIO_NAMESPACE, "values": {}},
        {"name": ISTIOD_RELEASE, "chart": "istiod", "namespace": ISTIO_NAMESPACE,
         "values": istiod_values(args)},
        {"name": GATEWAY_RELEASE, "chart": "gateway", "namespace": args["gateway_namespace"],
         "values": gateway_values(args)},
    ]


class IstioInstall(pulumi.ComponentResource):
    """Istio base, istiod and an ingress gateway from the official charts.

    Attributes:
      ready: the releases Istio objects must wait for (CRDs, istiod's validation webhook, the
        gateway pods).
    Outputs:
      version: the installed chart version.
    """

    version: pulumi.Output[str]

    def __init__(
        self, name: str, args: IstioInstallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("authproxy:istio_install:IstioInstall", name, None, opts)
        previous: list[pulumi.Resource] = []
        created: list[k8s.helm.v3.Release] = []
        for rel in releases(args):
            release = k8s.helm.v3.Release(
                f"{name}-{rel['chart']}",
                name=rel["name"],
                chart=rel["chart"],
                version=args["version"],
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=args["repository"]),
                namespace=rel["namespace"],
                create_namespace=True,
                values=rel["values"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(previous)),
            )
            created.append(release)
            previous = [release]
        self.ready: list[pulumi.Resource] = list(created)
        self.version = pulumi.Output.from_input(args["version"])
        self.register_outputs({"version": self.version})
