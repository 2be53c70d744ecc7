"""oauth2-proxy as a hardened workload: Secret, ServiceAccount, Deployment, Service,
PodDisruptionBudget, optional HorizontalPodAutoscaler, NetworkPolicies, optional ServiceMonitor.

The flag set comes from components/proxy_settings.py; every object spec comes from a pure function
here, so tests read the same decisions the component applies.

Network: only the ingress gateway's pods and pods of this namespace reach port 4180; oauth2-proxy
itself may reach only DNS, its Redis and Keycloak. Pods run without an Istio sidecar (see
docs/session-store.md, "Namespace").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.common import COMMON_LABELS
from components.proxy_settings import (
    CLIENT_SECRET_KEY,
    COOKIE_SECRET_KEY,
    HTTP_PORT,
    METRICS_PORT,
    PING_PATH,
    READY_PATH,
    REDIS_PASSWORD_KEY,
    ProxySettings,
    proxy_command,
)

CONTAINER = "oauth2-proxy"
RUN_AS = 65532
"""The distroless `nonroot` user of the official image."""
ANY_IPV4 = "0.0.0.0/0"
ANY_IPV6 = "::/0"
NODELOCAL_DNS = "169.254.20.10/32"
"""NodeLocal DNSCache's conventional address (clusters that run it answer DNS there)."""
KEYCLOAK_CA_VOLUME = "keycloak-ca"
KEYCLOAK_CA_DIR = "/etc/oauth2-proxy/keycloak-ca"
KEYCLOAK_CA_KEY = "ca.crt"
KEYCLOAK_CA_FILE = f"{KEYCLOAK_CA_DIR}/{KEYCLOAK_CA_KEY}"
"""Where a private Keycloak CA (``keycloak.caCertificate``) is mounted from the ConfigMap
``<name>-keycloak-ca``; ``--provider-ca-file`` names it."""


class Autoscaling(TypedDict):
    enabled: bool
    min_replicas: int
    max_replicas: int
    target_cpu_utilization: int


class PodPeer(TypedDict):
    """Pods in another (or this) namespace, and the container port they listen on."""

    namespace: str
    pod_labels: dict[str, str]
    port: int


class GatewayPeer(TypedDict):
    namespace: str
    selector: dict[str, str]


class RedisEgress(TypedDict):
    """Where oauth2-proxy's Redis traffic goes: the chart's pods, or anywhere on these ports."""

    pod_labels: dict[str, str] | None
    """Redis pods in this namespace (chart modes); None for an external Redis."""
    ports: list[int]


class Lifecycle(TypedDict):
    """How a pod leaves and joins the Service without failing a request (docs/reliability.md)."""

    drain_seconds: int
    """preStop sleep: the pod keeps serving after it left the endpoints, until the gateways
    stopped sending to it; 0 = no preStop hook."""
    grace_seconds: int
    """terminationGracePeriodSeconds (drain plus the time requests in flight get)."""
    min_ready_seconds: int
    """Deployment minReadySeconds (the gateways learn of a new pod before an old one goes)."""


DEFAULT_LIFECYCLE = Lifecycle(drain_seconds=10, grace_seconds=30, min_ready_seconds=5)


class OAuth2ProxyArgs(TypedDict):
    """Inputs of the oauth2-proxy component (plain values, except the secrets)."""

    name: str
    """Name of the Deployment, Service, Secret, ServiceAccount."""
    namespace: str
    image: str
    settings: ProxySettings
    replicas: int
    autoscaling: Autoscaling
    pdb_min_available: int | None
    """minAvailable of the PodDisruptionBudget; None: `maxUnavailable: 1`."""
    resources: dict[str, dict[str, str]]
    service_monitor: bool
    gateway: GatewayPeer
    keycloak_in_cluster: PodPeer | None
    keycloak_port: int
    redis_egress: RedisEgress
    cookie_secret: pulumi.Input[str]
    client_secret: pulumi.Input[str]
    redis_password: pulumi.Input[str]
    lifecycle: NotRequired[Lifecycle]
    """Default :data:`DEFAULT_LIFECYCLE`."""
    keycloak_ca_certificate: NotRequired[str | None]
    """PEM of a private CA that signed Keycloak's certificate: mounted from a ConfigMap at
    :data:`KEYCLOAK_CA_FILE` (``settings.provider_ca_file`` must name it). None: the system store."""


def proxy_labels(name: str) -> dict[str, str]:
    """Selector labels of the oauth2-proxy pods."""
    return {"app.kubernetes.io/name": "oauth2-proxy", "app.kubernetes.io/instance": name}


