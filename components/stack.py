"""The top-level component: composes secrets, identity, session store, oauth2-proxy, ingress and
authorization from the validated stack config."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import pulumi
import pulumi_kubernetes as k8s
from pulumi.resource_hooks import ErrorHook, ErrorHookArgs, ResourceHookBinding

from components.ambient import Ambient, AmbientArgs
from components.authz import Authz, AuthzArgs, ProviderArgs, mesh_config
from components.common import COMMON_LABELS, format_duration
from components.config import StackConfig, group_path
from components.identity import DemoUserSpec, Identity, IdentityArgs
from components.ingress import Ingress, IngressArgs
from components.istio_install import IstioInstall, IstioInstallArgs
from components.oauth2_proxy import (
    KEYCLOAK_CA_FILE,
    OAuth2Proxy,
    OAuth2ProxyArgs,
    RedisEgress,
    proxy_labels,
    service_fqdn,
)
from components.proxy_settings import HTTP_PORT as PROXY_PORT
from components.proxy_settings import (
    ProxySettings,
    RedisConnection,
    cookie_domain,
    whitelist_domain,
)
from components.secrets import Secrets
from components.session_store import (
    REDIS_PORT,
    SENTINEL_PORT,
    SessionStore,
    SessionStoreArgs,
    redis_connection,
    redis_pod_labels,
)


class StackSecrets(TypedDict, total=False):
    """Secret config values (Outputs marked secret); only the ones that are set."""

    keycloakAdminPassword: pulumi.Output[str]
    keycloakAdminClientSecret: pulumi.Output[str]
    externalRedisPassword: pulumi.Output[str]


class AuthProxyArgs(TypedDict):
    config: StackConfig
    secrets: StackSecrets


def identity_args(cfg: StackConfig, secrets: StackSecrets, client_secret: pulumi.Input[str]) -> IdentityArgs:
    """Map the stack config onto the identity component's arguments."""
    kc = cfg.keycloak
    admin_secret = (
        secrets["keycloakAdminPassword"]
        if kc.admin.auth == "password"
        else secrets["keycloakAdminClientSecret"]
    )
    app_urls = [a.url for a in cfg.apps]
    return IdentityArgs(
        keycloak_url=kc.url,
        realm=kc.realm,
        realm_mode=kc.realm_mode,
        manage_groups=kc.manage_groups,
        admin={
            "auth": kc.admin.auth,
            "realm": kc.admin.realm,
            "username": kc.admin.username,
            "client_id": kc.admin.client_id,
            "secret": admin_secret,
        },
        client_id=kc.client_id,
        client_secret=client_secret,
        redirect_uri=cfg.redirect_url,
        post_logout_redirect_uris=[*app_urls, f"https://{cfg.auth_hostname}/"],
        web_origins=[f"https://{cfg.auth_hostname}"],
        groups=list(cfg.groups),
        demo_users=[
            DemoUserSpec(
                username=u.username,
                email=u.email or f"{u.username}@{cfg.domain}",
                first_name=u.first_name,
                last_name=u.last_name or u.username.capitalize(),
                groups=[group_path(g) for g in u.groups],
            )
            for u in kc.demo_users
        ],
        demo_password_rotation=cfg.rotation.client_secret,
        access_token_lifespan=cfg.session.access_token_lifespan,
        sso_session_idle_timeout=cfg.session.sso_session_idle_timeout,
        sso_session_max_lifespan=cfg.session.sso_session_max_lifespan,
        ca_certificate=kc.ca_certificate,
        client_timeout=kc.client_timeout,
    )


SKIP_AWAIT_ANNOTATION = "pulumi.com/skipAwait"
DELETION_POLICY_ANNOTATION = "pulumi.com/deletionPropagationPolicy"
HELM_RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"


