"""The built-in preflight checks: pure functions over the stack config and what was read.

Each is registered in :data:`preflight.core.CHECKS` under the name docs/preflight.md lists it by.
Messages name the object, what is wrong, and the fix (a config key, a command), on one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import yaml

from components.authz import PATH_NORMALIZATION, extension_provider
from components.config import GATEWAY_NAME_LABEL, NAMESPACE, App, StackConfig
from components.istio_install import ISTIO_NAMESPACE, ISTIOD_RELEASE
from components.stack import provider_args
from preflight.core import (
    Failure,
    Get,
    HttpGet,
    List,
    Query,
    Snapshot,
    check,
    labels_of,
)

K = NAMESPACE + ":"
MIN_ISTIO = (1, 22)
"""Oldest Istio whose APIs the stack uses (targetRefs on gateway policies came with 1.22)."""
SIDECAR = "istio-proxy"
"""The container Istio injects (a native sidecar: an init container with restartPolicy Always)."""
DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)


def _version(text: str) -> tuple[int, int, int] | None:
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def _dotted(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in v)


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


PodT = TypeVar("PodT", bound=Mapping[str, Any])


def live_pods(pods: Iterable[PodT]) -> list[PodT]:
    """Pods that are or will be running (not finished, not being deleted)."""
    return [p for p in pods
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and not (p.get("metadata") or {}).get("deletionTimestamp")]


def has_sidecar(pod: Mapping[str, Any]) -> bool:
    """An injected ``istio-proxy`` container (or native sidecar: an init container that always
    restarts)."""
    spec = pod.get("spec") or {}
    if any(c.get("name") == SIDECAR for c in spec.get("containers") or []):
        return True
    return any(c.get("name") == SIDECAR and c.get("restartPolicy") == "Always"
               for c in spec.get("initContainers") or [])


# --------------------------------------------------------------------------------------------
# Istio control plane
# --------------------------------------------------------------------------------------------


def istiod_query(cfg: StackConfig) -> List:
    labels = {"app": "istiod"}
    if cfg.preflight.istio_revision:
        labels["istio.io/rev"] = cfg.preflight.istio_revision
    return List("apps/v1", "Deployment", cfg.preflight.istio_namespace, labels_of(labels))


def istiod(cfg: StackConfig, snap: Snapshot) -> tuple[dict[str, Any] | None, str]:
    """The istiod Deployment the stack's workloads use, or (None, why not)."""
    q = istiod_query(cfg)
    found = snap.objs(q)
    ns = cfg.preflight.istio_namespace
    if not found:
        rev = f" of revision {cfg.preflight.istio_revision!r}" if cfg.preflight.istio_revision else ""
        return None, (
            f"no istiod{rev} in namespace {ns} (Deployment labelled app=istiod): install Istio "
            f"{_dotted(MIN_ISTIO)}+ first, or set {K}preflight.istioNamespace / "
            f"{K}preflight.istioRevision to where it runs"
        )
    if len(found) == 1 or cfg.preflight.istio_revision:
        return found[0], ""
    default = [d for d in found if _labels(d).get("istio.io/rev", "default") == "default"]
    if len(default) == 1:
        return default[0], ""
    revs = sorted(_labels(d).get("istio.io/rev", "default") for d in found)
    return None, (
        f"{len(found)} istiod revisions in {ns} ({', '.join(revs)}) and none is the default: set "
        f"{K}preflight.istioRevision to the one the gateway and apps use"
    )


def revision_of(deployment: Mapping[str, Any]) -> str:
    rev = _labels(deployment).get("istio.io/rev", "default")
    return rev or "default"