def object_labels(name: str) -> dict[str, str]:
    return {
        **proxy_labels(name),
        "app.kubernetes.io/component": "authentication",
        **COMMON_LABELS,
    }


def service_fqdn(name: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    """The Service's name as Istio's registry knows it (for meshConfig extension providers)."""
    return f"{name}.{namespace}.svc.{cluster_domain}"


def secrets_checksum(values: Mapping[str, str]) -> str:
    """Hash of the Secret's values for the pod annotation, so a rotation rolls the pods.

    The input always includes the 32 random bytes of the cookie secret, so the hash cannot be
    brute-forced even when another value (an external Redis password) is weak.
    """
    if COOKIE_SECRET_KEY not in values:
        raise ValueError("the checksum must cover the cookie secret")
    canonical = json.dumps(dict(sorted(values.items())), separators=(",", ":"))
    return hashlib.sha256(b"authproxy/oauth2-proxy\0" + canonical.encode()).hexdigest()


READINESS_TIMING = {"periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 1,
                    "successThreshold": 1}
"""`/ready` pings Redis. While the session store is unreachable (a sentinel failover) every
replica leaves the Service within about 2 s, and comes back one probe after Redis answers again:
no check reaches oauth2-proxy at the moment its Redis client reconnects, which is when
oauth2-proxy would delete sessions (a read fails, the delete that follows already succeeds;
docs/reliability.md). Meanwhile the gateway answers 503 rather than sending signed-in users to a
sign-in that could not store a session either; a new pod is ready within 2 s of starting."""


def keycloak_ca_configmap_name(name: str) -> str:
    return f"{name}-keycloak-ca"


def keycloak_ca_checksum(pem: str) -> str:
    """Hash of the CA for the pod annotation: oauth2-proxy reads the CA once at start, so a
    changed CA must roll the pods."""
    return hashlib.sha256(pem.encode()).hexdigest()


def _keycloak_ca(args: OAuth2ProxyArgs) -> str | None:
    """The private Keycloak CA, checked against the flag that must name its mount."""
    pem = args.get("keycloak_ca_certificate") or None
    flag = args["settings"].provider_ca_file
    if (pem is None) != (flag is None) or (flag is not None and flag != KEYCLOAK_CA_FILE):
        raise ValueError(f"settings.provider_ca_file must be {KEYCLOAK_CA_FILE} exactly when a "
                         "Keycloak CA certificate is given")
    return pem


def _probe(path: str, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, **timing}


def lifecycle_of(args: OAuth2ProxyArgs) -> Lifecycle:
    return args.get("lifecycle", DEFAULT_LIFECYCLE)


def container_lifecycle(lc: Lifecycle) -> dict[str, Any] | None:
    """The container's preStop hook: sleep before SIGTERM (Kubernetes' sleep action, GA in 1.34,
    on by default since 1.30; the distroless image has no `sleep` binary for an exec hook).

    oauth2-proxy stops accepting connections the moment it gets SIGTERM (Go's
    ``http.Server.Shutdown``: listeners closed, idle connections closed, requests in flight
    finished), while the gateways still send to the pod until istiod has pushed the endpoint
    change; the sleep covers that propagation."""
    if lc["drain_seconds"] <= 0:
        return None
    return {"preStop": {"sleep": {"seconds": lc["drain_seconds"]}}}


def pod_spec(args: OAuth2ProxyArgs) -> dict[str, Any]:
    """The pod spec (without the checksum annotation, which is an Output)."""
    name = args["name"]
    cmd_args, env = proxy_command(args["settings"])
    selector = proxy_labels(name)
    ports = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
    if args["settings"].metrics_address:
        ports.append({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"})
    lc = lifecycle_of(args)
    hooks = container_lifecycle(lc)
    spec: dict[str, Any] = {
        "serviceAccountName": name,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": lc["grace_seconds"],
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Spread replicas over zones and nodes; soft, so a small cluster still schedules them.
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
        ],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": selector},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }],
            },
        },
        "containers": [{
            "name": CONTAINER,
            "image": args["image"],
            "imagePullPolicy": "IfNotPresent",
            "args": cmd_args,
            "env": env,
            "ports": ports,
            "readinessProbe": _probe(READY_PATH, **READINESS_TIMING),
            "livenessProbe": _probe(
                PING_PATH, initialDelaySeconds=5, periodSeconds=10, timeoutSeconds=2,
                failureThreshold=3,
            ),
            **({"lifecycle": hooks} if hooks else {}),
            "resources": {
                "requests": dict(args["resources"]["requests"]),
                "limits": dict(args["resources"]["limits"]),
            },
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "privileged": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }],
    }
    if _keycloak_ca(args) is not None:
        spec["volumes"] = [{"name": KEYCLOAK_CA_VOLUME,
                            "configMap": {"name": keycloak_ca_configmap_name(name),
                                          "items": [{"key": KEYCLOAK_CA_KEY, "path": KEYCLOAK_CA_KEY}]}}]
        spec["containers"][0]["volumeMounts"] = [{"name": KEYCLOAK_CA_VOLUME, "mountPath": KEYCLOAK_CA_DIR,
                                                  "readOnly": True}]
    return spec