def skip_await_transform(
    args: pulumi.ResourceTransformArgs,
) -> pulumi.ResourceTransformResult | None:
    """Config `kubernetes.skipAwait`: pulumi-kubernetes does not wait for readiness.

    Kubernetes objects get the `pulumi.com/skipAwait: "true"` annotation (pulumi-kubernetes' own
    switch, read per object), Helm releases `skipAwait: true` and `atomic: false` (Helm's atomic
    always waits). Everything else is unchanged.
    """
    if not args.custom or not args.type_.startswith("kubernetes:"):
        return None
    props: dict[str, Any] = dict(args.props)
    if args.type_ == HELM_RELEASE_TYPE:
        # Helm turns `atomic` into a wait (and a rollback when it times out), so skipping the
        # wait means giving up atomic installs too.
        props["skipAwait"] = True
        props["atomic"] = False
        return pulumi.ResourceTransformResult(props=props, opts=args.opts)
    metadata = props.get("metadata")
    if not isinstance(metadata, dict):
        return None
    annotations = metadata.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        return None
    props["metadata"] = {
        **metadata,
        # Foreground deletion waits for the garbage collector to remove dependents (a
        # Deployment's ReplicaSets): background deletion does not wait for that controller either.
        "annotations": {**(annotations or {}), SKIP_AWAIT_ANNOTATION: "true",
                        DELETION_POLICY_ANNOTATION: "background"},
    }
    return pulumi.ResourceTransformResult(props=props, opts=args.opts)


def wait_for(resources: list[pulumi.Resource]) -> pulumi.ResourceTransformation:
    """A transformation for a component: every custom resource under it waits for ``resources``
    (``depends_on`` on a component itself does not hold its children back). An SDK-side
    transformation, so the dependency is in the registration itself (and visible under mocks)."""

    def transformation(
        args: pulumi.ResourceTransformationArgs,
    ) -> pulumi.ResourceTransformationResult | None:
        if not isinstance(args.resource, pulumi.CustomResource):
            return None
        opts = pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(depends_on=resources))
        return pulumi.ResourceTransformationResult(props=args.props, opts=opts)

    return transformation


def release_not_ready_message(
    errors: Sequence[str], namespace: str, release: str, timeout_seconds: int
) -> str | None:
    """What a Helm release's failure leaves out when Helm's wait timed out.

    pulumi-kubernetes passes on Helm's "context deadline exceeded" (upstream
    pulumi/pulumi-kubernetes#4389): it names neither what Helm waited for nor where the reason
    is. This says what was waited for, what `atomic` did, where Kubernetes recorded why the pods
    did not become ready, and which key allows a longer wait. None for any other failure.
    """
    latest = errors[0] if errors else ""
    if "context deadline exceeded" not in latest:
        return None
    if "uninstalled due to atomic" in latest:
        outcome = ("Helm uninstalled it (atomic): nothing of it is left but its pods' "
                   "PersistentVolumeClaims, which the next install reuses")
    elif "rolled back due to atomic" in latest:
        outcome = "Helm rolled it back (atomic) to the last revision that worked, which still runs"
    else:
        outcome = (f"Helm could not undo it; `helm -n {namespace} history {release}` shows its "
                   "revisions")
    return (
        f"Helm release {namespace}/{release} was not ready within "
        f"{format_duration(timeout_seconds)}: Helm waits until every pod of its StatefulSets and "
        "Deployments is ready, its PersistentVolumeClaims are bound and its Services exist. "
        f"{outcome}. Why a pod did not become ready is in the namespace's events: "
        f"`kubectl -n {namespace} get events --field-selector type=Warning` (an image that cannot "
        "be pulled, no node with room, a claim that does not bind, a failing probe). Fix that, or "
        "allow a longer wait (`pulumi config set --path authproxy:kubernetes.awaitTimeout 20m`), "
        "and run `pulumi up` again."
    )


