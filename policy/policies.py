"""The authproxy policy pack: every policy and its validate function (Pulumi CrossGuard).

Constructing a ``PolicyPack`` starts the analyzer's gRPC server and never returns, so the policies
live here and the entry point (``policy/__main__.py``) only builds the pack from :data:`POLICIES`.
Tests import this module and call each policy's ``validate`` (tests/unit/test_policies.py).

Self-contained on purpose: Pulumi runs the pack in its own virtualenv (``policy/requirements.txt``)
without this repository's modules, so nothing here imports ``components/``. Every policy is
mandatory: a violation fails ``pulumi preview`` and ``pulumi up``. docs/policies.md lists them and
what each prevents.

What the functions receive is what the engine sends: resource *inputs* for resource policies,
resource *outputs* (during a preview: the planned state) for stack policies, wrapped in
pulumi-policy's proxies, which are ``Mapping``/``Sequence`` but not ``dict``/``list``, with secrets
unwrapped. Reading a value that is unknown during a preview raises ``UnknownValueError``; the
engine then reports that the policy could not run (advisory). Walks over free-form values (Helm
values, EnvoyFilter patches) skip unknown leaves instead, so a computed annotation elsewhere does
not stop a check.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

PACK_NAME = "authproxy-guardrails"
MANDATORY = EnforcementLevel.MANDATORY

KEYCLOAK_CLIENT = "keycloak:openid/client:Client"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
STACK = "pulumi:pulumi:Stack"
ISTIO_NETWORKING = "networking.istio.io"
ISTIO_SECURITY = "security.istio.io"
GATEWAY_API = "gateway.networking.k8s.io"
GATEWAY_NAME_LABEL = GATEWAY_API + "/gateway-name"
"""The label istiod gives the pods of a Gateway API Gateway it deploys (value: the Gateway's name)."""
EXT_AUTHZ_TYPE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
EXT_AUTHZ_PER_ROUTE_TYPE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
DEFAULT_ROOT_NAMESPACE = "istio-system"

# oauth2-proxy flags whose value is a secret (checked against oauth2-proxy v7.15
# pkg/apis/options). Their `-file` variants take a path and are fine.
SECRET_FLAGS = (
    "basic-auth-password",
    "client-secret",
    "cookie-secret",
    "github-token",
    "jwt-key",
    "redis-password",
    "redis-sentinel-password",
    "signature-key",
)
SECRET_ENV = tuple("OAUTH2_PROXY_" + f.upper().replace("-", "_") for f in SECRET_FLAGS)
"""The same settings as oauth2-proxy environment variables."""
REDIS_PASSWORD_ENV = "OAUTH2_PROXY_REDIS_PASSWORD"
_FALSE = {"0", "f", "false"}
"""Go's strconv.ParseBool false spellings (lower-cased)."""
_URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s@:]*:[^/\s@]+@", re.IGNORECASE)
_VERSION_IN_TAG = re.compile(r"\d+\.\d+")
_EXACT_CHART_VERSION = re.compile(r"^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")

# Where the pod spec sits in each workload kind: (API group, kind) -> path.
_POD_SPEC_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("core", "Pod"): ("spec",),
    ("core", "ReplicationController"): ("spec", "template", "spec"),
    ("apps", "Deployment"): ("spec", "template", "spec"),
    ("apps", "StatefulSet"): ("spec", "template", "spec"),
    ("apps", "DaemonSet"): ("spec", "template", "spec"),
    ("apps", "ReplicaSet"): ("spec", "template", "spec"),
    ("batch", "Job"): ("spec", "template", "spec"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}


# --------------------------------------------------------------------------------------------
# Reading properties
# --------------------------------------------------------------------------------------------


def _report(report_violation: ReportViolation, message: str, urn: str | None = None) -> None:
    report_violation(message, urn)