ROLLING_UPDATE: k8s.apps.v1.RollingUpdateDeploymentArgsDict = {"max_unavailable": 0, "max_surge": 1}
"""A rollout adds one new pod, waits for it to be ready, then removes an old one: the ready
count never drops below the replica count, so a rollout neither needs an eviction nor uses up
the PodDisruptionBudget's allowance (a drain during a rollout still gets its one pod)."""
PATCH_FORCE_ANNOTATION = "pulumi.com/patchForce"


def initial_replicas(args: OAuth2ProxyArgs) -> int:
    """The Deployment's replica count as the stack sets it: `replicas`, or with an HPA its
    minimum (the count on creation only: see :func:`deployment_ignore_changes`)."""
    a = args["autoscaling"]
    return a["min_replicas"] if a["enabled"] else args["replicas"]


def deployment_ignore_changes(args: OAuth2ProxyArgs) -> list[str]:
    """With an HPA, the stack sets `spec.replicas` when it creates the Deployment and never again.

    pulumi-kubernetes (server-side apply) then drops the field from its apply once the HPA has
    scaled (the HPA's field manager owns it), and keeps the live count otherwise; so a preview
    shows no diff when the HPA scales, no `up` resets the HPA's count, and turning autoscaling on
    keeps the current pods (leaving `replicas` out instead would reset them to 1 for a moment).
    """
    return ["spec.replicas"] if args["autoscaling"]["enabled"] else []


def deployment_spec(
    args: OAuth2ProxyArgs, checksum: pulumi.Input[str] | str
) -> k8s.apps.v1.DeploymentSpecArgsDict:
    """apps/v1 Deployment spec. With autoscaling the HPA owns the replica count after creation.
    The SDK's typed spec (snake_case names, checked by mypy; the SDK sends the API's camelCase
    names); the pod template is the API object as is (core/v1 types are not checked statically,
    see pyproject)."""
    name = args["name"]
    annotations: dict[str, Any] = {"checksum/secret": checksum}
    pem = _keycloak_ca(args)
    if pem is not None:
        annotations["checksum/keycloak-ca"] = keycloak_ca_checksum(pem)
    spec: k8s.apps.v1.DeploymentSpecArgsDict = {
        "replicas": initial_replicas(args),
        "selector": {"match_labels": proxy_labels(name)},
        "revision_history_limit": 5,
        "min_ready_seconds": lifecycle_of(args)["min_ready_seconds"],
        "strategy": {"type": "RollingUpdate", "rolling_update": ROLLING_UPDATE},
        "template": {
            "metadata": {
                # No Istio sidecar (the label is Istio's current per-pod switch).
                "labels": {**object_labels(name), "sidecar.istio.io/inject": "false"},
                "annotations": annotations,
            },
            "spec": pod_spec(args),
        },
    }
    return spec


def service_spec(args: OAuth2ProxyArgs) -> dict[str, Any]:
    ports = [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP",
              "appProtocol": "http"}]
    if args["settings"].metrics_address:
        ports.append({"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics",
                      "protocol": "TCP", "appProtocol": "http"})
    return {"type": "ClusterIP", "selector": proxy_labels(args["name"]), "ports": ports}


def pdb_spec(args: OAuth2ProxyArgs) -> k8s.policy.v1.PodDisruptionBudgetSpecArgsDict:
    """policy/v1 PodDisruptionBudget spec.

    Default `maxUnavailable: 1`: a drain evicts one pod, and the next only once its replacement
    is ready; with one replica that one may go (a PDB that blocks it would hang every node
    drain). It counts against the Deployment's current scale, so it holds while an HPA scales.
    A configured minAvailable is below the replica floor (validated). Rollouts delete pods
    without the eviction API, so the PDB never blocks them (see ROLLING_UPDATE).
    """
    spec: k8s.policy.v1.PodDisruptionBudgetSpecArgsDict = {
        "selector": {"match_labels": proxy_labels(args["name"])},
        # A pod that is not ready anyway may always be evicted, so a crash loop cannot hang drains.
        "unhealthy_pod_eviction_policy": "AlwaysAllow",
    }
    if args["pdb_min_available"] is None:
        spec["max_unavailable"] = 1
    else:
        spec["min_available"] = args["pdb_min_available"]
    return spec


