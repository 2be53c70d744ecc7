"""Istio ambient mode for the apps with ``dataplane: ambient``: the waypoint, the Service labels
that send the app's traffic (ingress included) through it, and the two layers that keep traffic
from going around it. The app's JWT and group policies (``targetRefs`` to the Service, enforced by
the waypoint) are components/authz.py; docs/ambient.md has the whole picture.

Per ambient app, in its namespace:

- the **waypoint** (unless ``waypoint.create`` is false): a Gateway API Gateway of class
  ``istio-waypoint``, labelled ``istio.io/waypoint-for: service``, with the one listener istiod
  accepts for a waypoint (``mesh``, port 15008, protocol HBONE), as ``istioctl waypoint
  generate`` writes it. istiod deploys its pods (service account = the Gateway's name). Apps of
  one namespace naming the same waypoint share it (created once).
- **labels on the app's Service**: ``istio.io/use-waypoint`` (+ ``istio.io/use-waypoint-namespace``
  for an existing waypoint elsewhere) and ``istio.io/ingress-use-waypoint: "true"`` (without it
  the ingress gateway sends straight to the pods and the waypoint's checks are skipped). The
  Service belongs to the app, so it is *patched* (pulumi-kubernetes ``ServicePatch``: server-side
  apply with the stack's own field manager), never owned: ``pulumi destroy`` removes these labels
  and leaves the Service. The patch is applied after the policies exist.
- **ztunnel's L4 policy**: a ``selector`` AuthorizationPolicy on the app's pods, DENY, with L4
  fields only: every source whose principal is not the waypoint's identity
  (``*/ns/<waypoint ns>/sa/<waypoint service account>``, any trust domain) is refused, plaintext
  included (no principal). A request that skips the waypoint (the gateway to a pod IP, another
  workload, a port-forward through the mesh) never reaches the app.
- a **NetworkPolicy** on the app's pods admitting HBONE (TCP 15008) from the waypoint's pods and
  kubelet probes, which ambient's CNI SNATs to 169.254.7.127 (IPv6
  fd16:9254:7127:1337:ffff:ffff:ffff:ffff) so they bypass ztunnel. NetworkPolicies add up: in a
  namespace with a default-deny policy this is what opens the ambient path; on its own it is the
  network-layer twin of the L4 policy (nothing but the waypoint's HBONE reaches the pods).

EnvoyFilters do not apply to waypoints: everything the stack does with EnvoyFilters stays at the
ingress gateway, which is an ordinary Envoy in ambient too.
"""

from __future__ import annotations

from typing import Any, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.common import COMMON_LABELS

WAYPOINT_CLASS = "istio-waypoint"
"""The GatewayClass istiod serves for waypoints (pkg/config/constants WaypointGatewayClassName)."""
HBONE_PORT = 15008
WAYPOINT_LISTENER = {"name": "mesh", "port": HBONE_PORT, "protocol": "HBONE"}
WAYPOINT_FOR_LABEL = "istio.io/waypoint-for"
USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
USE_WAYPOINT_NAMESPACE_LABEL = "istio.io/use-waypoint-namespace"
INGRESS_USE_WAYPOINT_LABEL = "istio.io/ingress-use-waypoint"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
"""The label istiod's waypoint template gives the waypoint's pods (value: the Gateway's name)."""
PROBE_SOURCES = ("169.254.7.127/32", "fd16:9254:7127:1337:ffff:ffff:ffff:ffff/128")
"""Where kubelet probes come from inside an ambient pod: istio-cni's HOST_PROBE_SNAT_IP(V6)
defaults (cni/pkg/nodeagent/options.go)."""


class WaypointArgs(TypedDict):
    name: str
    namespace: str
    create: bool
    service_account: str


class AmbientAppArgs(TypedDict):
    name: str
    namespace: str
    """The app's namespace (its Service and pods)."""
    service: str
    """Name of the app's Service."""
    selector: dict[str, str]
    """Labels of the app's pods."""
    waypoint: WaypointArgs


class AmbientArgs(TypedDict):
    prefix: str
    """Prefix of the object names (the gateway's name, as for the other policies)."""
    apps: list[AmbientAppArgs]
    policies: list[pulumi.Resource]
    """What must exist before a Service switches to its waypoint: the app-side policies the
    waypoint enforces (the Authz component)."""


def waypoint_gateway_spec() -> dict[str, Any]:
    """The waypoint Gateway's spec (``istioctl waypoint generate --for service``)."""
    return {"gatewayClassName": WAYPOINT_CLASS, "listeners": [dict(WAYPOINT_LISTENER)]}


def waypoint_labels() -> dict[str, str]:
    return {**COMMON_LABELS, WAYPOINT_FOR_LABEL: "service"}