def await_transform(
    timeout_seconds: int,
) -> Callable[[pulumi.ResourceTransformArgs], pulumi.ResourceTransformResult | None]:
    """Config `kubernetes.awaitTimeout` (skipAwait off): how long pulumi-kubernetes waits for
    each object, as users set it on one resource with `customTimeouts`.

    Kubernetes objects get `customTimeouts` create/update/delete (the provider's readiness
    wait, e.g. a Deployment's rollout, and its wait for deletion); Helm releases also get
    Helm's own `timeout` (seconds), which bounds Helm's wait and its `atomic` rollback, and an
    error hook that says why a release that timed out failed (:func:`release_not_ready_message`).
    """
    timeout = f"{timeout_seconds}s"
    timeouts = pulumi.CustomTimeouts(create=timeout, update=timeout, delete=timeout)

    def explain(args: ErrorHookArgs) -> bool:
        inputs = args.new_inputs or args.old_inputs or {}
        message = release_not_ready_message(
            args.errors, str(inputs.get("namespace", "")), str(inputs.get("name", "")),
            timeout_seconds)
        if message:
            pulumi.log.error(message)
        return False  # never retry: the same wait would time out again

    hooks = ResourceHookBinding(on_error=[ErrorHook("authproxy-release-not-ready", explain)])

    def transform(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
        if not args.custom or not args.type_.startswith("kubernetes:"):
            return None
        props: dict[str, Any] = dict(args.props)
        extra = pulumi.ResourceOptions(custom_timeouts=timeouts)
        if args.type_ == HELM_RELEASE_TYPE:
            props["timeout"] = timeout_seconds
            extra.hooks = hooks
        opts = pulumi.ResourceOptions.merge(args.opts, extra)
        return pulumi.ResourceTransformResult(props=props, opts=opts)

    return transform


PROXY_NAME = "oauth2-proxy"
"""Name of oauth2-proxy's Deployment, Service, Secret and ServiceAccount."""
REDIS_RELEASE = "authproxy-redis"
"""Helm release name of the session store (prefix of the chart's objects)."""


def namespace_labels() -> dict[str, str]:
    """Labels of the namespace that holds oauth2-proxy and Redis.

    No Istio sidecars there (`istio-injection: disabled`, also set per pod): the redis-ha init
    container and sentinels talk to their peers before a sidecar would be ready, oauth2-proxy's
    egress NetworkPolicy would need istiod's address, and nothing in the mesh authorizes against
    these pods. NetworkPolicies carry the isolation instead (docs/session-store.md).
    """
    return {
        "istio-injection": "disabled",
        **COMMON_LABELS,
    }


def session_store_args(cfg: StackConfig, password: pulumi.Input[str]) -> SessionStoreArgs:
    """Map the stack config onto the session store's arguments.

    ``password``: the generated Redis password, or `externalRedisPassword` in external mode.
    """
    r = cfg.redis
    ext = r.external
    return SessionStoreArgs(
        mode=r.mode,
        namespace=cfg.namespace,
        release_name=REDIS_RELEASE,
        chart={"repository": r.chart.repository, "name": r.chart.name, "version": r.chart.version,
               "path": r.chart_path},
        image={"repository": r.image.repository, "tag": r.image.tag},
        exporter_image={"repository": r.exporter_image.repository, "tag": r.exporter_image.tag},
        persistence_size=r.persistence.size,
        storage_class=r.persistence.storage_class,
        master_name=r.sentinel.master_name,
        replicas=r.sentinel.replicas,
        metrics=r.metrics,
        service_monitor=cfg.proxy.service_monitor,
        client_pod_labels=proxy_labels(PROXY_NAME),
        external=(
            {
                "url": ext.url,
                "sentinel_urls": list(ext.sentinel_urls),
                "sentinel_master_name": ext.sentinel_master_name or "",
            }
            if r.mode == "external" and ext is not None
            else None
        ),
        password=password,
        down_after_seconds=r.sentinel.down_after,
    )


def proxy_settings(cfg: StackConfig, redis: RedisConnection) -> ProxySettings:
    """oauth2-proxy's settings from the stack config (the local harness builds its own from the
    same config with a local Redis)."""
    s = cfg.session
    return ProxySettings(
        issuer_url=cfg.keycloak.issuer,
        client_id=cfg.keycloak.client_id,
        redirect_url=cfg.redirect_url,
        cookie_domains=(cookie_domain(cfg.domain),),
        whitelist_domains=(whitelist_domain(cfg.domain),),
        redis=redis,
        cookie_expire=s.cookie_expire,
        cookie_refresh=s.cookie_refresh,
        email_domains=cfg.proxy.email_domains,
        cookie_name=s.cookie_name,
        api_routes=tuple(p for a in cfg.apps for p in a.api_paths),
        go_max_procs=cfg.proxy.go_max_procs,
        trusted_proxy_ips=cfg.proxy.trusted_proxy_ips,
        secret_name=PROXY_NAME,
        provider_ca_file=KEYCLOAK_CA_FILE if cfg.keycloak.ca_certificate else None,
    )


def oauth2_proxy_args(
    cfg: StackConfig,
    store: SessionStoreArgs,
    cookie_secret: pulumi.Input[str],
    client_secret: pulumi.Input[str],
    redis_password: pulumi.Input[str],
) -> OAuth2ProxyArgs:
    """Map the stack config (and the session store's connection) onto oauth2-proxy's arguments."""
    px = cfg.proxy
    conn = redis_connection(store)
    kc = cfg.keycloak
    redis_egress: RedisEgress
    if cfg.redis.mode == "external":
        ext = cfg.redis.external
        redis_egress = {"pod_labels": None, "ports": list(ext.ports) if ext else []}
    else:
        ports = [REDIS_PORT, SENTINEL_PORT] if cfg.redis.mode == "ha" else [REDIS_PORT]
        redis_egress = {"pod_labels": redis_pod_labels(store), "ports": ports}
    return OAuth2ProxyArgs(
        name=PROXY_NAME,
        namespace=cfg.namespace,
        image=px.image.ref,
        settings=proxy_settings(cfg, conn),
        replicas=px.replicas,
        autoscaling={
            "enabled": px.autoscaling.enabled,
            "min_replicas": px.autoscaling.min_replicas,
            "max_replicas": px.autoscaling.max_replicas,
            "target_cpu_utilization": px.autoscaling.target_cpu_utilization,
        },
        pdb_min_available=cfg.pdb_min_available,
        resources={
            "requests": {"cpu": px.resources.requests.cpu, "memory": px.resources.requests.memory},
            "limits": {"cpu": px.resources.limits.cpu, "memory": px.resources.limits.memory},
        },
        service_monitor=px.service_monitor,
        gateway={
            "namespace": cfg.istio.gateway.namespace,
            "selector": cfg.gateway_pod_labels,
        },
        keycloak_in_cluster=(
            {
                "namespace": kc.in_cluster.namespace,
                "pod_labels": dict(kc.in_cluster.pod_labels),
                "port": kc.in_cluster.port,
            }
            if kc.in_cluster
            else None
        ),
        keycloak_port=kc.port,
        redis_egress=redis_egress,
        cookie_secret=cookie_secret,
        client_secret=client_secret,
        redis_password=redis_password,
        lifecycle={
            "drain_seconds": px.lifecycle.drain_delay,
            "grace_seconds": px.lifecycle.termination_grace_period,
            "min_ready_seconds": px.lifecycle.min_ready,
        },
        keycloak_ca_certificate=kc.ca_certificate,
    )


def provider_args(cfg: StackConfig) -> ProviderArgs:
    """oauth2-proxy's Service as the ext_authz provider."""
    return ProviderArgs(
        name=cfg.istio.provider_name,
        service_host=service_fqdn(PROXY_NAME, cfg.namespace),
        port=PROXY_PORT,
        timeout_seconds=cfg.istio.ext_authz_timeout,
    )


def ingress_args(cfg: StackConfig) -> IngressArgs:
    """Map the stack config onto the ingress component's arguments."""
    gw = cfg.istio.gateway
    cm = cfg.istio.cert_manager
    ga = cfg.istio.gateway_api
    return IngressArgs(
        api=cfg.istio.ingress_api,
        gateway={
            "name": gw.name,
            "namespace": gw.namespace,
            "selector": cfg.gateway_pod_labels,
            "tls_credential_name": gw.tls_credential_name,
            "hosts": list(cfg.gateway_hosts),
        },
        gateway_api={
            "class_name": ga.class_name,
            "create": ga.create,
            "http_listener": ga.http_listener,
            "https_listener": ga.https_listener,
        },
        auth_host=cfg.auth_hostname,
        proxy={"host": service_fqdn(PROXY_NAME, cfg.namespace), "port": PROXY_PORT,
               "name": PROXY_NAME, "namespace": cfg.namespace},
        apps=[
            {
                "name": a.name,
                "host": a.host,
                "backend": {
                    "host": service_fqdn(a.service.name, a.service.namespace),
                    "port": a.service.port,
                    "name": a.service.name,
                    "namespace": a.service.namespace,
                },
                "public_paths": list(a.public_paths),
                "api_clients": a.api_clients,
                "strip_session_cookies": a.strip_session_cookies,
            }
            for a in cfg.apps
        ],
        certificate=(
            {"issuer": cm.issuer, "issuer_kind": cm.issuer_kind} if cm.issuer else None
        ),
    )


def authz_args(cfg: StackConfig) -> AuthzArgs:
    """Map the stack config onto the authorization component's arguments."""
    gw = cfg.istio.gateway
    kc = cfg.keycloak
    return AuthzArgs(
        mode=cfg.istio.ext_authz_mode,
        provider=provider_args(cfg),
        gateway={
            "name": gw.name,
            "namespace": gw.namespace,
            "api": cfg.istio.ingress_api,
            "selector": cfg.gateway_pod_labels,
            "http_ports": list(gw.http_target_ports),
            "https_ports": list(gw.https_target_ports),
            "principal": cfg.gateway_principal,
            "hsts": gw.hsts.value,
            "underscore_headers": gw.underscore_headers,
        },
        auth_host=cfg.auth_hostname,
        session_cookie_name=cfg.session.cookie_name,
        jwt={"issuer": kc.issuer, "jwks_uri": kc.jwks_uri, "audiences": [kc.client_id]},
        client_id=kc.client_id,
        traffic={
            "check_retries": cfg.istio.ext_authz_retries,
            "outlier": {
                "consecutive_errors": cfg.istio.outlier_detection.consecutive_errors,
                "base_ejection_seconds": cfg.istio.outlier_detection.base_ejection_time,
            },
        },
        apps=[
            {
                "name": a.name,
                "host": a.host,
                "namespace": a.service.namespace,
                "selector": a.selector_labels,
                "groups": list(a.group_paths),
                "public_paths": list(a.public_paths),
                "api_clients": a.api_clients,
                "strip_session_cookies": a.strip_session_cookies,
                "authorize_at": a.authorize_at,
                "dataplane": a.dataplane,
                "service": a.service.name,
                "service_host": service_fqdn(a.service.name, a.service.namespace),
            }
            for a in cfg.apps
        ],
    )


def ambient_args(cfg: StackConfig, policies: list[pulumi.Resource]) -> AmbientArgs:
    """The ambient apps' waypoints, Service labels and L4 policies; ``policies``: what the
    Services wait for before they switch to their waypoints."""
    return AmbientArgs(
        prefix=cfg.istio.gateway.name,
        policies=policies,
        apps=[
            {
                "name": a.name,
                "namespace": a.service.namespace,
                "service": a.service.name,
                "selector": a.selector_labels,
                "waypoint": {
                    "name": a.waypoint_ref.name,
                    "namespace": a.waypoint_namespace,
                    "create": a.waypoint_ref.create,
                    "service_account": a.waypoint_ref.identity_account,
                },
            }
            for a in cfg.ambient_apps
        ],
    )


def istio_install_args(cfg: StackConfig) -> IstioInstallArgs:
    """The optional Istio install; istiod gets the same mesh config the stack exports."""
    inst = cfg.istio.install
    return IstioInstallArgs(
        repository=inst.repository,
        version=inst.version,
        mesh_config=mesh_config(cfg.istio.ext_authz_mode, provider_args(cfg)),
        gateway_namespace=cfg.istio.gateway.namespace,
        gateway_labels=dict(cfg.istio.gateway.selector),
        jwks_extra_root_ca=cfg.keycloak.ca_certificate,
    )


class AuthProxy(pulumi.ComponentResource):
    """The whole authenticated ingress.

    Outputs:
      issuer_url, client_id, auth_host, protected_urls (list), demo_user_passwords (secret),
      namespace (of oauth2-proxy and Redis),
      proxy_service: {name, namespace, host (FQDN), port (4180), metrics_port} of oauth2-proxy.
      mesh_config: YAML to merge into istiod's meshConfig (ext_authz provider, path normalization).
      gateway: "<namespace>/<name>" of the Istio Gateway.
    """

    issuer_url: pulumi.Output[str]
    client_id: pulumi.Output[str]
    auth_host: pulumi.Output[str]
    protected_urls: pulumi.Output[list[str]]
    demo_user_passwords: pulumi.Output[dict[str, str]]
    namespace: pulumi.Output[str]
    proxy_service: pulumi.Output[dict[str, object]]
    mesh_config: pulumi.Output[str]
    gateway: pulumi.Output[str]

    def __init__(
        self, name: str, args: AuthProxyArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        cfg = args["config"]
        # Transforms on a component apply to all its descendants.
        transform = (
            skip_await_transform
            if cfg.kubernetes.skip_await
            else await_transform(cfg.kubernetes.await_timeout)
        )
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(transforms=[transform]))
        super().__init__("authproxy:stack:AuthProxy", name, None, opts)

        def child(role: str, depends_on: list[pulumi.Resource] | None = None) -> tuple[str, pulumi.ResourceOptions]:
            """A child's name, from this instance's (a second AuthProxy never collides), and its
            options. The alias is the fixed name children had before (``secrets``, ...): a stack
            made then moves its resources to the new names on the next `pulumi up` instead of
            replacing them (the children of the children follow their parent's alias)."""
            return f"{name}-{role}", pulumi.ResourceOptions(
                parent=self, depends_on=depends_on, aliases=[pulumi.Alias(name=role)])

        n, o = child("secrets")
        secrets = Secrets(
            n,
            {
                "cookie_secret_rotation": cfg.rotation.cookie_secret,
                "client_secret_rotation": cfg.rotation.client_secret,
                "redis_password_rotation": cfg.rotation.redis_password,
            },
            opts=o,
        )
        n, o = child("identity")
        identity = Identity(n, identity_args(cfg, args["secrets"], secrets.client_secret), opts=o)
        self.secrets = secrets
        self.identity = identity

        # oauth2-proxy and Redis share one namespace.
        ns_name, ns_opts = child("namespace")
        namespace = k8s.core.v1.Namespace(
            ns_name,
            metadata={"name": cfg.namespace, "labels": namespace_labels()},
            opts=ns_opts,
        )
        redis_password = (
            args["secrets"]["externalRedisPassword"]
            if cfg.redis.mode == "external"
            else secrets.redis_password
        )
        store_args = session_store_args(cfg, redis_password)
        n, o = child("session-store", [namespace])
        session_store = SessionStore(n, store_args, opts=o)
        n, o = child("oauth2-proxy", [namespace, identity, session_store])
        proxy = OAuth2Proxy(
            n,
            oauth2_proxy_args(
                cfg, store_args, secrets.cookie_secret, secrets.client_secret, redis_password
            ),
            opts=o,
        )
        self.session_store = session_store
        self.oauth2_proxy = proxy

        # Istio: optional install (dev), then the gateway, routes and policies.
        istio_ready: list[pulumi.Resource] = []
        if cfg.istio.install.enabled:
            n, o = child("istio")
            install = IstioInstall(n, istio_install_args(cfg), opts=o)
            istio_ready = install.ready
        n, o = child("authz", istio_ready)
        authz = Authz(n, authz_args(cfg), opts=o)
        n, ingress_opts = child("ingress", istio_ready)
        if cfg.ambient_apps:
            # Ambient apps: their Services switch to the waypoint only once the policies the
            # waypoint and ztunnel enforce exist, and the gateway routes to them after that (a
            # route before the Service label would reach the pods without the waypoint).
            an, ao = child("ambient")
            ambient = Ambient(an, ambient_args(cfg, [authz]), opts=ao)
            self.ambient = ambient
            ingress_opts = pulumi.ResourceOptions.merge(
                ingress_opts, pulumi.ResourceOptions(transformations=[wait_for([ambient])]))
        ingress = Ingress(n, ingress_args(cfg), opts=ingress_opts)
        self.ingress = ingress
        self.authz = authz
        self.mesh_config = authz.mesh_config
        self.gateway = ingress.gateway

        self.issuer_url = identity.issuer_url
        self.client_id = identity.client_id
        self.auth_host = pulumi.Output.from_input(cfg.auth_hostname)
        self.protected_urls = pulumi.Output.from_input([a.url for a in cfg.apps])
        self.demo_user_passwords = identity.demo_user_passwords
        self.namespace = namespace.metadata.name
        self.proxy_service = proxy.service
        self.register_outputs(
            {
                "issuer_url": self.issuer_url,
                "client_id": self.client_id,
                "auth_host": self.auth_host,
                "protected_urls": self.protected_urls,
                "demo_user_passwords": self.demo_user_passwords,
                "namespace": self.namespace,
                "proxy_service": self.proxy_service,
                "mesh_config": self.mesh_config,
                "gateway": self.gateway,
            }
        )