def hpa_spec(args: OAuth2ProxyArgs) -> k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgsDict:
    a = args["autoscaling"]
    return {
        "scale_target_ref": {"api_version": "apps/v1", "kind": "Deployment", "name": args["name"]},
        "min_replicas": a["min_replicas"],
        "max_replicas": a["max_replicas"],
        "metrics": [{
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "average_utilization": a["target_cpu_utilization"]},
            },
        }],
    }


NetworkPolicySpec = k8s.networking.v1.NetworkPolicySpecArgsDict
NetworkPolicyPeer = k8s.networking.v1.NetworkPolicyPeerArgsDict
NetworkPolicyPort = k8s.networking.v1.NetworkPolicyPortArgsDict


def _ns_selector(namespace: str) -> k8s.meta.v1.LabelSelectorArgsDict:
    return {"match_labels": {"kubernetes.io/metadata.name": namespace}}


def _anywhere(ports: list[NetworkPolicyPort]) -> k8s.networking.v1.NetworkPolicyEgressRuleArgsDict:
    return {"to": [{"ip_block": {"cidr": ANY_IPV4}}, {"ip_block": {"cidr": ANY_IPV6}}], "ports": ports}


def ingress_policy_spec(args: OAuth2ProxyArgs) -> NetworkPolicySpec:
    """Who reaches oauth2-proxy: the ingress gateway (4180) and this namespace (4180, metrics);
    with a ServiceMonitor, Prometheus from any namespace (metrics port only)."""
    gw = args["gateway"]
    http: NetworkPolicyPort = {"protocol": "TCP", "port": HTTP_PORT}
    metrics: NetworkPolicyPort = {"protocol": "TCP", "port": METRICS_PORT}
    has_metrics = bool(args["settings"].metrics_address)
    rules: list[k8s.networking.v1.NetworkPolicyIngressRuleArgsDict] = [
        {
            "from_": [{
                "namespace_selector": _ns_selector(gw["namespace"]),
                "pod_selector": {"match_labels": dict(gw["selector"])},
            }],
            "ports": [http],
        },
        {"from_": [{"pod_selector": {}}], "ports": [http, metrics] if has_metrics else [http]},
    ]
    if has_metrics and args["service_monitor"]:
        rules.append({"from_": [{"namespace_selector": {}}], "ports": [metrics]})
    return {
        "pod_selector": {"match_labels": proxy_labels(args["name"])},
        "policy_types": ["Ingress"],
        "ingress": rules,
    }


def egress_policy_spec(args: OAuth2ProxyArgs) -> NetworkPolicySpec:
    """Where oauth2-proxy may connect: cluster DNS, its Redis, Keycloak. Nothing else.

    Keycloak outside the cluster (or behind an address unknown here) gets the URL's port on any
    address: the cluster's pod and service ranges are not known, and excluding them would break a
    Keycloak URL that hairpins through an in-cluster load balancer. `keycloak.inCluster` narrows
    it to the pods that actually receive the connection.
    """
    dns_ports: list[NetworkPolicyPort] = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    rules: list[k8s.networking.v1.NetworkPolicyEgressRuleArgsDict] = [
        {
            "to": [
                {
                    "namespace_selector": _ns_selector("kube-system"),
                    "pod_selector": {"match_labels": {"k8s-app": "kube-dns"}},
                },
                {"ip_block": {"cidr": NODELOCAL_DNS}},
            ],
            "ports": dns_ports,
        },
    ]
    r = args["redis_egress"]
    redis_ports: list[NetworkPolicyPort] = [{"protocol": "TCP", "port": p} for p in r["ports"]]
    if r["pod_labels"]:
        rules.append({"to": [{"pod_selector": {"match_labels": dict(r["pod_labels"])}}],
                      "ports": redis_ports})
    else:
        rules.append(_anywhere(redis_ports))
    kc = args["keycloak_in_cluster"]
    if kc:
        rules.append({
            "to": [{
                "namespace_selector": _ns_selector(kc["namespace"]),
                "pod_selector": {"match_labels": dict(kc["pod_labels"])},
            }],
            "ports": [{"protocol": "TCP", "port": kc["port"]}],
        })
    else:
        rules.append(_anywhere([{"protocol": "TCP", "port": args["keycloak_port"]}]))
    return {
        "pod_selector": {"match_labels": proxy_labels(args["name"])},
        "policy_types": ["Egress"],
        "egress": rules,
    }