def waypoints_to_create(args: AmbientArgs) -> list[WaypointArgs]:
    """Each waypoint the stack creates, once, in the order the apps name them."""
    out: dict[tuple[str, str], WaypointArgs] = {}
    for app in args["apps"]:
        wp = app["waypoint"]
        if wp["create"]:
            out.setdefault((wp["namespace"], wp["name"]), wp)
    return list(out.values())


def service_labels(app: AmbientAppArgs) -> dict[str, str]:
    """The labels the stack puts on the app's Service."""
    wp = app["waypoint"]
    out = {USE_WAYPOINT_LABEL: wp["name"], INGRESS_USE_WAYPOINT_LABEL: "true"}
    if wp["namespace"] != app["namespace"]:
        out[USE_WAYPOINT_NAMESPACE_LABEL] = wp["namespace"]
    return out


def waypoint_principal(wp: WaypointArgs) -> str:
    """The waypoint's identity as an AuthorizationPolicy principal, in any trust domain."""
    return f"*/ns/{wp['namespace']}/sa/{wp['service_account']}"


def waypoint_only_policy_spec(app: AmbientAppArgs) -> dict[str, Any]:
    """ztunnel's L4 policy on the app's pods: DENY every source but the waypoint. Only fields
    ztunnel evaluates (``source.notPrincipals``); an L7 field here would make istiod drop the rule
    (ALLOW) or deny everything (DENY)."""
    return {
        "selector": {"matchLabels": dict(app["selector"])},
        "action": "DENY",
        "rules": [{"from": [{"source": {"notPrincipals": [waypoint_principal(app["waypoint"])]}}]}],
    }


def network_policy_spec(app: AmbientAppArgs) -> dict[str, Any]:
    """The app's pods accept HBONE from the waypoint's pods and kubelet probes (ambient's SNAT
    address), nothing else from this policy."""
    wp = app["waypoint"]
    return {
        "podSelector": {"matchLabels": dict(app["selector"])},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": wp["namespace"]}},
                    "podSelector": {"matchLabels": {GATEWAY_NAME_LABEL: wp["name"]}},
                }],
                "ports": [{"protocol": "TCP", "port": HBONE_PORT}],
            },
            {"from": [{"ipBlock": {"cidr": cidr}} for cidr in PROBE_SOURCES]},
        ],
    }


class Ambient(pulumi.ComponentResource):
    """Waypoints, Service labels, ztunnel's L4 policy and NetworkPolicies of the ambient apps.

    Outputs:
      waypoints: "<namespace>/<name>" of every waypoint the ambient apps use.
      services: "<namespace>/<name>" of every Service labelled to use its waypoint.
    """

    waypoints: pulumi.Output[list[str]]
    services: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: AmbientArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("authproxy:ambient:Ambient", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        prefix = args["prefix"]
        gateways: dict[tuple[str, str], pulumi.Resource] = {}
        for wp in waypoints_to_create(args):
            gateways[wp["namespace"], wp["name"]] = k8s.apiextensions.CustomResource(
                f"{name}-waypoint-{wp['namespace']}-{wp['name']}",
                api_version="gateway.networking.k8s.io/v1",
                kind="Gateway",
                metadata={"name": wp["name"], "namespace": wp["namespace"],
                          "labels": waypoint_labels()},
                spec=waypoint_gateway_spec(),
                opts=child,
            )
        for app in args["apps"]:
            a, ns = app["name"], app["namespace"]
            meta = {"namespace": ns, "labels": dict(COMMON_LABELS)}
            l4 = k8s.apiextensions.CustomResource(
                f"{name}-{a}-waypoint-only",
                api_version="security.istio.io/v1",
                kind="AuthorizationPolicy",
                metadata={**meta, "name": f"{prefix}-{a}-waypoint-only"},
                spec=waypoint_only_policy_spec(app),
                opts=child,
            )
            netpol = k8s.networking.v1.NetworkPolicy(  # type: ignore[call-overload]
                f"{name}-{a}-hbone",
                metadata={**meta, "name": f"{prefix}-{a}-ambient-hbone"},
                spec=network_policy_spec(app),
                opts=child,
            )
            wp = app["waypoint"]
            after = [*args["policies"], l4, netpol]
            if (wp["namespace"], wp["name"]) in gateways:
                after.append(gateways[wp["namespace"], wp["name"]])
            # The user's Service: only these labels are ours (server-side apply field manager).
            k8s.core.v1.ServicePatch(
                f"{name}-{a}-service-labels",
                metadata={"name": app["service"], "namespace": ns, "labels": service_labels(app)},
                opts=pulumi.ResourceOptions(parent=self, depends_on=after),
            )
        self.waypoints = pulumi.Output.from_input(sorted(
            {f"{app['waypoint']['namespace']}/{app['waypoint']['name']}" for app in args["apps"]}))
        self.services = pulumi.Output.from_input(
            [f"{app['namespace']}/{app['service']}" for app in args["apps"]])
        self.register_outputs({"waypoints": self.waypoints, "services": self.services})