def _m(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def _l(value: Any) -> Sequence[Any]:
    """``value`` if it is a list (not a string), else an empty one."""
    return value if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else ()


def _get(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...`` or None where a step is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _item(container: Any, key: Any) -> tuple[bool, Any]:
    """(known, value) of ``container[key]``; (False, None) if it is unknown during a preview.
    A missing key raises KeyError/IndexError as usual."""
    try:
        return True, container[key]
    except UnknownValueError:
        return False, None


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every mapping under ``node`` (itself included) with its path; unknown values are skipped."""
    if isinstance(node, Mapping):
        yield path, node
        for key in list(node):
            known, child = _item(node, key)
            if known:
                yield from _walk(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        for i in range(len(node)):
            known, child = _item(node, i)
            if known:
                yield from _walk(child, f"{path}[{i}]")


def _has(mapping: Mapping[str, Any], key: str) -> bool:
    """``key in mapping`` without reading the value (which may be unknown during a preview)."""
    return any(k == key for k in mapping)


def _field(mapping: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` present in ``mapping`` (proto JSON accepts camel and snake case);
    None if none is, or if the value is unknown."""
    for name in names:
        if _has(mapping, name):
            known, value = _item(mapping, name)
            return value if known else None
    return None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "t", "true", "yes", "on")
    return value is True


@dataclass(frozen=True)
class KubeType:
    group: str
    """API group; "core" for the legacy group."""
    version: str
    kind: str


def kube_type(resource_type: str) -> KubeType | None:
    """``kubernetes:apps/v1:Deployment`` -> (apps, v1, Deployment); None for other providers."""
    parts = resource_type.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes":
        return None
    group, _, version = parts[1].rpartition("/")
    return KubeType(group or "core", version, parts[2])


def _is_kind(resource_type: str, group: str, kind: str) -> bool:
    t = kube_type(resource_type)
    return t is not None and t.group == group and t.kind == kind


def _label(props: Mapping[str, Any], *path: str) -> str:
    """A value for a message: "" where it is missing or unknown during a preview."""
    node: Any = props
    for key in path:
        if not isinstance(node, Mapping) or not _has(node, key):
            return ""
        known, node = _item(node, key)
        if not known:
            return ""
    return str(node) if node is not None else ""


def _object_name(props: Mapping[str, Any], fallback: str) -> str:
    """``Kind namespace/name`` of a Kubernetes object, for messages (never raises on unknowns)."""
    name = _label(props, "metadata", "name") or fallback
    ns = _label(props, "metadata", "namespace")
    kind = _label(props, "kind") or "object"
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


# --------------------------------------------------------------------------------------------
# Workloads and containers
# --------------------------------------------------------------------------------------------


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec of a workload object (Pod, Deployment, ..., CronJob); None for other types."""
    t = kube_type(resource_type)
    if t is None:
        return None
    path = _POD_SPEC_PATHS.get((t.group, t.kind))
    if path is None:
        return None
    return _m(_get(props, *path))


@dataclass(frozen=True)
class Container:
    name: str
    spec: Mapping[str, Any]
    pod: Mapping[str, Any]
    where: str
    """``container 'x' of Deployment ns/name``, for messages."""


def containers(args: ResourceValidationArgs) -> list[Container]:
    """Every container and init container of a workload (empty for other resources)."""
    spec = pod_spec(args.resource_type, args.props)
    if spec is None:
        return []
    owner = _object_name(args.props, args.name)
    out: list[Container] = []
    for field_name, label in (("initContainers", "init container"), ("containers", "container")):
        for c in _l(spec.get(field_name)):
            c = _m(c)
            name = str(c.get("name") or "?")
            out.append(Container(name, c, spec, f"{label} '{name}' of {owner}"))
    return out


def _security(container: Container, key: str) -> Any:
    """A securityContext setting: the container's, else the pod's (for the keys pods have)."""
    own = _m(container.spec.get("securityContext"))
    if _has(own, key):
        return own.get(key)
    return _m(container.pod.get("securityContext")).get(key)


def _command_line(container: Container) -> list[str]:
    return [str(a) for a in (*_l(container.spec.get("command")), *_l(container.spec.get("args")))]


def flag_values(argv: Sequence[str], flag: str) -> list[str]:
    """Values given to ``--flag`` as ``--flag=v`` or ``--flag v`` (also single-dash forms)."""
    out: list[str] = []
    names = (f"--{flag}", f"-{flag}")
    for i, arg in enumerate(argv):
        for name in names:
            if arg.startswith(name + "="):
                out.append(arg[len(name) + 1:])
            elif arg == name and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                out.append(argv[i + 1])
    return out


def _env(container: Container) -> list[Mapping[str, Any]]:
    return [_m(e) for e in _l(container.spec.get("env"))]


def _env_named(container: Container, name: str) -> Mapping[str, Any] | None:
    for e in _env(container):
        if e.get("name") == name:
            return e
    return None


def _from_secret_key_ref(entry: Mapping[str, Any]) -> bool:
    """An env entry filled from a Secret key and nothing else."""
    value_from = _m(entry.get("valueFrom"))
    return not _has(entry, "value") and bool(_m(value_from.get("secretKeyRef")).get("key"))


def _has_secret_env_from(container: Container) -> bool:
    return any(_m(e).get("secretRef") for e in _l(container.spec.get("envFrom")))


# --------------------------------------------------------------------------------------------
# OIDC clients (Keycloak)
# --------------------------------------------------------------------------------------------


def redirect_uri_problem(uri: str, allow_plus: bool = False) -> str | None:
    """Why a redirect URI is not one exact https URI (None if it is).

    Keycloak matches a trailing ``*`` as a prefix and accepts ``+``/relative URIs resolved against
    the root URL; either widens where codes and tokens may be sent.
    """
    if allow_plus and uri == "+":
        return None  # post-logout: "same as the valid redirect URIs", which are checked too
    if "*" in uri:
        return "contains a wildcard"
    parts = urlsplit(uri)
    if parts.scheme != "https":
        return "is not an absolute https URI"
    if not parts.hostname:
        return "has no host"
    if parts.fragment:
        return "has a fragment"
    return None


def validate_oidc_redirect_uris(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != KEYCLOAK_CLIENT:
        return
    p = args.props
    uris = [str(u) for u in _l(p.get("validRedirectUris"))]
    if (_truthy(p.get("standardFlowEnabled")) or _truthy(p.get("implicitFlowEnabled"))) and not uris:
        _report(report_violation, "the client allows a browser flow but lists no valid redirect URI")
    for uri in uris:
        problem = redirect_uri_problem(uri)
        if problem:
            _report(
                report_violation,
                f"valid redirect URI {uri!r} {problem}; list each exact https URI instead "
                "(e.g. https://auth.example.com/oauth2/callback)",
            )
    for uri in (str(u) for u in _l(p.get("validPostLogoutRedirectUris"))):
        problem = redirect_uri_problem(uri, allow_plus=True)
        if problem:
            _report(
                report_violation,
                f"valid post-logout redirect URI {uri!r} {problem}; list each exact https URI",
            )


def validate_oidc_pkce(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != KEYCLOAK_CLIENT:
        return
    p = args.props
    if not _truthy(p.get("standardFlowEnabled")):
        return  # no authorization-code flow, nothing for PKCE to protect
    method = p.get("pkceCodeChallengeMethod")
    if method != "S256":
        _report(
            report_violation,
            f"pkceCodeChallengeMethod is {method!r}; set it to 'S256' so a stolen authorization "
            "code cannot be redeemed without the verifier",
        )


def validate_oidc_grants(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != KEYCLOAK_CLIENT:
        return
    p = args.props
    if _truthy(p.get("implicitFlowEnabled")):
        _report(
            report_violation,
            "implicitFlowEnabled is true: tokens would be returned in the URL fragment; use the "
            "authorization-code flow (standardFlowEnabled) only",
        )
    if _truthy(p.get("directAccessGrantsEnabled")):
        _report(
            report_violation,
            "directAccessGrantsEnabled is true: the password grant lets the client collect user "
            "passwords and bypasses the Keycloak login page (MFA, brute-force protection); "
            "disable it",
        )


# --------------------------------------------------------------------------------------------
# oauth2-proxy: secrets and cookies
# --------------------------------------------------------------------------------------------

_CONFIG_SECRET_KEY = re.compile(
    r"^(oauth2_proxy_)?(client[-_]secret|cookie[-_]secret|redis[-_]password|"
    r"redis[-_]sentinel[-_]password|basic[-_]auth[-_]password|signature[-_]key|jwt[-_]key|"
    r"github[-_]token)$",
    re.IGNORECASE,
)
_CONFIG_FILE_SECRET = re.compile(
    r"^\s*(client_secret|cookie_secret|redis_password|redis_sentinel_password|"
    r"basic_auth_password|signature_key|jwt_key|github_token)\s*=",
    re.MULTILINE,
)


def validate_proxy_secret_refs(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for c in containers(args):
        argv = _command_line(c)
        for flag in SECRET_FLAGS:
            if flag_values(argv, flag):
                _report(
                    report_violation,
                    f"{c.where} passes --{flag} on the command line: the secret would be in the "
                    f"pod spec and the process list; set OAUTH2_PROXY_"
                    f"{flag.upper().replace('-', '_')} from a Secret with valueFrom.secretKeyRef",
                )
        for arg in argv:
            if _URL_WITH_PASSWORD.search(arg):
                _report(
                    report_violation,
                    f"{c.where} has a URL with a password in its arguments ({arg.split('=')[0]}); "
                    "pass the password separately from a Secret (secretKeyRef)",
                )
        for e in _env(c):
            name = str(e.get("name") or "")
            if name in SECRET_ENV and not _from_secret_key_ref(e):
                how = "a literal value" if _has(e, "value") else "something other than a Secret key"
                _report(
                    report_violation,
                    f"{c.where} sets {name} from {how}; fill it with valueFrom.secretKeyRef",
                )
            elif name.startswith("OAUTH2_PROXY_") and _has(e, "value"):
                known, value = _item(e, "value")
                if known and isinstance(value, str) and _URL_WITH_PASSWORD.search(value):
                    _report(
                        report_violation,
                        f"{c.where} sets {name} to a URL with a password; pass the password "
                        "separately from a Secret (secretKeyRef)",
                    )
    if _is_kind(args.resource_type, "core", "ConfigMap"):
        owner = _object_name(args.props, args.name)
        for key, value in _m(args.props.get("data")).items():
            if _CONFIG_SECRET_KEY.match(str(key)):
                _report(
                    report_violation,
                    f"{owner} holds {key!r}: ConfigMaps are not secret; put it in a Secret and "
                    "reference it with secretKeyRef",
                )
            elif isinstance(value, str) and _CONFIG_FILE_SECRET.search(value):
                _report(
                    report_violation,
                    f"{owner} key {key!r} is an oauth2-proxy config file with a secret in it; "
                    "pass secrets as env from a Secret (secretKeyRef) instead",
                )


_COOKIE_SECURE_IN_FILE = re.compile(r"^\s*cookie_secure\s*=\s*false\b", re.MULTILINE | re.IGNORECASE)


def validate_cookie_secure(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for c in containers(args):
        for value in flag_values(_command_line(c), "cookie-secure"):
            if value.strip().lower() in _FALSE:
                _report(
                    report_violation,
                    f"{c.where} sets --cookie-secure={value}: the session cookie would be sent over "
                    "plain HTTP; remove the flag (the default is true)",
                )
        entry = _env_named(c, "OAUTH2_PROXY_COOKIE_SECURE")
        if entry is not None and str(entry.get("value", "")).strip().lower() in _FALSE:
            _report(
                report_violation,
                f"{c.where} sets OAUTH2_PROXY_COOKIE_SECURE=false: the session cookie would be "
                "sent over plain HTTP; remove it",
            )
    if _is_kind(args.resource_type, "core", "ConfigMap"):
        for key, value in _m(args.props.get("data")).items():
            if isinstance(value, str) and _COOKIE_SECURE_IN_FILE.search(value):
                _report(
                    report_violation,
                    f"{_object_name(args.props, args.name)} key {key!r} sets cookie_secure = false; "
                    "remove it",
                )


# --------------------------------------------------------------------------------------------
# Container hardening
# --------------------------------------------------------------------------------------------


def _is_zero(value: Any) -> bool:
    """0, 0.0 (numbers arrive as floats from the engine) or "0"."""
    try:
        return float(value) == 0
    except (TypeError, ValueError):
        return False


def validate_non_root(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for c in containers(args):
        if _security(c, "runAsNonRoot") is not True:
            _report(
                report_violation,
                f"{c.where} may run as root; set securityContext.runAsNonRoot: true (pod or "
                "container) and a non-zero runAsUser",
            )
        user = _security(c, "runAsUser")
        if user is not None and _is_zero(user):
            _report(report_violation, f"{c.where} sets runAsUser: 0 (root); use a non-zero uid")


def validate_read_only_root(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for c in containers(args):
        if _m(c.spec.get("securityContext")).get("readOnlyRootFilesystem") is not True:
            _report(
                report_violation,
                f"{c.where} has a writable root filesystem; set securityContext."
                "readOnlyRootFilesystem: true (mount an emptyDir where it must write)",
            )


_ESCALATING_CAPS = {"ALL", "SYS_ADMIN", "CAP_SYS_ADMIN"}


def validate_no_privilege_escalation(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    for c in containers(args):
        sc = _m(c.spec.get("securityContext"))
        if sc.get("allowPrivilegeEscalation") is not False:
            _report(
                report_violation,
                f"{c.where} does not set securityContext.allowPrivilegeEscalation: false",
            )
        if sc.get("privileged") is True:
            _report(report_violation, f"{c.where} is privileged; remove securityContext.privileged")
        added = {str(x).upper() for x in _l(_m(sc.get("capabilities")).get("add"))}
        if added & _ESCALATING_CAPS:
            _report(
                report_violation,
                f"{c.where} adds capabilities {sorted(added & _ESCALATING_CAPS)}; drop them",
            )


def validate_resource_limits(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for c in containers(args):
        limits = _m(_m(c.spec.get("resources")).get("limits"))
        missing = [r for r in ("cpu", "memory") if not limits.get(r)]
        if missing:
            _report(
                report_violation,
                f"{c.where} has no {' or '.join(missing)} limit; set resources.limits."
                f"{missing[0]} so one pod cannot starve its node",
            )


def image_problem(image: str) -> str | None:
    """Why an image reference is not pinned to a version (None if it is)."""
    if not image:
        return "has no image"
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag (pulls 'latest')"
    tag = last.rsplit(":", 1)[1]
    if tag == "latest":
        return f"image {image!r} uses the 'latest' tag"
    if not _VERSION_IN_TAG.search(tag):
        return f"image {image!r} uses the floating tag {tag!r}"
    return None


def validate_pinned_images(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for c in containers(args):
        problem = image_problem(str(c.spec.get("image") or ""))
        if problem:
            _report(
                report_violation,
                f"{c.where}: {problem}; pin a release tag (e.g. v7.15.2) or a digest",
            )
    if args.resource_type != HELM_RELEASE:
        return
    p = args.props
    version = p.get("version")
    if not isinstance(version, str) or not _EXACT_CHART_VERSION.match(version):
        _report(
            report_violation,
            f"Helm release {args.name!r} does not pin an exact chart version (version is "
            f"{version!r}); set one such as '4.35.5'",
        )
    for path, node in _walk(p.get("values"), "values"):
        tag = _field(node, "tag")
        if not isinstance(tag, str) or not tag:
            continue  # empty: the chart's appVersion, pinned by the chart version
        if not (_has(node, "repository") or _has(node, "image") or path.endswith("image")):
            continue
        if tag == "latest" or not _VERSION_IN_TAG.search(tag):
            _report(
                report_violation,
                f"Helm release {args.name!r}: {path}.tag is {tag!r}; pin a release tag",
            )


# --------------------------------------------------------------------------------------------
# ext_authz fails closed
# --------------------------------------------------------------------------------------------


def mesh_config_fail_open(mesh: Any) -> list[str]:
    """Names of the ext_authz extension providers in an Istio mesh config that fail open."""
    out: list[str] = []
    for provider in _l(_m(mesh).get("extensionProviders") or _m(mesh).get("extension_providers")):
        provider = _m(provider)
        for kind in ("envoyExtAuthzHttp", "envoy_ext_authz_http", "envoyExtAuthzGrpc",
                     "envoy_ext_authz_grpc"):
            settings = _m(provider.get(kind))
            if settings and _truthy(_field(settings, "failOpen", "fail_open")):
                out.append(str(provider.get("name") or "?"))
    return out


def _parse_mesh(value: Any) -> Any:
    """A mesh config given as a mapping or as YAML text."""
    if isinstance(value, str):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return None
    return value


def envoy_filter_fail_open(spec: Any) -> list[str]:
    """Paths of ext_authz filter configs in an EnvoyFilter spec with failure_mode_allow on."""
    out: list[str] = []
    for path, node in _walk(spec, "spec"):
        type_url = str(_field(node, "@type") or "")
        is_filter = EXT_AUTHZ_TYPE in type_url and not type_url.endswith("PerRoute")
        if is_filter and _truthy(_field(node, "failure_mode_allow", "failureModeAllow")):
            out.append(path)
    return out


_FAIL_OPEN_FIX = (
    "a failed or timed-out check would let the request through unauthenticated; set it to false"
)


def validate_ext_authz_fail_closed(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    t = args.resource_type
    p = args.props
    if _is_kind(t, ISTIO_NETWORKING, "EnvoyFilter"):
        for path in envoy_filter_fail_open(p.get("spec")):
            _report(
                report_violation,
                f"{_object_name(p, args.name)}: {path}.failure_mode_allow is true; {_FAIL_OPEN_FIX}",
            )
    meshes: list[tuple[str, Any]] = []
    if t == HELM_RELEASE:
        meshes.append((f"Helm release {args.name!r} values.meshConfig", _get(p, "values", "meshConfig")))
    elif _is_kind(t, "install.istio.io", "IstioOperator"):
        meshes.append((f"{_object_name(p, args.name)} spec.meshConfig", _get(p, "spec", "meshConfig")))
    elif _is_kind(t, "core", "ConfigMap"):
        data = _m(p.get("data"))
        if _has(data, "mesh"):
            meshes.append((f"{_object_name(p, args.name)} data.mesh", _parse_mesh(data.get("mesh"))))
    for where, mesh in meshes:
        for name in mesh_config_fail_open(mesh):
            _report(
                report_violation,
                f"{where}: extension provider {name!r} has failOpen: true; {_FAIL_OPEN_FIX}",
            )


def validate_exported_mesh_config(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """The stack output `meshConfig` (merged into istiod's mesh config by whoever runs Istio)."""
    for r in args.resources:
        if r.resource_type != STACK:
            continue
        if not _has(r.props, "meshConfig"):
            continue
        known, mesh = _item(r.props, "meshConfig")
        if not known:
            continue  # computed: checked on `pulumi up`, when the value is known
        for name in mesh_config_fail_open(_parse_mesh(mesh)):
            _report(
                report_violation,
                f"stack output meshConfig: extension provider {name!r} has failOpen: true; "
                f"{_FAIL_OPEN_FIX}",
                r.urn,
            )


# --------------------------------------------------------------------------------------------
# Every gateway host is behind ext_authz
# --------------------------------------------------------------------------------------------


def host_matches(pattern: str, host: str) -> bool:
    """Whether an Istio AuthorizationPolicy host pattern (exact, ``*.suffix``, ``prefix*``, ``*``)
    matches ``host``. A wildcard host (a VirtualService for ``*.example.com``) is matched only by
    a pattern that covers every name it stands for."""
    pattern, host = pattern.lower().split(":")[0], host.lower().split(":")[0]
    if pattern == "*":
        return True
    if host.startswith("*"):
        return pattern.startswith("*") and host[1:].endswith(pattern[1:])
    if pattern.startswith("*"):
        return host.endswith(pattern[1:])
    if pattern.endswith("*"):
        return host.startswith(pattern[:-1])
    return pattern == host


def _labels_subset(selector: Mapping[str, Any] | None, labels: Mapping[str, Any] | None) -> bool:
    """Whether a workload selector (None: every workload) selects pods with ``labels``
    (None: unknown labels, selected by any selector)."""
    if selector is None or labels is None:
        return True
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class GatewayInfo:
    key: str
    """``namespace/name``."""
    namespace: str
    selector: Mapping[str, Any] | None
    """Labels of the gateway pods (None if the Gateway object is not in this stack). For a
    Gateway API Gateway: the label istiod gives the pods it deploys for it."""
    gateway_api: bool = False
    """A ``gateway.networking.k8s.io`` Gateway (policies may attach to it by ``targetRefs``)."""


def _target_gateways(spec: Mapping[str, Any], ns: str) -> tuple[str, ...] | None:
    """``namespace/name`` of the Gateway API Gateways a policy's ``targetRef(s)`` name (Istio
    attaches to Gateways of the policy's own namespace); None if it has no target references
    (it selects workloads instead). References to other kinds attach to no ingress gateway."""
    refs = [_m(r) for r in _l(spec.get("targetRefs"))]
    if spec.get("targetRef"):
        refs.append(_m(spec.get("targetRef")))
    if not refs:
        return None
    return tuple(
        f"{ns}/{r.get('name')}" for r in refs
        if r.get("kind") == "Gateway" and r.get("group") == GATEWAY_API and r.get("name")
    )


def _attaches(namespace: str, selector: Mapping[str, Any] | None, targets: tuple[str, ...] | None,
              gateway: GatewayInfo, root_namespace: str) -> bool:
    """Whether a policy (of ``namespace``, with a workload ``selector`` or ``targets``) applies to
    the gateway's proxies, as Istio binds it."""
    if targets is not None:
        return gateway.gateway_api and gateway.key in targets
    if namespace not in (gateway.namespace, root_namespace):
        return False
    return _labels_subset(selector, gateway.selector)


@dataclass(frozen=True)
class Guard:
    """ext_authz on some workloads: a CUSTOM AuthorizationPolicy or an ext_authz EnvoyFilter."""

    source: str
    namespace: str
    selector: Mapping[str, Any] | None
    """Workload labels it selects (None: every workload in its namespace)."""
    hosts: tuple[str, ...] | None
    """Host patterns it checks (None: every host)."""
    not_hosts: tuple[str, ...] = ()
    disabled_routes: tuple[tuple[str, str], ...] = ()
    """(Envoy virtual host name ``host:port`` or ``*``, route name or ``*``) where ext_authz is
    switched off per route (EnvoyFilter ``ExtAuthzPerRoute disabled``)."""
    targets: tuple[str, ...] | None = None
    """Gateway API Gateways (``namespace/name``) it attaches to by ``targetRefs``, else None."""

    def applies_to(self, gateway: GatewayInfo, root_namespace: str) -> bool:
        return _attaches(self.namespace, self.selector, self.targets, gateway, root_namespace)

    def covers(self, host: str, catch_all_routes: set[str]) -> bool:
        """Whether requests for ``host`` are checked, apart from paths the owner exempted.

        ``catch_all_routes`` names the host's routes that match every path: ext_authz switched off
        on one of those (or on the whole virtual host) leaves the host unprotected.
        """
        if any(host_matches(p, host) for p in self.not_hosts):
            return False
        for vhost, route in self.disabled_routes:
            if (vhost == "*" or host_matches(vhost, host)) and (
                route == "*" or route in catch_all_routes
            ):
                return False
        return self.hosts is None or any(host_matches(p, host) for p in self.hosts)


_CATCH_ALL_PATHS = {"*", "/*"}


def _authz_policy_guards(resource: PolicyResource) -> list[Guard]:
    """The host coverage of a CUSTOM AuthorizationPolicy.

    A rule operation covers a host when it checks every path of it: ``paths``, ``methods``,
    ``ports`` or ``notPorts`` restrict it to part of the host and do not count; ``notPaths``
    (public paths, ``/oauth2/*``) and ``notMethods`` are exemptions the policy owner chose.
    ``from``/``when`` conditions are not evaluated. Policies bound with ``targetRef(s)`` count
    for the Gateway API Gateways they name.
    """
    p = resource.props
    spec = _m(p.get("spec"))
    if spec.get("action") != "CUSTOM" or not _m(spec.get("provider")).get("name"):
        return []
    meta = _m(p.get("metadata"))
    ns = str(meta.get("namespace") or "default")
    targets = _target_gateways(spec, ns)
    selector_value = _m(spec.get("selector")).get("matchLabels")
    selector = _m(selector_value) if selector_value is not None else None
    source = f"AuthorizationPolicy {ns}/{_label(p, 'metadata', 'name') or resource.name}"
    guards: list[Guard] = []
    for rule in _l(spec.get("rules")):
        to = _l(_m(rule).get("to"))
        operations = [_m(_m(t).get("operation")) for t in to] if to else [{}]
        for op in operations:
            if any(op.get(k) for k in ("paths", "methods", "ports", "notPorts")):
                continue
            if {str(x) for x in _l(op.get("notPaths"))} & _CATCH_ALL_PATHS:
                continue
            hosts = tuple(str(h) for h in _l(op.get("hosts"))) or None
            guards.append(Guard(source, ns, selector, hosts,
                                tuple(str(h) for h in _l(op.get("notHosts"))), targets=targets))
    return guards


def _envoy_filter_guards(resource: PolicyResource) -> list[Guard]:
    """An EnvoyFilter that inserts ext_authz into gateway listeners guards every host there,
    except where a VIRTUAL_HOST or HTTP_ROUTE patch switches it off (``ExtAuthzPerRoute``
    ``disabled: true``)."""
    p = resource.props
    spec = _m(p.get("spec"))
    meta = _m(p.get("metadata"))
    ns = str(meta.get("namespace") or "default")
    inserts = False
    disabled: list[tuple[str, str]] = []
    for patch in _l(spec.get("configPatches")):
        patch = _m(patch)
        context = _get(patch, "match", "context") or "ANY"
        if context not in ("GATEWAY", "ANY"):
            continue
        value = _get(patch, "patch", "value")
        types = [str(_field(n, "@type") or "") for _, n in _walk(value)]
        apply_to = patch.get("applyTo")
        if apply_to == "HTTP_FILTER" and any(
            EXT_AUTHZ_TYPE in t and not t.endswith("PerRoute") for t in types
        ):
            if _get(patch, "patch", "operation") in ("INSERT_BEFORE", "INSERT_AFTER",
                                                    "INSERT_FIRST", "ADD"):
                inserts = True
        elif apply_to in ("VIRTUAL_HOST", "HTTP_ROUTE"):
            off = any(
                EXT_AUTHZ_PER_ROUTE_TYPE in str(_field(n, "@type") or "")
                and _truthy(_field(n, "disabled"))
                for _, n in _walk(value)
            )
            if off:
                vhost = _m(_get(patch, "match", "routeConfiguration", "vhost"))
                route = _get(vhost, "route", "name") if apply_to == "HTTP_ROUTE" else None
                disabled.append((str(vhost.get("name") or "*"), str(route or "*")))
    if not inserts:
        return []
    selector_value = _m(spec.get("workloadSelector")).get("labels")
    selector = _m(selector_value) if selector_value is not None else None
    source = f"EnvoyFilter {ns}/{_label(p, 'metadata', 'name') or resource.name}"
    return [Guard(source, ns, selector, None, (), tuple(disabled), _target_gateways(spec, ns))]


def _oauth2_proxy_services(resources: Sequence[PolicyResource]) -> set[tuple[str, str]]:
    """(name, namespace) of Services in front of oauth2-proxy pods (found by image)."""
    pod_labels: list[tuple[str, Mapping[str, Any]]] = []
    for r in resources:
        spec = pod_spec(r.resource_type, r.props)
        if spec is None:
            continue
        images = [str(_m(c).get("image") or "") for c in _l(spec.get("containers"))]
        if any(re.search(r"(^|/)oauth2-proxy(:|@|$)", i) for i in images):
            ns = str(_get(r.props, "metadata", "namespace") or "default")
            labels = _m(_get(r.props, "spec", "template", "metadata", "labels"))
            pod_labels.append((ns, labels))
    found: set[tuple[str, str]] = set()
    for r in resources:
        if not _is_kind(r.resource_type, "core", "Service"):
            continue
        meta = _m(r.props.get("metadata"))
        ns = str(meta.get("namespace") or "default")
        selector = _m(_get(r.props, "spec", "selector"))
        if selector and any(pns == ns and _labels_subset(selector, labels) for pns, labels in pod_labels):
            found.add((str(meta.get("name") or r.name), ns))
    return found


def _service_of(destination_host: str, vs_namespace: str) -> tuple[str, str]:
    """(name, namespace) a VirtualService destination host names (short names are relative to
    the VirtualService's namespace)."""
    parts = destination_host.split(".")
    return (parts[0], parts[1] if len(parts) > 1 else vs_namespace)


def _catch_all_routes(spec: Mapping[str, Any]) -> set[str]:
    """Names of a VirtualService's HTTP routes that match every request (no match, an empty
    match or a match on the path prefix "/" alone)."""
    out: set[str] = set()
    for route in _l(spec.get("http")):
        route = _m(route)
        matches = [_m(x) for x in _l(route.get("match"))]
        if not matches or any(
            not x or (set(x) == {"uri"} and _m(x.get("uri")) == {"prefix": "/"}) for x in matches
        ):
            out.add(str(route.get("name") or ""))
    return out


def _routes_only_to(spec: Mapping[str, Any], services: set[tuple[str, str]], ns: str) -> bool:
    """Whether every route of a VirtualService that has a backend goes to one of ``services``
    (redirects and direct responses have none)."""
    destinations: list[str] = []
    for kind in ("http", "tcp", "tls"):
        for route in _l(spec.get(kind)):
            for dest in _l(_m(route).get("route")):
                destinations.append(str(_get(dest, "destination", "host") or ""))
            mirror = _get(route, "mirror", "host")
            if mirror:
                destinations.append(str(mirror))
    return bool(destinations) and all(_service_of(d, ns) in services for d in destinations)


def _gateways(resources: Sequence[PolicyResource]) -> dict[str, GatewayInfo]:
    """The Istio Gateways and Gateway API Gateways of the stack by ``namespace/name`` (an Istio
    Gateway API route's parentRef and a VirtualService's ``gateways`` use the same key form; the
    two kinds are told apart by the ``gateway_api`` flag)."""
    out: dict[str, GatewayInfo] = {}
    for r in resources:
        api = _is_kind(r.resource_type, GATEWAY_API, "Gateway")
        if api or _is_kind(r.resource_type, ISTIO_NETWORKING, "Gateway"):
            meta = _m(r.props.get("metadata"))
            ns = str(meta.get("namespace") or "default")
            name = str(meta.get("name") or r.name)
            key = f"{ns}/{name}"
            selector = {GATEWAY_NAME_LABEL: name} if api else _m(_get(r.props, "spec", "selector"))
            out[key] = GatewayInfo(key, ns, selector, gateway_api=api)
    return out


def _http_route_rule_name(rule: Mapping[str, Any], route_ns: str, route_name: str, i: int) -> str:
    """The Envoy route name istiod gives an HTTPRoute rule: its ``name``, else ``ns.name.index``
    (pilot/pkg/config/kube/gateway/conversion.go)."""
    return str(rule.get("name") or f"{route_ns}.{route_name}.{i}")


def _http_route_match(match: Mapping[str, Any]) -> dict[str, Any]:
    """A Gateway API HTTPRouteMatch in VirtualService form (path only; any header or query
    match makes it narrower, which is what matters for the catch-all check)."""
    path = _m(match.get("path")) or {"type": "PathPrefix", "value": "/"}
    kind = {"Exact": "exact", "PathPrefix": "prefix", "RegularExpression": "regex"}.get(
        str(path.get("type") or "PathPrefix"), "regex")
    out: dict[str, Any] = {"uri": {kind: str(path.get("value") or "/")}}
    if match.get("headers"):
        out["headers"] = {str(_m(h).get("name")): {} for h in _l(match.get("headers"))}
    if match.get("queryParams"):
        out["queryParams"] = {str(_m(q).get("name")): {} for q in _l(match.get("queryParams"))}
    if match.get("method"):
        out["method"] = {"exact": str(match.get("method"))}
    return out


def _http_route_as_virtual_service(props: Mapping[str, Any], ns: str) -> dict[str, Any]:
    """An HTTPRoute in the VirtualService shape the checks read: ``hosts`` from ``hostnames``,
    one named ``http`` route per rule that has backends (``destination.host`` as
    ``name.namespace``); redirect-only rules route nowhere and are left out."""
    spec = _m(props.get("spec"))
    name = str(_get(props, "metadata", "name") or "")
    http: list[dict[str, Any]] = []
    for i, rule in enumerate(_m(x) for x in _l(spec.get("rules"))):
        dests = [
            {"destination": {"host": f"{b.get('name')}.{b.get('namespace') or ns}"}}
            for b in (_m(x) for x in _l(rule.get("backendRefs")))
            if str(b.get("kind") or "Service") == "Service" and str(b.get("group") or "") in ("", "core")
        ]
        if not dests:
            continue
        matches = [_http_route_match(_m(x)) for x in _l(rule.get("matches"))]
        http.append({"name": _http_route_rule_name(rule, ns, name, i),
                     "match": matches or [{"uri": {"prefix": "/"}}], "route": dests})
    return {"hosts": [str(h) for h in _l(spec.get("hostnames"))] or ["*"], "http": http}


def _gateway_virtual_services(
    resources: Sequence[PolicyResource],
) -> Iterator[tuple[PolicyResource, str, Mapping[str, Any], list[str]]]:
    """(resource, namespace, spec, ``namespace/name`` of each gateway) of every VirtualService
    bound to an ingress gateway (mesh-internal routes are skipped), and of every Gateway API
    HTTPRoute attached to a Gateway (its spec in VirtualService form; routes whose rules only
    redirect are skipped: they send nothing anywhere)."""
    for r in resources:
        ns = str(_get(r.props, "metadata", "namespace") or "default")
        if _is_kind(r.resource_type, GATEWAY_API, "HTTPRoute"):
            as_vs = _http_route_as_virtual_service(r.props, ns)
            refs = [
                f"{_m(ref).get('namespace') or ns}/{_m(ref).get('name')}"
                for ref in _l(_get(r.props, "spec", "parentRefs"))
                if str(_m(ref).get("kind") or "Gateway") == "Gateway"
                and str(_m(ref).get("group") or GATEWAY_API) == GATEWAY_API
            ]
            if refs and as_vs["http"]:
                yield r, ns, as_vs, refs
            continue
        if not _is_kind(r.resource_type, ISTIO_NETWORKING, "VirtualService"):
            continue
        spec = _m(r.props.get("spec"))
        refs = [str(g) for g in _l(spec.get("gateways")) if str(g) != "mesh"]
        if refs:
            yield r, ns, spec, [ref if "/" in ref else f"{ns}/{ref}" for ref in refs]


def _route_kind(resource: PolicyResource) -> str:
    return "HTTPRoute" if _is_kind(resource.resource_type, GATEWAY_API, "HTTPRoute") else "VirtualService"


def validate_gateway_hosts_covered(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    config = _m(args.get_config())
    public = [str(h) for h in _l(config.get("publicHosts"))]
    root_ns = str(config.get("rootNamespace") or DEFAULT_ROOT_NAMESPACE)
    resources = list(args.resources)

    gateways = _gateways(resources)
    guards: list[Guard] = []
    for r in resources:
        if _is_kind(r.resource_type, ISTIO_SECURITY, "AuthorizationPolicy"):
            guards += _authz_policy_guards(r)
        elif _is_kind(r.resource_type, ISTIO_NETWORKING, "EnvoyFilter"):
            guards += _envoy_filter_guards(r)
    proxy_services = _oauth2_proxy_services(resources)

    for r, ns, spec, gateway_keys in _gateway_virtual_services(resources):
        if _routes_only_to(spec, proxy_services, ns):
            continue  # the auth host: everything goes to oauth2-proxy, which signs users in
        vs = f"{_route_kind(r)} {ns}/{_label(r.props, 'metadata', 'name') or r.name}"
        catch_all = _catch_all_routes(spec)
        for key in gateway_keys:
            gw = gateways.get(key) or GatewayInfo(
                key, key.split("/")[0], None, gateway_api=_route_kind(r) == "HTTPRoute")
            applicable = [g for g in guards if g.applies_to(gw, root_ns)]
            for host in (str(h) for h in _l(spec.get("hosts"))):
                if any(host_matches(p, host) for p in public):
                    continue
                if not any(g.covers(host, catch_all) for g in applicable):
                    _report(
                        report_violation,
                        f"host {host!r} ({vs}, gateway {key}) is not covered by a CUSTOM "
                        "AuthorizationPolicy or ext_authz EnvoyFilter on that gateway, so requests "
                        "would reach it without sign-in; add the host to the CUSTOM policy's rules, "
                        "or list it in this policy's `publicHosts` config if it is meant to be "
                        "public",
                        r.urn,
                    )


# --------------------------------------------------------------------------------------------
# Session cookie isolation
# --------------------------------------------------------------------------------------------

LUA_TYPE = "envoy.extensions.filters.http.lua.v3.Lua"
LUA_PER_ROUTE_TYPE = "envoy.extensions.filters.http.lua.v3.LuaPerRoute"
ROUTER_FILTER = "envoy.filters.http.router"
OAUTH2_PROXY_DEFAULT_COOKIE = "_oauth2_proxy"
COOKIES_FORWARDED_ANNOTATION = "authproxy.io/session-cookies"


@dataclass(frozen=True)
class CookieStrip:
    """A Lua filter an EnvoyFilter inserts before a gateway's router, naming a cookie."""

    source: str
    namespace: str
    selector: Mapping[str, Any] | None
    priority: int
    code: str
    filter_name: str
    disabled_routes: tuple[tuple[str, str], ...]
    """(virtual host ``host:port`` or ``*``, route name or ``*``) where it is switched off."""
    targets: tuple[str, ...] | None = None
    """Gateway API Gateways (``namespace/name``) it attaches to by ``targetRefs``, else None."""

    def applies_to(self, gateway: GatewayInfo, root_namespace: str) -> bool:
        return _attaches(self.namespace, self.selector, self.targets, gateway, root_namespace)

    def strips(self, cookie: str) -> bool:
        return f'"{cookie}"' in self.code

    def disabled(self, host: str, route: str) -> bool:
        return any(
            (vhost == "*" or host_matches(vhost, host)) and r in ("*", route)
            for vhost, r in self.disabled_routes
        )


def _cookie_strips(resource: PolicyResource) -> list[CookieStrip]:
    """Lua filters an EnvoyFilter inserts right before the router of gateway listeners, with the
    routes where the same EnvoyFilter switches them off (``LuaPerRoute disabled``)."""
    p = resource.props
    spec = _m(p.get("spec"))
    ns = str(_get(p, "metadata", "namespace") or "default")
    inserted: list[tuple[str, str]] = []
    disabled: list[tuple[str, str]] = []
    for patch in (_m(x) for x in _l(spec.get("configPatches"))):
        if (_get(patch, "match", "context") or "ANY") not in ("GATEWAY", "ANY"):
            continue
        value = _m(_get(patch, "patch", "value"))
        if (
            patch.get("applyTo") == "HTTP_FILTER"
            and _get(patch, "patch", "operation") == "INSERT_BEFORE"
            and _get(patch, "match", "listener", "filterChain", "filter", "subFilter", "name")
            == ROUTER_FILTER
            and LUA_TYPE in str(_field(_m(value.get("typed_config")), "@type") or "")
            and not str(_field(_m(value.get("typed_config")), "@type")).endswith("PerRoute")
        ):
            code = _get(value, "typed_config", "default_source_code", "inline_string") or _get(
                value, "typed_config", "defaultSourceCode", "inlineString")
            inserted.append((str(value.get("name") or ""), str(code or "")))
        elif patch.get("applyTo") in ("VIRTUAL_HOST", "HTTP_ROUTE") and any(
            LUA_PER_ROUTE_TYPE in str(_field(n, "@type") or "") and _truthy(_field(n, "disabled"))
            for _, n in _walk(value)
        ):
            vhost = _m(_get(patch, "match", "routeConfiguration", "vhost"))
            route = _get(vhost, "route", "name") if patch.get("applyTo") == "HTTP_ROUTE" else None
            disabled.append((str(vhost.get("name") or "*"), str(route or "*")))
    selector_value = _m(spec.get("workloadSelector")).get("labels")
    selector = _m(selector_value) if selector_value is not None else None
    source = f"EnvoyFilter {ns}/{_label(p, 'metadata', 'name') or resource.name}"
    priority = int(spec.get("priority") or 0)
    targets = _target_gateways(spec, ns)
    return [CookieStrip(source, ns, selector, priority, code, name, tuple(disabled), targets)
            for name, code in inserted]


def _oauth2_proxy_cookie_names(resources: Sequence[PolicyResource]) -> set[str]:
    """``--cookie-name`` of every oauth2-proxy container (its default when the flag is absent)."""
    names: set[str] = set()
    for r in resources:
        spec = pod_spec(r.resource_type, r.props)
        for c in (_m(x) for x in _l(spec.get("containers"))) if spec is not None else ():
            if re.search(r"(^|/)oauth2-proxy(:|@|$)", str(c.get("image") or "")):
                argv = [str(a) for a in (*_l(c.get("command")), *_l(c.get("args")))]
                names.update(flag_values(argv, "cookie-name") or [OAUTH2_PROXY_DEFAULT_COOKIE])
    return names


def _ext_authz_filter_priority(resources: Sequence[PolicyResource]) -> int | None:
    """The highest priority of an EnvoyFilter that inserts ext_authz (envoy-filter mode)."""
    found = [
        int(_m(r.props.get("spec")).get("priority") or 0)
        for r in resources
        if _is_kind(r.resource_type, ISTIO_NETWORKING, "EnvoyFilter") and _envoy_filter_guards(r)
    ]
    return max(found) if found else None


def _route_destinations(route: Mapping[str, Any], ns: str) -> set[tuple[str, str]]:
    return {_service_of(str(_get(d, "destination", "host") or ""), ns) for d in _l(route.get("route"))}


def validate_session_cookie_stripped(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    config = _m(args.get_config())
    root_ns = str(config.get("rootNamespace") or DEFAULT_ROOT_NAMESPACE)
    resources = list(args.resources)
    cookie_names = _oauth2_proxy_cookie_names(resources)
    if not cookie_names:
        return  # no oauth2-proxy in this stack: no session cookie to keep from the apps
    gateways = _gateways(resources)
    proxy_services = _oauth2_proxy_services(resources)
    strips = [s for r in resources if _is_kind(r.resource_type, ISTIO_NETWORKING, "EnvoyFilter")
              for s in _cookie_strips(r)]
    ext_authz_priority = _ext_authz_filter_priority(resources)
    for r, ns, spec, gateway_keys in _gateway_virtual_services(resources):
        vs = f"{_route_kind(r)} {ns}/{_label(r.props, 'metadata', 'name') or r.name}"
        opted_out = str(_m(_get(r.props, "metadata", "annotations")).get(
            COOKIES_FORWARDED_ANNOTATION) or "") == "forwarded"
        app_routes = [
            str(_m(route).get("name") or "")
            for route in _l(spec.get("http"))
            if (dests := _route_destinations(_m(route), ns)) and not dests <= proxy_services
        ]
        if not app_routes or opted_out:
            continue
        for key in gateway_keys:
            gw = gateways.get(key) or GatewayInfo(
                key, key.split("/")[0], None, gateway_api=_route_kind(r) == "HTTPRoute")
            applicable = [
                s for s in strips
                if s.applies_to(gw, root_ns) and all(s.strips(c) for c in cookie_names)
                and (ext_authz_priority is None or s.priority > ext_authz_priority)
            ]
            for host in (str(h) for h in _l(spec.get("hosts"))):
                for route in app_routes:
                    if not any(not s.disabled(host, route) for s in applicable):
                        _report(
                            report_violation,
                            f"route {route!r} of host {host!r} ({vs}, gateway {key}) sends "
                            f"oauth2-proxy's session cookie ({', '.join(sorted(cookie_names))}) to "
                            "the app: any app could replay it against the others. Strip it at the "
                            "gateway with a Lua filter inserted before the router after ext_authz "
                            "(authproxy's session-cookie-strip EnvoyFilter), or opt the app out "
                            f"explicitly with the annotation {COOKIES_FORWARDED_ANNOTATION}: "
                            "forwarded (apps[].stripSessionCookies: false)",
                            r.urn,
                        )


# --------------------------------------------------------------------------------------------
# Redis auth
# --------------------------------------------------------------------------------------------


_CHART_ARCHIVE = re.compile(r"^(?P<name>.+?)-v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?\.(?:tgz|tar\.gz)$")


def chart_name(props: Mapping[str, Any]) -> str:
    """The chart's name from a Release's `chart`: a name, repo/name, oci://.../name, a local chart
    folder, or a local archive as `helm package` names it (`<name>-<version>.tgz`)."""
    last = str(props.get("chart") or "").rstrip("/").rsplit("/", 1)[-1]
    archive = _CHART_ARCHIVE.match(last)
    return archive.group("name") if archive else last


def redis_chart_auth_problems(chart: str, values: Mapping[str, Any]) -> list[str]:
    """Why a Redis/Valkey chart's values leave auth off (empty when auth is on)."""
    if chart == "redis-ha":  # dandydeveloper/redis-ha
        problems = []
        if values.get("auth") is not True:
            problems.append("auth is not true")
        elif not (values.get("existingSecret") or values.get("redisPassword")):
            problems.append("auth is on but neither existingSecret nor redisPassword is set")
        sentinel = _m(values.get("sentinel"))
        if sentinel.get("auth") is not True:
            problems.append("sentinel.auth is not true (anyone who reaches a sentinel could "
                            "redirect clients to another master)")
        return problems
    # Bitnami redis/valkey and the Valkey project's chart: auth.enabled (defaults differ).
    if _m(values.get("auth")).get("enabled") is not True:
        return ["auth.enabled is not true (set it explicitly: chart defaults differ)"]
    return []


def validate_redis_auth(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == HELM_RELEASE:
        chart = chart_name(args.props)
        if "redis" in chart or "valkey" in chart:
            for problem in redis_chart_auth_problems(chart, _m(args.props.get("values"))):
                _report(
                    report_violation,
                    f"Helm release {args.name!r} (chart {chart}): {problem}; sessions in Redis "
                    "must need a password",
                )
    for c in containers(args):
        argv = _command_line(c)
        store = [v.lower() for v in flag_values(argv, "session-store-type")]
        entry = _env_named(c, "OAUTH2_PROXY_SESSION_STORE_TYPE")
        if entry is not None:
            store.append(str(entry.get("value", "")).lower())
        if "redis" not in store:
            continue
        pw = _env_named(c, REDIS_PASSWORD_ENV)
        if not (pw is not None and _from_secret_key_ref(pw)) and not _has_secret_env_from(c):
            _report(
                report_violation,
                f"{c.where} keeps sessions in Redis without a password; set {REDIS_PASSWORD_ENV} "
                "from a Secret (valueFrom.secretKeyRef)",
            )


# --------------------------------------------------------------------------------------------
# Ambient namespaces: L7 policies belong on waypoints
# --------------------------------------------------------------------------------------------

DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
WAYPOINT_CLASS = "istio-waypoint"
ZTUNNEL_L7_SOURCE = ("requestPrincipals", "notRequestPrincipals", "remoteIpBlocks",
                     "notRemoteIpBlocks")
ZTUNNEL_L7_OPERATION = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")
ZTUNNEL_L4_WHEN = ("source.ip", "source.namespace", "source.principal", "destination.ip",
                   "destination.port")
"""What ztunnel evaluates and what it cannot: istiod's ambient translation of an
AuthorizationPolicy (pilot/pkg/serviceregistry/ambient/authorization.go) drops an ALLOW rule with
any of these HTTP fields and turns a DENY rule with one into "deny", and refuses CUSTOM/AUDIT."""


def _labels_of(props: Mapping[str, Any]) -> Mapping[str, Any]:
    known, meta = _item(props, "metadata") if _has(props, "metadata") else (False, None)
    if not known:
        return {}
    known, labels = _item(_m(meta), "labels") if _has(_m(meta), "labels") else (False, None)
    return _m(labels) if known else {}


def ambient_namespaces(resources: Sequence[PolicyResource]) -> dict[str, str]:
    """Namespaces whose workloads are in ambient mode as far as the stack shows it -> why: a
    Namespace labelled ``istio.io/dataplane-mode: ambient``, a Service (or ServicePatch) or
    Namespace labelled ``istio.io/use-waypoint``, or a waypoint Gateway there."""
    out: dict[str, str] = {}
    for r in resources:
        t = kube_type(r.resource_type)
        if t is None:
            continue
        p = r.props
        labels = _labels_of(p)
        name = _label(p, "metadata", "name")
        ns = _label(p, "metadata", "namespace") or "default"
        if t.group == "core" and t.kind == "Namespace" and name:
            if str(labels.get(DATAPLANE_MODE_LABEL, "")) == "ambient":
                out.setdefault(name, f"Namespace {name} is labelled {DATAPLANE_MODE_LABEL}=ambient")
            elif labels.get(USE_WAYPOINT_LABEL):
                out.setdefault(name, f"Namespace {name} uses a waypoint")
        elif t.group == "core" and t.kind in ("Service", "ServicePatch") and labels.get(USE_WAYPOINT_LABEL):
            out.setdefault(ns, f"Service {ns}/{name} uses the waypoint {labels.get(USE_WAYPOINT_LABEL)}")
        elif (t.group == GATEWAY_API and t.kind == "Gateway"
              and _label(p, "spec", "gatewayClassName") == WAYPOINT_CLASS):
            out.setdefault(ns, f"the waypoint {ns}/{name} runs there")
    return out


def ztunnel_unsupported(kind: str, spec: Mapping[str, Any]) -> list[str]:
    """What ztunnel cannot enforce in a policy bound by ``selector`` (or namespace-wide): HTTP
    fields, CUSTOM/AUDIT, any RequestAuthentication. Empty: an L4 policy (or one with targetRefs)."""
    if _l(spec.get("targetRefs")) or spec.get("targetRef"):
        return []
    if kind == "RequestAuthentication":
        return ["jwtRules (ztunnel never verifies a JWT)"]
    found: list[str] = []
    action = str(spec.get("action") or "ALLOW")
    if action in ("CUSTOM", "AUDIT"):
        found.append(f"action {action}")
    for rule in _l(spec.get("rules")):
        for f in _l(_m(rule).get("from")):
            found += [f"from.source.{k}" for k in ZTUNNEL_L7_SOURCE if _m(_m(f).get("source")).get(k)]
        for t in _l(_m(rule).get("to")):
            found += [f"to.operation.{k}" for k in ZTUNNEL_L7_OPERATION
                      if _m(_m(t).get("operation")).get(k)]
        found += [f"when {w.get('key')}" for w in map(_m, _l(_m(rule).get("when")))
                  if str(w.get("key")) not in ZTUNNEL_L4_WHEN]
    return list(dict.fromkeys(found))


def validate_ambient_l7_on_waypoints(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    ambient = dict(ambient_namespaces(args.resources))
    extra = (args.get_config() or {}).get("ambientNamespaces") or []
    for ns in extra:
        ambient.setdefault(str(ns), "listed in the policy config ambientNamespaces")
    if not ambient:
        return
    for r in args.resources:
        t = kube_type(r.resource_type)
        if t is None or t.group != ISTIO_SECURITY or t.kind not in (
                "AuthorizationPolicy", "RequestAuthentication"):
            continue
        ns = _label(r.props, "metadata", "namespace") or "default"
        if ns not in ambient:
            continue
        problems = ztunnel_unsupported(t.kind, _m(r.props.get("spec")))
        if problems:
            _report(
                report_violation,
                f"{t.kind} {ns}/{_label(r.props, 'metadata', 'name') or r.name} is bound by "
                f"selector in an ambient namespace ({ambient[ns]}), so ztunnel enforces it, which "
                f"cannot read HTTP: {', '.join(problems)}. An ALLOW rule with such fields admits "
                "nothing and a DENY rule denies everything; a RequestAuthentication is ignored. "
                "Attach it to the Service (or the waypoint) with targetRefs instead",
                r.urn,
            )


# --------------------------------------------------------------------------------------------
# oauth2-proxy: how far its cookie, its redirects and its trust reach
# --------------------------------------------------------------------------------------------

_OAUTH2_PROXY_IMAGE = re.compile(r"(^|/)oauth2-proxy(:|@|$)")
_ANY_ADDRESS = {"0.0.0.0/0", "::/0", "0.0.0.0", "*"}


def _is_oauth2_proxy(c: Container) -> bool:
    return bool(_OAUTH2_PROXY_IMAGE.search(str(c.spec.get("image") or "")))


def _setting(c: Container, flag: str) -> list[str]:
    """A list setting from its flags and its literal ``OAUTH2_PROXY_*`` env value (plural list
    names, comma or space separated)."""
    values = flag_values(_command_line(c), flag)
    base = "OAUTH2_PROXY_" + flag.upper().replace("-", "_")
    for env in (base, base + "S"):
        entry = _env_named(c, env)
        if entry is not None and isinstance(entry.get("value"), str):
            values += [v for v in re.split(r"[,\s]+", str(entry.get("value"))) if v]
    return values


def _registrable_enough(domain: str) -> bool:
    """At least two labels and no wildcard: ``.example.com`` yes, ``.com``/``*``/``*.com`` no."""
    bare = domain.lstrip(".")
    return "*" not in bare and len([x for x in bare.split(".") if x]) >= 2


def _within(domain: str, parent: str) -> bool:
    d, p = domain.lstrip("*").lstrip(".").lower(), parent.lstrip(".").lower()
    return d == p or d.endswith("." + p)


def oauth2_proxy_scope_problems(c: Container) -> list[str]:
    """What makes an oauth2-proxy container's cookie, redirects or trust broader than its hosts."""
    argv = _command_line(c)
    problems: list[str] = []
    cookie_domains = _setting(c, "cookie-domain")
    for d in cookie_domains:
        if not _registrable_enough(d):
            problems.append(f"--cookie-domain={d} hands the session cookie to every host under a "
                            "public suffix (or any host); use the stack's own domain")
    for d in _setting(c, "whitelist-domain"):
        host = d.rsplit(":", 1)[0] if d.endswith(":*") or re.search(r":\d+$", d) else d
        if d.endswith(":*"):
            problems.append(f"--whitelist-domain={d} allows redirects to any port of the host")
        if not _registrable_enough(host.removeprefix("*.")):
            problems.append(f"--whitelist-domain={d} allows sign-in redirects to any site")
        elif cookie_domains and not any(_within(host, cd) for cd in cookie_domains):
            problems.append(f"--whitelist-domain={d} lies outside the session cookie's domain(s) "
                            f"{cookie_domains}: sign-in could redirect to a site the stack does "
                            "not protect")
    for v in _setting(c, "cookie-samesite"):
        if v.lower() == "none":
            problems.append("--cookie-samesite=none sends the session cookie on every cross-site "
                            "request; use lax")
    if _setting(c, "trusted-ip"):
        problems.append("--trusted-ip lets requests from those addresses through without any "
                        "session (an authentication bypass); remove it")
    reverse = [v.lower() for v in flag_values(argv, "reverse-proxy")]
    if reverse and reverse[-1] not in _FALSE:
        proxies = _setting(c, "trusted-proxy-ip")
        if not proxies:
            problems.append("--reverse-proxy without --trusted-proxy-ip trusts X-Forwarded-* and "
                            "X-Real-IP from every caller (forged client addresses in its logs); "
                            "list the gateway's address ranges")
        elif _ANY_ADDRESS & set(proxies):
            problems.append(f"--trusted-proxy-ip={sorted(_ANY_ADDRESS & set(proxies))[0]} trusts "
                            "every caller to name the client address; list the gateway's ranges")
    return problems


def validate_oauth2_proxy_scope(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for c in containers(args):
        if _is_oauth2_proxy(c):
            for problem in oauth2_proxy_scope_problems(c):
                _report(report_violation, f"{c.where}: {problem}")


# --------------------------------------------------------------------------------------------
# Group checks at the gateway, HSTS on every gateway host
# --------------------------------------------------------------------------------------------

GROUPS_CLAIM = "request.auth.claims[groups]"
AUTHORIZE_AT_ANNOTATION = "authproxy.io/authorize-at"
"""Set to ``sidecar`` on an app's sidecar AuthorizationPolicy whose group check is deliberately
not repeated at the gateway (``apps[].authorizeAt: sidecar``)."""
HSTS = "strict-transport-security"
_MAX_AGE = re.compile(r"max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


def _group_sets(spec: Mapping[str, Any], values_key: str) -> list[tuple[frozenset[str], Mapping[str, Any]]]:
    """(groups, rule) of every rule that conditions on the ``groups`` claim with ``values_key``
    (``values`` in ALLOW policies, ``notValues`` in DENY policies)."""
    out = []
    for rule in (_m(r) for r in _l(spec.get("rules"))):
        for cond in (_m(w) for w in _l(rule.get("when"))):
            if cond.get("key") == GROUPS_CLAIM and _l(cond.get(values_key)):
                out.append((frozenset(str(g) for g in _l(cond.get(values_key))), rule))
    return out


def _policy_selector(spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    value = _m(spec.get("selector")).get("matchLabels")
    return _m(value) if value is not None else None


def validate_groups_checked_at_gateway(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    config = _m(args.get_config())
    root_ns = str(config.get("rootNamespace") or DEFAULT_ROOT_NAMESPACE)
    resources = list(args.resources)
    gateways = _gateways(resources)
    # Hosts each gateway routes into each namespace.
    routed: dict[str, list[tuple[str, str]]] = {}
    for _r, ns, spec, keys in _gateway_virtual_services(resources):
        dest_ns = {svc_ns for route in _l(spec.get("http"))
                   for _, svc_ns in _route_destinations(_m(route), ns)}
        for key in keys:
            for host in (str(h) for h in _l(spec.get("hosts"))):
                for n in dest_ns:
                    routed.setdefault(n, []).append((key, host))
    # Group checks at gateways: (gateway key, groups, host patterns or None for every host).
    at_gateway: list[tuple[str, frozenset[str], tuple[str, ...] | None]] = []
    sidecar: list[tuple[PolicyResource, str, str, frozenset[str]]] = []
    for r in resources:
        if not _is_kind(r.resource_type, ISTIO_SECURITY, "AuthorizationPolicy"):
            continue
        spec = _m(r.props.get("spec"))
        meta = _m(r.props.get("metadata"))
        ns = str(meta.get("namespace") or "default")
        action = str(spec.get("action") or "ALLOW")
        targets = _target_gateways(spec, ns)
        on = [k for k, gw in gateways.items()
              if _attaches(ns, _policy_selector(spec), targets, gw, root_ns)]
        # A Gateway API Gateway the stack attaches to but does not create (an existing one,
        # istio.gatewayApi.create false): targetRefs bind the policy to it all the same.
        on += [t for t in targets or () if t not in gateways]
        if action == "DENY" and on:
            for groups, rule in _group_sets(spec, "notValues"):
                ops = [_m(_m(t).get("operation")) for t in _l(rule.get("to"))] or [{}]
                for op in ops:
                    hosts = tuple(str(h) for h in _l(op.get("hosts"))) or None
                    at_gateway += [(k, groups, hosts) for k in on]
        elif action == "ALLOW" and not on and targets is None:
            annotations = _m(meta.get("annotations"))
            if str(annotations.get(AUTHORIZE_AT_ANNOTATION) or "") == "sidecar":
                continue
            name = str(meta.get("name") or r.name)
            sidecar += [(r, ns, name, groups) for groups, _ in _group_sets(spec, "values")]
    for r, ns, name, groups in sidecar:
        served = routed.get(ns, [])
        if not served:
            continue  # no gateway routes into this namespace: not an ingress app
        checked = any(
            k == key and g == groups and (pats is None or any(host_matches(p, host) for p in pats))
            for key, host in served for k, g, pats in at_gateway
        )
        if not checked:
            _report(
                report_violation,
                f"AuthorizationPolicy {ns}/{name} checks groups {sorted(groups)} only at the app's "
                f"sidecar: no DENY AuthorizationPolicy on the gateway refuses tokens without them "
                f"for the hosts routed to {ns} ({', '.join(sorted({h for _, h in served}))}). A pod "
                "that policy misses (other labels, no sidecar) lets every signed-in user in. "
                "Check the groups at the gateway too (authproxy: apps[].authorizeAt: both), or "
                f"mark a deliberate sidecar-only check with the annotation "
                f"{AUTHORIZE_AT_ANNOTATION}: sidecar",
                r.urn,
            )


def _hsts_max_age(headers: Any) -> int | None:
    """The HSTS max-age among Envoy ``HeaderValueOption``s or Istio/Gateway API header maps."""
    best: int | None = None
    items: list[tuple[str, str]] = []
    if isinstance(headers, Mapping):
        items = [(str(k), str(v)) for k, v in headers.items() if not isinstance(v, Mapping)]
    for h in (_m(x) for x in _l(headers)):
        inner = _m(h.get("header")) or h
        items.append((str(inner.get("key") or inner.get("name") or ""), str(inner.get("value") or "")))
    for key, value in items:
        m = _MAX_AGE.search(value) if key.lower() == HSTS else None
        if m:
            best = max(best or 0, int(m.group(1)))
    return best


def _envoy_filter_hsts(resource: PolicyResource) -> list[tuple[str, int, Mapping[str, Any] | None,
                                                                  tuple[str, ...] | None, str]]:
    """(virtual host name, max-age, selector, targets, namespace) of every VIRTUAL_HOST patch of
    a gateway EnvoyFilter that adds HSTS to responses."""
    p = resource.props
    spec = _m(p.get("spec"))
    ns = str(_get(p, "metadata", "namespace") or "default")
    selector_value = _m(spec.get("workloadSelector")).get("labels")
    selector = _m(selector_value) if selector_value is not None else None
    out = []
    for patch in (_m(x) for x in _l(spec.get("configPatches"))):
        if patch.get("applyTo") != "VIRTUAL_HOST" or (_get(patch, "match", "context") or "ANY") not in (
                "GATEWAY", "ANY"):
            continue
        value = _m(_get(patch, "patch", "value"))
        age = _hsts_max_age(value.get("response_headers_to_add") or value.get("responseHeadersToAdd"))
        if age is not None:
            vhost = str(_get(patch, "match", "routeConfiguration", "vhost", "name") or "*")
            out.append((vhost, age, selector, _target_gateways(spec, ns), ns))
    return out


def _route_level_hsts(resource: PolicyResource) -> int | None:
    """The smallest HSTS max-age every route of a VirtualService (``headers.response``) or every
    rule of an HTTPRoute (``ResponseHeaderModifier``) sets; None if one route sets none."""
    spec = _m(resource.props.get("spec"))
    ages: list[int | None] = []
    if _is_kind(resource.resource_type, GATEWAY_API, "HTTPRoute"):
        for rule in (_m(x) for x in _l(spec.get("rules"))):
            mods = [_m(_m(f).get("responseHeaderModifier")) for f in _l(rule.get("filters"))
                    if _m(f).get("type") == "ResponseHeaderModifier"]
            ages.append(max((a for m in mods for a in (_hsts_max_age(m.get("set")),
                                                        _hsts_max_age(m.get("add"))) if a is not None),
                            default=None))
    else:
        for route in (_m(x) for x in _l(spec.get("http"))):
            resp = _m(_get(route, "headers", "response"))
            ages.append(max((a for a in (_hsts_max_age(resp.get("set")), _hsts_max_age(resp.get("add")))
                             if a is not None), default=None))
    if not ages or any(a is None for a in ages):
        return None
    return min(a for a in ages if a is not None)


def validate_hsts_on_gateway_hosts(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    config = _m(args.get_config())
    root_ns = str(config.get("rootNamespace") or DEFAULT_ROOT_NAMESPACE)
    resources = list(args.resources)
    gateways = _gateways(resources)
    filters = [x for r in resources if _is_kind(r.resource_type, ISTIO_NETWORKING, "EnvoyFilter")
               for x in _envoy_filter_hsts(r)]
    for r, ns, spec, keys in _gateway_virtual_services(resources):
        route_age = _route_level_hsts(r)
        vs = f"{_route_kind(r)} {ns}/{_label(r.props, 'metadata', 'name') or r.name}"
        for key in keys:
            gw = gateways.get(key) or GatewayInfo(
                key, key.split("/")[0], None, gateway_api=_route_kind(r) == "HTTPRoute")
            for host in (str(h) for h in _l(spec.get("hosts"))):
                ages = [age for vhost, age, sel, targets, fns in filters
                        if _attaches(fns, sel, targets, gw, root_ns)
                        and (vhost == "*" or (vhost.rsplit(":", 1)[-1] in ("443", "*")
                                              and host_matches(vhost.rsplit(":", 1)[0], host)))]
                if route_age is not None:
                    ages.append(route_age)
                if not ages or max(ages) <= 0:
                    _report(
                        report_violation,
                        f"host {host!r} ({vs}, gateway {key}) gets no Strict-Transport-Security "
                        "header with a max-age above 0: a browser that once typed http:// can be "
                        "kept on plain HTTP (SSL stripping). Add it at the gateway (authproxy: "
                        "istio.gateway.hsts) or on every route",
                        r.urn,
                    )


# --------------------------------------------------------------------------------------------
# The policies
# --------------------------------------------------------------------------------------------

def _root_namespace(what: str) -> dict[str, Any]:
    """The ``rootNamespace`` config property of the stack policies that place objects on gateways."""
    return {"type": "string", "default": DEFAULT_ROOT_NAMESPACE,
            "description": f"Istio's root namespace ({what} there apply mesh-wide)."}


POLICIES: list[Policy] = [
    ResourceValidationPolicy(
        name="oidc-client-exact-https-redirect-uris",
        description="OIDC clients list exact https redirect and post-logout URIs: no wildcards, "
        "no http, no relative URIs.",
        enforcement_level=MANDATORY,
        validate=validate_oidc_redirect_uris,
    ),
    ResourceValidationPolicy(
        name="oidc-client-pkce-s256",
        description="OIDC clients with the authorization-code flow require PKCE with S256.",
        enforcement_level=MANDATORY,
        validate=validate_oidc_pkce,
    ),
    ResourceValidationPolicy(
        name="oidc-client-no-implicit-or-password-grant",
        description="OIDC clients have the implicit flow and direct access (password) grants off.",
        enforcement_level=MANDATORY,
        validate=validate_oidc_grants,
    ),
    ResourceValidationPolicy(
        name="oauth2-proxy-secrets-from-secret-refs",
        description="oauth2-proxy secrets reach the container only through secretKeyRef: no "
        "secret flags, no literal secret env values, no secrets in ConfigMaps or URLs.",
        enforcement_level=MANDATORY,
        validate=validate_proxy_secret_refs,
    ),
    ResourceValidationPolicy(
        name="oauth2-proxy-cookie-secure",
        description="oauth2-proxy's session cookie stays Secure (no --cookie-secure=false).",
        enforcement_level=MANDATORY,
        validate=validate_cookie_secure,
    ),
    ResourceValidationPolicy(
        name="containers-run-as-non-root",
        description="Every container runs as a non-root user (runAsNonRoot: true, runAsUser != 0).",
        enforcement_level=MANDATORY,
        validate=validate_non_root,
    ),
    ResourceValidationPolicy(
        name="containers-read-only-root-filesystem",
        description="Every container has a read-only root filesystem.",
        enforcement_level=MANDATORY,
        validate=validate_read_only_root,
    ),
    ResourceValidationPolicy(
        name="containers-no-privilege-escalation",
        description="Every container sets allowPrivilegeEscalation: false, is not privileged and "
        "adds no SYS_ADMIN/ALL capabilities.",
        enforcement_level=MANDATORY,
        validate=validate_no_privilege_escalation,
    ),
    ResourceValidationPolicy(
        name="containers-resource-limits",
        description="Every container has CPU and memory limits.",
        enforcement_level=MANDATORY,
        validate=validate_resource_limits,
    ),
    ResourceValidationPolicy(
        name="images-pinned",
        description="Container images and Helm charts are pinned to a version (no latest, "
        "untagged or floating tags; exact chart versions).",
        enforcement_level=MANDATORY,
        validate=validate_pinned_images,
    ),
    ResourceValidationPolicy(
        name="ext-authz-fails-closed",
        description="ext_authz fails closed: no EnvoyFilter with failure_mode_allow, no mesh "
        "config extension provider with failOpen (Helm values, IstioOperator, mesh ConfigMap).",
        enforcement_level=MANDATORY,
        validate=validate_ext_authz_fail_closed,
    ),
    StackValidationPolicy(
        name="exported-mesh-config-fails-closed",
        description="The stack output meshConfig (for istiod managed elsewhere) has no ext_authz "
        "provider with failOpen.",
        enforcement_level=MANDATORY,
        validate=validate_exported_mesh_config,
    ),
    StackValidationPolicy(
        name="gateway-hosts-behind-ext-authz",
        description="Every host a VirtualService routes through an ingress gateway is checked by a "
        "CUSTOM AuthorizationPolicy or ext_authz EnvoyFilter on that gateway, serves only "
        "oauth2-proxy (the auth host), or is listed in publicHosts.",
        enforcement_level=MANDATORY,
        validate=validate_gateway_hosts_covered,
        config_schema=PolicyConfigSchema(
            properties={
                "publicHosts": {
                    "type": "array",
                    "items": {"type": "string"},
                    "default": [],
                    "description": "Hosts (or *.suffix patterns) deliberately served without "
                    "sign-in.",
                },
                "rootNamespace": _root_namespace("policies"),
            }
        ),
    ),
    StackValidationPolicy(
        name="session-cookie-stripped",
        description="Every gateway route to an app removes oauth2-proxy's cookies (session, split "
        "parts, CSRF) after ext_authz, unless the app's VirtualService opts out explicitly "
        "(annotation authproxy.io/session-cookies: forwarded).",
        enforcement_level=MANDATORY,
        validate=validate_session_cookie_stripped,
        config_schema=PolicyConfigSchema(properties={"rootNamespace": _root_namespace("EnvoyFilters")}),
    ),
    ResourceValidationPolicy(
        name="oauth2-proxy-cookie-and-redirect-scope",
        description="oauth2-proxy's session cookie and sign-in redirects stay on the stack's "
        "domain (no public-suffix or wildcard cookie/whitelist domains, no port wildcards, no "
        "redirect target outside the cookie domain, no SameSite=None), no --trusted-ip, and behind "
        "a reverse proxy only named --trusted-proxy-ip ranges (never everyone).",
        enforcement_level=MANDATORY,
        validate=validate_oauth2_proxy_scope,
    ),
    StackValidationPolicy(
        name="groups-checked-at-the-gateway",
        description="An app's group check does not live only in its sidecar: every sidecar ALLOW "
        "policy with a groups condition, in a namespace a gateway routes to, has a DENY policy "
        "with the same groups on that gateway for those hosts, unless annotated "
        "authproxy.io/authorize-at: sidecar.",
        enforcement_level=MANDATORY,
        validate=validate_groups_checked_at_gateway,
        config_schema=PolicyConfigSchema(properties={"rootNamespace": _root_namespace("policies")}),
    ),
    StackValidationPolicy(
        name="hsts-on-gateway-hosts",
        description="Every host routed through an ingress gateway answers with "
        "Strict-Transport-Security (max-age above 0): from a gateway EnvoyFilter's virtual host "
        "headers, or on every route.",
        enforcement_level=MANDATORY,
        validate=validate_hsts_on_gateway_hosts,
        config_schema=PolicyConfigSchema(properties={"rootNamespace": _root_namespace("EnvoyFilters")}),
    ),
    StackValidationPolicy(
        name="ambient-l7-policies-on-waypoints",
        description="In ambient namespaces, AuthorizationPolicies with HTTP fields (or CUSTOM/AUDIT) "
        "and RequestAuthentications attach to a Service or waypoint with targetRefs, never by "
        "selector (ztunnel would enforce them without reading HTTP).",
        enforcement_level=MANDATORY,
        validate=validate_ambient_l7_on_waypoints,
        config_schema=PolicyConfigSchema(
            properties={
                "ambientNamespaces": {
                    "type": "array",
                    "items": {"type": "string"},
                    "default": [],
                    "description": "Namespaces enrolled in ambient mode outside this stack.",
                },
            }
        ),
    ),
    ResourceValidationPolicy(
        name="redis-auth-enabled",
        description="Redis keeps auth on: Redis/Valkey Helm charts have auth (and sentinel auth) "
        "enabled, and oauth2-proxy's Redis password comes from a Secret.",
        enforcement_level=MANDATORY,
        validate=validate_redis_auth,
    ),
]
"""Every policy of the pack, in the order docs/policies.md lists them."""