def service_monitor_spec(args: OAuth2ProxyArgs) -> dict[str, Any]:
    return {
        "selector": {"matchLabels": proxy_labels(args["name"])},
        "namespaceSelector": {"matchNames": [args["namespace"]]},
        "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s",
                       "scrapeTimeout": "10s"}],
    }


class OAuth2Proxy(pulumi.ComponentResource):
    """oauth2-proxy in front of Keycloak, behind the ingress gateway's ext_authz.

    Outputs:
      service: {name, namespace, host (FQDN), port (4180), metrics_port}
    """

    service: pulumi.Output[dict[str, Any]]

    def __init__(
        self, name: str, args: OAuth2ProxyArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("authproxy:oauth2_proxy:OAuth2Proxy", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        obj, ns = args["name"], args["namespace"]
        if args["settings"].secret_name != obj:
            raise ValueError("settings.secret_name must name this component's Secret")

        def meta(suffix: str = "") -> k8s.meta.v1.ObjectMetaArgsDict:
            return {"name": obj + suffix, "namespace": ns, "labels": object_labels(obj)}

        cookie = pulumi.Output.secret(args["cookie_secret"])
        client = pulumi.Output.secret(args["client_secret"])
        redis = pulumi.Output.secret(args["redis_password"])
        secret = k8s.core.v1.Secret(
            f"{name}-secret",
            metadata=meta(),
            type="Opaque",
            string_data={COOKIE_SECRET_KEY: cookie, CLIENT_SECRET_KEY: client,
                         REDIS_PASSWORD_KEY: redis},
            opts=child,
        )
        # The hash is of secrets, so Pulumi marks it secret; it reveals nothing (it includes 32
        # random bytes), and left secret it would hide the whole Deployment spec in diffs.
        checksum = pulumi.Output.unsecret(
            pulumi.Output.all(cookie, client, redis).apply(
                lambda v: secrets_checksum({COOKIE_SECRET_KEY: v[0], CLIENT_SECRET_KEY: v[1],
                                            REDIS_PASSWORD_KEY: v[2]})
            )
        )
        sa = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=meta(), automount_service_account_token=False, opts=child
        )
        needs: list[pulumi.Resource] = [secret, sa]
        pem = _keycloak_ca(args)
        if pem is not None:
            # A CA certificate is public: a ConfigMap, not a Secret.
            needs.append(k8s.core.v1.ConfigMap(
                f"{name}-keycloak-ca",
                metadata=meta("-keycloak-ca"),
                data={KEYCLOAK_CA_KEY: pem},
                opts=child,
            ))
        # patchForce: the stack is the authority for this Deployment, so its apply wins a
        # field conflict (e.g. `replicas` still owned by a removed HPA after autoscaling is
        # turned off). The HPA's count is never contested: see deployment_ignore_changes.
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata={**meta(), "annotations": {PATCH_FORCE_ANNOTATION: "true"}},
            spec=deployment_spec(args, checksum),
            opts=pulumi.ResourceOptions(parent=self, depends_on=needs,
                                        ignore_changes=deployment_ignore_changes(args)),
        )
        svc = k8s.core.v1.Service(f"{name}-service", metadata=meta(), spec=service_spec(args),
                                  opts=child)
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb", metadata=meta(), spec=pdb_spec(args), opts=child
        )
        if args["autoscaling"]["enabled"]:
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{name}-hpa", metadata=meta(), spec=hpa_spec(args),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[deployment]),
            )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-ingress", metadata=meta("-ingress"), spec=ingress_policy_spec(args), opts=child
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-egress", metadata=meta("-egress"), spec=egress_policy_spec(args), opts=child
        )
        if args["service_monitor"] and args["settings"].metrics_address:
            k8s.apiextensions.CustomResource(
                f"{name}-servicemonitor",
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata=meta(),
                spec=service_monitor_spec(args),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[svc]),
            )
        self.deployment = deployment
        # Derived from the Service's outputs, so whoever uses it (mesh config, routes) waits for it.
        self.service = pulumi.Output.all(svc.metadata.name, svc.metadata.namespace).apply(
            lambda v: {
                "name": v[0],
                "namespace": v[1],
                "host": service_fqdn(v[0], v[1]),
                "port": HTTP_PORT,
                "metrics_port": METRICS_PORT,
            }
        )
        self.register_outputs({"service": self.service})
