"""The session store: Redis through the dandydeveloper/redis-ha Helm chart, or an external Redis.

* `standalone`: one Redis server with persistence (dev). The chart still runs its sentinel sidecar,
  but oauth2-proxy talks to the server directly and writes need no replica.
* `ha`: N servers with replication, a sentinel next to each, a PodDisruptionBudget and hard
  anti-affinity (prod). oauth2-proxy asks the sentinels for the master.
* `external`: an existing (e.g. managed) Redis; no chart, no Secret here.

Auth is always on: the generated password lives in a Kubernetes Secret this component creates, and
the chart reads it from there (`existingSecret`), for the servers and the sentinels alike. The Helm
values never contain the password, only a hash of it in a pod annotation, so a password rotation
rolls the Redis pods. Why this chart: docs/session-store.md.

Pure functions decide the Helm values, the connection oauth2-proxy uses and the NetworkPolicy.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, NotRequired, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.common import COMMON_LABELS
from components.proxy_settings import RedisConnection

REDIS_PORT = 6379
SENTINEL_PORT = 26379
EXPORTER_PORT = 9121
AUTH_KEY = "auth"
"""Key of the password in the auth Secret (the chart's `authKey`)."""
CHART_APP_NAME = "redis-ha"
"""The chart's `nameOverride`: pinned so the pods' `app` label does not depend on how a mirror
packages the chart."""
REDIS_UID = 1000
"""The chart's default user; the official image's files do not need a particular uid."""
DEFAULT_DOWN_AFTER_SECONDS = 5
FAILOVER_TIMEOUT_MS = 180_000
"""The chart's `failover-timeout` (4.39.0 default), stated explicitly so the sentinels' whole
failover behaviour is in the rendered values (the local harness plays them from there)."""


class ChartRef(TypedDict):
    repository: str
    """https:// repository URL or oci:// registry path."""
    name: str
    version: str
    path: NotRequired[str | None]
    """A local chart archive or folder used instead of the repository (air-gapped machines)."""


class ImageRef(TypedDict):
    repository: str
    tag: str


class ExternalRedisArgs(TypedDict):
    url: str
    sentinel_urls: list[str]
    sentinel_master_name: str


class SessionStoreArgs(TypedDict):
    """Inputs of the session store (plain values, except the password)."""

    mode: Literal["standalone", "ha", "external"]
    namespace: str
    release_name: str
    """Helm release name and the chart's fullnameOverride (prefix of every object it creates)."""
    chart: ChartRef
    image: ImageRef
    exporter_image: ImageRef
    persistence_size: str
    storage_class: str | None
    master_name: str
    replicas: int
    """Redis servers in `ha` mode (each with a sentinel)."""
    metrics: bool
    service_monitor: bool
    """Create the exporter's ServiceMonitor (only when `metrics`)."""
    client_pod_labels: dict[str, str]
    """Labels of oauth2-proxy's pods: the only clients the Redis NetworkPolicy admits."""
    external: ExternalRedisArgs | None
    password: pulumi.Input[str]
    """Generated password (chart modes) or the external Redis's password."""
    down_after_seconds: NotRequired[int]
    """Sentinel `down-after-milliseconds` in seconds (default :data:`DEFAULT_DOWN_AFTER_SECONDS`)."""


def uses_chart(args: SessionStoreArgs) -> bool:
    return args["mode"] != "external"


def server_count(args: SessionStoreArgs) -> int:
    return args["replicas"] if args["mode"] == "ha" else 1


def auth_secret_name(args: SessionStoreArgs) -> str:
    return f"{args['release_name']}-auth"


def redis_pod_labels(args: SessionStoreArgs) -> dict[str, str]:
    """Labels the chart puts on every Redis pod (its StatefulSet selector)."""
    return {"app": CHART_APP_NAME, "release": args["release_name"]}


def service_host(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc"


def redis_connection(args: SessionStoreArgs) -> RedisConnection:
    """How oauth2-proxy connects: direct URL (standalone) or sentinels + master name (ha)."""
    mode = args["mode"]
    if mode == "external":
        ext = args["external"]
        if ext is None:
            raise ValueError("external mode needs the external Redis settings")
        if ext["sentinel_urls"]:
            return RedisConnection(
                mode="sentinel",
                url="",
                sentinel_urls=list(ext["sentinel_urls"]),
                master_name=ext["sentinel_master_name"],
                sentinel_password=False,
            )
        return RedisConnection(
            mode="standalone", url=ext["url"], sentinel_urls=[], master_name="",
            sentinel_password=False,
        )
    name, ns = args["release_name"], args["namespace"]
    if mode == "standalone":
        # The chart's headless Service resolves to the single server.
        return RedisConnection(
            mode="standalone",
            url=f"redis://{service_host(name, ns)}:{REDIS_PORT}",
            sentinel_urls=[],
            master_name="",
            sentinel_password=False,
        )
    # One stable ClusterIP Service per server ("announce"), each with its sentinel on 26379.
    return RedisConnection(
        mode="sentinel",
        url="",
        sentinel_urls=[
            f"redis://{service_host(f'{name}-announce-{i}', ns)}:{SENTINEL_PORT}"
            for i in range(server_count(args))
        ],
        master_name=args["master_name"],
        sentinel_password=True,
    )


def password_checksum(password: str) -> str:
    """Hash of the Redis password for the pod annotation that rolls Redis on rotation."""
    return hashlib.sha256(b"authproxy/redis-auth\0" + password.encode()).hexdigest()


def sentinel_config(args: SessionStoreArgs) -> dict[str, int]:
    """The chart's `sentinel.config`: how fast the sentinels declare the master down and fail
    over. `down-after-milliseconds` bounds how long every signed-in request fails when the master
    dies (chart default 10 s; authproxy's default 5 s, docs/reliability.md)."""
    down = args.get("down_after_seconds", DEFAULT_DOWN_AFTER_SECONDS)
    return {"down-after-milliseconds": down * 1000, "failover-timeout": FAILOVER_TIMEOUT_MS}


def helm_values(args: SessionStoreArgs, checksum: pulumi.Input[str] | str) -> dict[str, Any]:
    """Values for the redis-ha chart (keys checked against redis-ha 4.39.0's values.yaml)."""
    ha = args["mode"] == "ha"
    servers = server_count(args)
    secret = auth_secret_name(args)
    container_security = {
        "runAsUser": REDIS_UID,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,  # everything the chart writes lives under /data
        "seccompProfile": {"type": "RuntimeDefault"},
        "capabilities": {"drop": ["ALL"]},
    }
    persistent: dict[str, Any] = {"enabled": True, "size": args["persistence_size"]}
    if args["storage_class"]:
        persistent["storageClass"] = args["storage_class"]
    return {
        "fullnameOverride": args["release_name"],
        "nameOverride": CHART_APP_NAME,
        "image": {
            "repository": args["image"]["repository"],
            "tag": args["image"]["tag"],
            "pullPolicy": "IfNotPresent",
        },
        "replicas": servers,
        # Parallel, not the chart's OrderedReady: with OrderedReady the StatefulSet controller
        # never replaces a pod that is not Running and Ready, so after a failed upgrade (a bad
        # image) Helm's atomic rollback restores the template but not the broken pod, the
        # rollback times out too and Redis stays down (Kubernetes' "forced rollback" caveat).
        # With Parallel the controller replaces it. Updates still go one pod at a time; the
        # servers find their master through the announce Services, not through start order.
        "podManagementPolicy": "Parallel",
        # Auth always on, from the Secret this component creates (never inline).
        "auth": True,
        "existingSecret": secret,
        "authKey": AUTH_KEY,
        "sentinel": {
            "auth": True,
            "existingSecret": secret,
            "authKey": AUTH_KEY,
            # A majority of the sentinels must agree the master is down.
            "quorum": servers // 2 + 1,
            "config": sentinel_config(args),
        },
        "redis": {
            "masterGroupName": args["master_name"] or "authproxy",
            # One server cannot have a replica in sync; with replicas, refuse writes that no
            # replica would receive (the chart's default).
            "config": {"min-replicas-to-write": 1 if ha else 0},
            "podAnnotations": {"checksum/auth": checksum},
        },
        # No Istio sidecar. `extraLabels` (quoted by the chart) rather than `labels` (rendered
        # unquoted, so "false" would become a boolean and an invalid label value).
        "extraLabels": {"sidecar.istio.io/inject": "false"},
        "persistentVolume": persistent,
        "podDisruptionBudget": {"maxUnavailable": 1} if ha else {},
        "hardAntiAffinity": ha,
        "securityContext": {
            "runAsUser": REDIS_UID,
            "fsGroup": REDIS_UID,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containerSecurityContext": container_security,
        "serviceAccount": {"create": True, "automountToken": False},
        "haproxy": {"enabled": False},
        # This component writes its own NetworkPolicy (redis_network_policy).
        "networkPolicy": {"enabled": False},
        "exporter": {
            "enabled": args["metrics"],
            "image": args["exporter_image"]["repository"],
            "tag": args["exporter_image"]["tag"],
            "serviceMonitor": {"enabled": bool(args["metrics"] and args["service_monitor"])},
        },
    }


def redis_network_policy(args: SessionStoreArgs) -> k8s.networking.v1.NetworkPolicySpecArgsDict:
    """NetworkPolicy spec: Redis and its sentinels accept only oauth2-proxy and each other
    (replication, sentinel gossip); the exporter's port is open to scrapers when metrics are on."""
    ports: list[k8s.networking.v1.NetworkPolicyPortArgsDict] = [
        {"protocol": "TCP", "port": REDIS_PORT}, {"protocol": "TCP", "port": SENTINEL_PORT}]
    rules: list[k8s.networking.v1.NetworkPolicyIngressRuleArgsDict] = [
        {"from_": [{"pod_selector": {"match_labels": dict(args["client_pod_labels"])}}], "ports": ports},
        {"from_": [{"pod_selector": {"match_labels": redis_pod_labels(args)}}], "ports": ports},
    ]
    if args["metrics"]:
        # Prometheus's namespace is not known here; the exporter serves metrics only.
        rules.append({
            "from_": [{"namespace_selector": {}}],
            "ports": [{"protocol": "TCP", "port": EXPORTER_PORT}],
        })
    return {
        "pod_selector": {"match_labels": redis_pod_labels(args)},
        "policy_types": ["Ingress"],
        "ingress": rules,
    }


def release_chart_args(chart: ChartRef) -> dict[str, Any]:
    """`chart` / `repository_opts` for a Release from an https repository, an oci:// registry or
    a local chart archive/folder (``path``, which wins)."""
    if chart.get("path"):
        return {"chart": chart["path"]}
    repo = chart["repository"].rstrip("/")
    if repo.startswith("oci://"):
        return {"chart": f"{repo}/{chart['name']}"}
    return {
        "chart": chart["name"],
        "repository_opts": k8s.helm.v3.RepositoryOptsArgs(repo=repo),
    }


class SessionStore(pulumi.ComponentResource):
    """Redis for oauth2-proxy's sessions.

    Outputs:
      connection: how oauth2-proxy connects (plain; see :func:`redis_connection`)
      auth_secret_name: the Secret holding the password (chart modes; empty in external mode)
    """

    connection: pulumi.Output[dict[str, Any]]
    auth_secret_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: SessionStoreArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("authproxy:session_store:SessionStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ns = args["namespace"]
        labels = {
            "app.kubernetes.io/name": CHART_APP_NAME,
            "app.kubernetes.io/instance": args["release_name"],
            **COMMON_LABELS,
        }
        self.release: k8s.helm.v3.Release | None = None
        secret_name = ""
        if uses_chart(args):
            secret_name = auth_secret_name(args)
            password = pulumi.Output.secret(args["password"])
            secret = k8s.core.v1.Secret(
                f"{name}-auth",
                metadata={"name": secret_name, "namespace": ns, "labels": labels},
                type="Opaque",
                string_data={AUTH_KEY: password},
                opts=child,
            )
            # The hash of a 40-character random password cannot be reversed, so the annotation may
            # be plain; without unsecret Pulumi would mark all Helm values secret and hide them.
            checksum = pulumi.Output.unsecret(password.apply(password_checksum))
            self.release = k8s.helm.v3.Release(
                f"{name}-redis",
                name=args["release_name"],
                namespace=ns,
                version=args["chart"]["version"],
                values=helm_values(args, checksum),
                # Helm waits until every object of the release is ready (the StatefulSet's
                # pods, PVCs bound, Services); past `timeout` it fails and `atomic` uninstalls a
                # first install / rolls an upgrade back, and `cleanup_on_fail` deletes what a
                # failed upgrade created: nothing is left half-installed. kubernetes.skipAwait
                # and kubernetes.awaitTimeout change these (stack.skip_await_transform,
                # stack.await_transform).
                skip_await=False,
                atomic=True,
                cleanup_on_fail=True,
                timeout=600,
                max_history=10,
                **release_chart_args(args["chart"]),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[secret]),
            )
            k8s.networking.v1.NetworkPolicy(
                f"{name}-redis-ingress",
                metadata={"name": f"{args['release_name']}-ingress", "namespace": ns, "labels": labels},
                spec=redis_network_policy(args),
                opts=child,
            )
        self.connection = pulumi.Output.from_input(dict(redis_connection(args)))
        self.auth_secret_name = pulumi.Output.from_input(secret_name)
        self.register_outputs(
            {"connection": self.connection, "auth_secret_name": self.auth_secret_name}
        )