def istio_version(deployment: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """From the chart's version label, else the discovery container's image tag."""
    labels = _labels(deployment)
    for key in ("app.kubernetes.io/version", "helm.sh/chart"):
        v = _version(labels.get(key, ""))
        if v:
            return v
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers") or []
    for c in containers:
        image = str(c.get("image", ""))
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        v = _version(tag)
        if v:
            return v
    return None


def _istio_reads(cfg: StackConfig, _snap: Snapshot) -> list[Query]:
    return [istiod_query(cfg)] if not cfg.istio.install.enabled else [
        List("apps/v1", "Deployment", ISTIO_NAMESPACE, labels_of({"app": "istiod"}))]


@check("istio-control-plane", "istiod runs, in a version the stack supports (1.22+), and is not "
       "installed twice", _istio_reads)
def istio_control_plane(cfg: StackConfig, snap: Snapshot) -> Iterator[Failure]:
    name = "istio-control-plane"
    if cfg.istio.install.enabled:
        # The stack installs Istio (throwaway clusters): any istiod not from its own Helm release
        # is somebody else's mesh, which the install would break.
        for dep in snap.objs(List("apps/v1", "Deployment", ISTIO_NAMESPACE,
                                  labels_of({"app": "istiod"}))):
            notes = _annotations(dep)
            if notes.get("meta.helm.sh/release-name") != ISTIOD_RELEASE:
                yield Failure(name, (
                    f"Istio already runs in this cluster (Deployment {ISTIO_NAMESPACE}/{_name(dep)}, "
                    f"not installed by this stack's Helm release {ISTIOD_RELEASE!r}); set "
                    f"{K}istio.install.enabled false to use it"))
        return
    d, why = istiod(cfg, snap)
    if d is None:
        yield Failure(name, why)
        return
    v = istio_version(d)
    if v is None:
        yield Failure(name, (
            f"cannot tell the Istio version of Deployment {cfg.preflight.istio_namespace}/"
            f"{_name(d)} (no app.kubernetes.io/version label, no version in its image tag): label "
            f"it with its version, or skip this check with {K}preflight.skip"))
    elif v[:2] < MIN_ISTIO:
        yield Failure(name, (
            f"istiod runs Istio {_dotted(v)}; the stack needs {_dotted(MIN_ISTIO)} or newer: "
            "upgrade Istio"))


def mesh_configmap_name(cfg: StackConfig, snap: Snapshot) -> str | None:
    d, _ = istiod(cfg, snap)
    if d is None:
        return None
    rev = cfg.preflight.istio_revision or revision_of(d)
    return "istio" if rev == "default" else f"istio-{rev}"


def _mesh_reads(cfg: StackConfig, snap: Snapshot) -> list[Query]:
    if cfg.istio.install.enabled or cfg.istio.ext_authz_mode != "extension-provider":
        return []
    reads: list[Query] = [istiod_query(cfg)]
    cm = mesh_configmap_name(cfg, snap)
    if cm:
        reads.append(Get("v1", "ConfigMap", cm, cfg.preflight.istio_namespace))
    return reads


def _norm(value: Any) -> Any:
    """Mesh config values as istiod reads them: lists as sets, numbers and strings alike."""
    if isinstance(value, Mapping):
        return {str(k): _norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return sorted(str(_norm(v)) for v in value)
    if isinstance(value, bool):
        return value
    return str(value)


def provider_differences(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Setting names of the extension provider entry where istiod's differs from the stack's."""
    f = found.get("envoyExtAuthzHttp")
    w = wanted["envoyExtAuthzHttp"]
    if not isinstance(f, Mapping):
        return ["envoyExtAuthzHttp"]

    def same(k: str) -> bool:
        # An unset field is Istio's default (false, empty): equal to the stack's falsy value.
        if k not in f and not w.get(k):
            return True
        return bool(_norm(f.get(k)) == _norm(w.get(k)))

    return sorted(k for k in set(f) | set(w) if not same(k))


@check("istio-mesh-config", "istiod's mesh config registers the stack's ext_authz provider "
       "exactly, and the path normalization the exemptions rely on (extension-provider mode)",
       _mesh_reads)
def istio_mesh_config(cfg: StackConfig, snap: Snapshot) -> Iterator[Failure]:
    """Without the provider, istiod turns the gateway's CUSTOM policy into deny-all: every host
    of the shared gateway would be down. So `up` refuses; a preview warns (its output
    `meshConfig` is what to merge)."""
    if not _mesh_reads(cfg, snap):
        return
    name = "istio-mesh-config"
    cm_name = mesh_configmap_name(cfg, snap)
    if cm_name is None:
        return  # no istiod: istio-control-plane says so
    ns = cfg.preflight.istio_namespace
    fix = ("merge the stack's meshConfig into istiod's first (shown by `pulumi preview`, or "
           "`python -m preflight.meshconfig`; docs/deploy.md#mesh-config), or set "
           f"{K}istio.extAuthzMode envoy-filter")
    cm = snap.obj(Get("v1", "ConfigMap", cm_name, ns))
    if cm is None:
        yield Failure(name, f"istiod's mesh config ConfigMap {ns}/{cm_name} does not exist: {fix}",
                      up_only=True)
        return
    try:
        mesh = yaml.safe_load((cm.get("data") or {}).get("mesh") or "") or {}
    except yaml.YAMLError:
        yield Failure(name, f"ConfigMap {ns}/{cm_name} key `mesh` is not YAML: repair it")
        return
    if not isinstance(mesh, Mapping):
        yield Failure(name, f"ConfigMap {ns}/{cm_name} key `mesh` is not a mapping: repair it")
        return
    wanted = extension_provider(provider_args(cfg))
    providers = [p for p in mesh.get("extensionProviders") or []
                 if isinstance(p, Mapping) and p.get("name") == wanted["name"]]
    if not providers:
        yield Failure(name, (
            f"istiod's mesh config ({ns}/{cm_name}) has no extension provider {wanted['name']!r}, "
            f"so the gateway's CUSTOM policy would deny every request of every host: {fix}"),
            up_only=True)
    else:
        diff = provider_differences(providers[0], wanted)
        if diff:
            yield Failure(name, (
                f"istiod's extension provider {wanted['name']!r} ({ns}/{cm_name}) differs from the "
                f"stack's in {', '.join(diff)}: merge the stack's meshConfig again "
                "(docs/deploy.md#mesh-config)"), up_only=True)
    norm = ((mesh.get("pathNormalization") or {}).get("normalization")) or "BASE"
    if norm != PATH_NORMALIZATION:
        yield Failure(name, (
            f"istiod's pathNormalization is {norm} ({ns}/{cm_name}); the public-path exemptions "
            f"need {PATH_NORMALIZATION} (it applies to every workload of the mesh): merge the "
            "stack's meshConfig (docs/deploy.md#mesh-config)"), up_only=True)


# --------------------------------------------------------------------------------------------
# Ingress gateway
# --------------------------------------------------------------------------------------------


def _gateway_reads(cfg: StackConfig, _snap: Snapshot) -> list[Query]:
    gw = cfg.istio.gateway
    ga = cfg.istio.gateway_api
    if cfg.istio.install.enabled:
        return []
    if cfg.istio.ingress_api == "istio":
        return [List("v1", "Pod", gw.namespace, labels_of(gw.selector))]
    if ga.create:
        return [Get("gateway.networking.k8s.io/v1", "GatewayClass", ga.class_name)]
    return [Get("gateway.networking.k8s.io/v1", "Gateway", gw.name, gw.namespace),
            List("v1", "Pod", gw.namespace, labels_of({GATEWAY_NAME_LABEL: gw.name}))]


@check("gateway", "the ingress gateway the stack attaches to exists: gateway pods for "
       "istio.gateway.selector, or the Gateway API class / Gateway and its pods", _gateway_reads)
def gateway(cfg: StackConfig, snap: Snapshot) -> Iterator[Failure]:
    name = "gateway"
    gw = cfg.istio.gateway
    ga = cfg.istio.gateway_api
    if cfg.istio.install.enabled:
        return
    if cfg.istio.ingress_api == "gateway-api" and ga.create:
        q = Get("gateway.networking.k8s.io/v1", "GatewayClass", ga.class_name)
        if snap.state(q) == "unserved":
            yield Failure(name, (
                "the Gateway API CRDs are not installed (no gateway.networking.k8s.io/v1 API): "
                "install the standard channel, or use "
                f"{K}istio.ingressApi istio"))
        elif snap.obj(q) is None:
            yield Failure(name, (
                f"GatewayClass {ga.class_name!r} does not exist: set "
                f"{K}istio.gatewayApi.className to istiod's class (`istio`)"))
        return
    if cfg.istio.ingress_api == "gateway-api":
        q = Get("gateway.networking.k8s.io/v1", "Gateway", gw.name, gw.namespace)
        obj = snap.obj(q)
        if obj is None:
            yield Failure(name, (
                f"Gateway {gw.namespace}/{gw.name} does not exist "
                f"({K}istio.gatewayApi.create is false): create it, or set "
                f"{K}istio.gatewayApi.create true"))
            return
        listeners = {str(li.get("name")) for li in (obj.get("spec") or {}).get("listeners") or []}
        missing = [li for li in (ga.http_listener, ga.https_listener) if li not in listeners]
        if missing:
            yield Failure(name, (
                f"Gateway {gw.namespace}/{gw.name} has no listener {', '.join(missing)} (it has "
                f"{sorted(listeners)}): set {K}istio.gatewayApi.httpListener/httpsListener"))
            return
        selector = {GATEWAY_NAME_LABEL: gw.name}
        key = f"Gateway {gw.namespace}/{gw.name}"
    else:
        selector = dict(gw.selector)
        key = f"{K}istio.gateway.selector"
    pods = live_pods(snap.objs(List("v1", "Pod", gw.namespace, labels_of(selector))))
    sel = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    if not pods:
        yield Failure(name, (
            f"no gateway pods in namespace {gw.namespace} with labels {sel} ({key}): point "
            f"{K}istio.gateway.namespace and the selector at your ingress gateway "
            f"(`kubectl get pods -A -l {sel}`)"))
    elif not any(has_sidecar(p) for p in pods):
        yield Failure(name, (
            f"the pods labelled {sel} in {gw.namespace} run no Envoy ({SIDECAR} container): they "
            "are not an Istio gateway; fix the selector"))


# --------------------------------------------------------------------------------------------
# Applications
# --------------------------------------------------------------------------------------------


def service_query(app: App) -> Get:
    return Get("v1", "Service", app.service.name, app.service.namespace)


def service_pods_query(app: App, snap: Snapshot) -> List | None:
    """The pods the app's Service selects (None until the Service is read, or without selector)."""
    svc = snap.obj(service_query(app))
    selector = ((svc or {}).get("spec") or {}).get("selector")
    if not selector:
        return None
    return List("v1", "Pod", app.service.namespace, labels_of(selector))


def no_selector(check_name: str, app: App) -> Failure:
    """The failure of a pod check for an app whose Service selects no pods (app-sidecar, app-ambient)."""
    s = app.service
    return Failure(check_name, (
        f"Service {s.namespace}/{s.name} has no pod selector, so its pods cannot be "
        f"checked: give it one, or skip this check with {K}preflight.skip"), app.name)


def _service_reads(cfg: StackConfig, _snap: Snapshot) -> list[Query]:
    return [service_query(a) for a in cfg.apps]


@check("app-service", "each app's Service exists with the configured port", _service_reads)
def app_service(cfg: StackConfig, snap: Snapshot) -> Iterator[Failure]:
    for i, app in enumerate(cfg.apps):
        s = app.service
        svc = snap.obj(service_query(app))
        if svc is None:
            yield Failure("app-service", (
                f"Service {s.namespace}/{s.name} does not exist: deploy the app first, or fix "
                f"{K}apps[{i}].service"), app.name)
            continue
        ports = [p.get("port") for p in (svc.get("spec") or {}).get("ports") or []]
        if s.port not in ports:
            yield Failure("app-service", (
                f"Service {s.namespace}/{s.name} has no port {s.port} (ports: {ports}): set "
                f"{K}apps[{i}].service.port"), app.name)


def _sidecar_reads(cfg: StackConfig, snap: Snapshot) -> list[Query]:
    reads: list[Query] = []
    for app in (a for a in cfg.apps if not a.ambient):
        reads += [service_query(app), Get("v1", "Namespace", app.service.namespace)]
        q = service_pods_query(app, snap)
        if q is not None:
            reads.append(q)
    return reads


def dataplane(pod: Mapping[str, Any], namespace: Mapping[str, Any] | None) -> str:
    """`sidecar`, `ambient` or `none` for a pod (ambient: the namespace's or pod's dataplane-mode
    label, unless the pod has a sidecar)."""
    if has_sidecar(pod):
        return "sidecar"
    mode = _labels(pod).get("istio.io/dataplane-mode") or _labels(namespace or {}).get(
        "istio.io/dataplane-mode")
    return "ambient" if mode == "ambient" else "none"


@check("app-sidecar", "the pods behind each app's Service exist and carry an Istio sidecar "
       "(the sidecar policies and the JWT check run there)", _sidecar_reads)
def app_sidecar(cfg: StackConfig, snap: Snapshot) -> Iterator[Failure]:
    name = "app-sidecar"
    for i, app in enumerate(cfg.apps):
        if app.ambient:
            continue  # preflight/ambient.py: app-ambient
        s = app.service
        svc = snap.obj(service_query(app))
        if svc is None:
            continue  # app-service says so
        q = service_pods_query(app, snap)
        if q is None:
            yield no_selector(name, app)
            continue
        pods = live_pods(snap.objs(q))
        if cfg.istio.install.enabled:
            continue  # the stack installs Istio: no pod can have a sidecar before the first up
        if not pods:
            yield Failure(name, (
                f"no pods behind Service {s.namespace}/{s.name}: deploy or scale up the app "
                "(with Istio sidecar injection) first"), app.name)
            continue
        ns = snap.obj(Get("v1", "Namespace", s.namespace))
        planes = [dataplane(p, ns) for p in pods]
        if "ambient" in planes:
            yield Failure(name, (
                f"the pods of Service {s.namespace}/{s.name} are in Istio ambient mode, where no "
                f"sidecar checks the app's requests: set {K}apps[{i}].dataplane ambient "
                f"(docs/ambient.md), or enable sidecar injection for {s.namespace}"),
                app.name)
            continue
        bare = [_name(p) for p, plane in zip(pods, planes, strict=True) if plane != "sidecar"]
        if bare:
            yield Failure(name, (
                f"{len(bare)} of {len(pods)} pods of Service {s.namespace}/{s.name} have no "
                f"{SIDECAR} sidecar (e.g. {bare[0]}): `kubectl label namespace {s.namespace} "
                f"istio-injection=enabled` (or istio.io/rev=<revision>), then restart the app"),
                app.name)


# --------------------------------------------------------------------------------------------
# TLS, storage, nodes
# --------------------------------------------------------------------------------------------


def _tls_query(cfg: StackConfig) -> Get | None:
    gw = cfg.istio.gateway
    cm = cfg.istio.cert_manager
    if cfg.istio.ingress_api == "gateway-api" and not cfg.istio.gateway_api.create:
        return None  # the existing Gateway's listeners carry their own certificates
    if cm.issuer:
        if cm.issuer_kind == "ClusterIssuer":
            return Get("cert-manager.io/v1", "ClusterIssuer", cm.issuer)
        return Get("cert-manager.io/v1", "Issuer", cm.issuer, gw.namespace)
    return Get("v1", "Secret", gw.tls_credential_name, gw.namespace, metadata_only=True)


def _tls_reads(cfg: StackConfig, _snap: Snapshot) -> list[Query]:
    q = _tls_query(cfg)
    return [q] if q else []


def _ready(obj: Mapping[str, Any]) -> tuple[bool, str]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True", str(c.get("message") or c.get("reason") or "")
    return False, "no Ready condition yet"


@check("tls", "the gateway's TLS Secret exists, or the cert-manager issuer that makes it is "
       "Ready", _tls_reads)
def tls(cfg: StackConfig, snap: Snapshot) -> Iterator[Failure]:
    q = _tls_query(cfg)
    if q is None:
        return
    gw = cfg.istio.gateway
    if q.kind == "Secret":
        if snap.state(q) == "absent":
            yield Failure("tls", (
                f"TLS Secret {gw.namespace}/{gw.tls_credential_name} does not exist: create it "
                f"(`kubectl -n {gw.namespace} create secret tls {gw.tls_credential_name} "
                f"--cert=tls.crt --key=tls.key`) or set {K}istio.certManager.issuer"))
        return
    if snap.state(q) == "unserved":
        yield Failure("tls", (
            "cert-manager is not installed (no cert-manager.io/v1 API): install it, or unset "
            f"{K}istio.certManager.issuer and create the TLS Secret"))
        return
    obj = snap.obj(q)
    if obj is None:
        yield Failure("tls", (
            f"{q.describe()} does not exist: create it, or fix {K}istio.certManager.issuer / "
            "issuerKind"))
        return
    ready, why = _ready(obj)
    if not ready:
        yield Failure("tls", f"{q.describe()} is not Ready ({why[:120]}): fix the issuer first")


def _storage_reads(cfg: StackConfig, _snap: Snapshot) -> list[Query]:
    if cfg.redis.mode == "external":
        return []
    sc = cfg.redis.persistence.storage_class
    if sc:
        return [Get("storage.k8s.io/v1", "StorageClass", sc)]
    return [List("storage.k8s.io/v1", "StorageClass")]


@check("storage-class", "Redis's volumes can be provisioned: the configured StorageClass, or a "
       "default one, exists", _storage_reads)
def storage_class(cfg: StackConfig, snap: Snapshot) -> Iterator[Failure]:
    if cfg.redis.mode == "external":
        return
    sc = cfg.redis.persistence.storage_class
    if sc:
        if snap.obj(Get("storage.k8s.io/v1", "StorageClass", sc)) is None:
            yield Failure("storage-class", (
                f"StorageClass {sc!r} does not exist: fix {K}redis.persistence.storageClass"))
        return
    classes = snap.objs(List("storage.k8s.io/v1", "StorageClass"))
    if not any(_annotations(c).get(a) == "true" for c in classes for a in DEFAULT_CLASS_ANNOTATIONS):
        names = sorted(_name(c) for c in classes)
        yield Failure("storage-class", (
            f"the cluster has no default StorageClass (classes: {names or 'none'}): set "
            f"{K}redis.persistence.storageClass, or mark one default"))


def _node_reads(cfg: StackConfig, _snap: Snapshot) -> list[Query]:
    return [List("v1", "Node")] if cfg.redis.mode == "ha" else []


def schedulable(node: Mapping[str, Any]) -> bool:
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    if any(t.get("effect") in ("NoSchedule", "NoExecute") for t in spec.get("taints") or []):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


@check("redis-nodes", "redis.mode ha: as many schedulable nodes as Redis servers (hard "
       "anti-affinity puts each on its own node)", _node_reads)
def redis_nodes(cfg: StackConfig, snap: Snapshot) -> Iterator[Failure]:
    if cfg.redis.mode != "ha":
        return
    want = cfg.redis.sentinel.replicas
    have = sum(1 for n in snap.objs(List("v1", "Node")) if schedulable(n))
    if have < want:
        yield Failure("redis-nodes", (
            f"redis.mode ha runs {want} Redis servers on {want} different nodes; the cluster has "
            f"{have} ready, schedulable node(s): add nodes, lower "
            f"{K}redis.sentinel.replicas, or use {K}redis.mode standalone"))


# --------------------------------------------------------------------------------------------
# Keycloak
# --------------------------------------------------------------------------------------------


def discovery_query(cfg: StackConfig) -> HttpGet:
    """An existing realm's discovery document; for a realm still to create, the admin realm's."""
    kc = cfg.keycloak
    realm = kc.realm if kc.realm_mode == "existing" else kc.admin.realm
    return HttpGet(f"{kc.url}/realms/{realm}/.well-known/openid-configuration", kc.ca_certificate)


@check("keycloak", "Keycloak answers at keycloak.url over trusted TLS, and an existing realm "
       "exists with the issuer the stack expects", lambda cfg, _snap: [discovery_query(cfg)])
def keycloak(cfg: StackConfig, snap: Snapshot) -> Iterator[Failure]:
    kc = cfg.keycloak
    q = discovery_query(cfg)
    r = snap.get(q)
    if r is None:
        return
    if r.state != "ok":
        yield Failure("keycloak", (
            f"Keycloak is not reachable at {kc.url} from here ({r.detail[:160] or r.state}): check "
            f"{K}keycloak.url and, for a private CA, {K}keycloak.caCertificate"))
        return
    status = r.value.get("status")
    doc = r.value.get("json") or {}
    if status == 404 and kc.realm_mode == "existing":
        yield Failure("keycloak", (
            f"Keycloak has no realm {kc.realm!r} (404 on its discovery document): fix "
            f"{K}keycloak.realm, or set {K}keycloak.realmMode create"))
        return
    if status != 200 or not isinstance(doc, Mapping) or "issuer" not in doc:
        yield Failure("keycloak", (
            f"{q.url} answered HTTP {status}, not an OpenID discovery document: check "
            f"{K}keycloak.url (Keycloak's public base URL, no /auth)"))
        return
    realm = kc.realm if kc.realm_mode == "existing" else kc.admin.realm
    expected = f"{kc.url}/realms/{realm}"
    if doc["issuer"] != expected:
        yield Failure("keycloak", (
            f"Keycloak calls its issuer {doc['issuer']!r}, the stack expects {expected!r}: set "
            f"{K}keycloak.url to the URL Keycloak's hostname setting publishes"))


__all__ = ["dataplane", "has_sidecar", "istio_version", "live_pods", "provider_differences", "schedulable"]
