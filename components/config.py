"""The stack's typed configuration and its validation.

This is the only module that knows configuration keys. ``__main__.py`` collects the raw
values of the ``authproxy:*`` keys and calls :func:`load`; every component receives parts of the
resulting :class:`StackConfig` (or values derived from it) as typed arguments.

Validation runs before any resource is created. Every problem is reported with the full config key
(``authproxy:apps[1].host``) and how to fix it; all problems are collected and reported together.
Secret values never enter this module: only whether a secret key is set.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, cast

import pulumi
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

from components.common import OAUTH2_PREFIX, format_duration
from components.cookies import COOKIE_NAME
from components.versions import OAUTH2_PROXY_REPOSITORY, OAUTH2_PROXY_VERSION

NAMESPACE = "authproxy"
"""The Pulumi config namespace (the project name)."""

# Secrets are flat top-level keys so that `pulumi config set --secret` marks only them secret and
# the structured objects stay readable in `pulumi config`.
SECRET_KEYS = {
    "keycloakAdminPassword": "password of the Keycloak admin user (keycloak.admin.auth=password)",
    "keycloakAdminClientSecret": "secret of the Keycloak admin client (keycloak.admin.auth=client-credentials)",
    "externalRedisPassword": "password of an external Redis (redis.mode=external)",
}

CLUSTER_ADDRESS_RANGES = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
    "127.0.0.0/8", "::1/128",
)
"""Default of ``proxy.trustedProxyIps`` (oauth2-proxy's ``--trusted-proxy-ip``): the private
(RFC 1918, RFC 6598, IPv6 ULA) ranges pod networks use, and loopback (the pod itself; the local
harness). Only callers there may name the client address; anything else is logged by its own
address. oauth2-proxy's NetworkPolicy admits only the gateway and its own namespace anyway."""


class ConfigError(pulumi.RunError):
    """Invalid stack configuration. A RunError, so Pulumi prints the message without a traceback."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"  - {key}: {msg}" for key, msg in problems]
        super().__init__(
            f"invalid stack configuration ({len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}); nothing was created:\n" + "\n".join(lines)
        )


# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})+$")
_DNS_LABEL_RE = re.compile(rf"^{_LABEL}$")
_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def is_hostname(value: str) -> bool:
    """A lower-case DNS name with at least two labels (no wildcard, no port, no scheme)."""
    return bool(_HOST_RE.match(value))


def _hostname(value: Any) -> str:
    if not isinstance(value, str) or not is_hostname(value):
        raise ValueError(
            f"{value!r} is not a valid host name; use a lower-case DNS name such as "
            "'app.example.com' (no scheme, port, path or wildcard)"
        )
    return value


def _dns_label(value: Any) -> str:
    if not isinstance(value, str) or not _DNS_LABEL_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes name; use lower-case letters, digits and '-' "
            "(at most 63 characters, starting and ending with a letter or digit)"
        )
    return value


def parse_duration(value: Any) -> int:
    """Parse '90s', '5m', '1h30m' or a number of seconds into whole seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is negative; durations are >= 0")
        return value
    if isinstance(value, str):
        m = _DURATION_RE.match(value.strip())
        if value.strip() == "0":
            return 0
        if m and any(m.groups()):
            h, mi, s = (int(g) if g else 0 for g in m.groups())
            return h * 3600 + mi * 60 + s
    raise ValueError(
        f"{value!r} is not a duration; write it like '30s', '5m', '8h' or '1h30m' (or 0)"
    )


Hostname = Annotated[str, BeforeValidator(_hostname)]
DnsLabel = Annotated[str, BeforeValidator(_dns_label)]
Duration = Annotated[int, BeforeValidator(parse_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        strict=False,
    )


class Image(_Model):
    """A container image pinned to a tag (never `latest`)."""

    repository: str = Field(description="Image repository, e.g. a mirror in an air-gapped cluster.")
    tag: str = Field(description="Pinned tag; `latest` and empty tags are rejected.")

    @field_validator("tag")
    @classmethod
    def _pinned(cls, v: str) -> str:
        if not v or v == "latest":
            raise ValueError(
                "the image tag must be pinned to a release; set an explicit version instead of "
                f"{v!r} (for example 'v7.15.2')"
            )
        return v

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


class HelmChart(_Model):
    """A Helm chart pinned to a version, overridable for mirrors."""

    repository: str = Field(description="Chart repository URL (http(s) or oci://).")
    name: str = Field(description="Chart name in that repository.")
    version: str = Field(description="Exact chart version.")

    @field_validator("version")
    @classmethod
    def _exact(cls, v: str) -> str:
        if not re.match(r"^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$", v):
            raise ValueError(f"{v!r} is not an exact chart version; pin one such as '4.1.2'")
        return v


# --------------------------------------------------------------------------------------------
# Applications
# --------------------------------------------------------------------------------------------


def public_path_covers(path: str, target: str) -> bool:
    """Whether an Istio-style path match (exact, or prefix ending in '*') covers ``target``."""
    if path == "*":
        return True
    if path.endswith("*"):
        return target.startswith(path[:-1])
    return path == target


def path_overlaps_oauth2(path: str) -> bool:
    """A public path overlaps oauth2-proxy's endpoints if it covers /oauth2/ or lies under it."""
    stem = path[:-1] if path.endswith("*") else path
    return (
        public_path_covers(path, OAUTH2_PREFIX)
        or public_path_covers(path, OAUTH2_PREFIX.rstrip("/"))
        or stem.lower().startswith(OAUTH2_PREFIX.rstrip("/"))
    )


_GROUP_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
_GROUP_RE = re.compile(rf"^(?:{_GROUP_SEGMENT}|(?:/{_GROUP_SEGMENT})+)$")


def group_path(group: str) -> str:
    """The full Keycloak group path of a configured group: ``sre`` is the top-level group
    ``/sre``; ``/platform/sre`` is already a path. The stack's group mapper puts full paths into
    the token's ``groups`` claim, so a group named ``sre`` under another parent never satisfies
    ``sre``."""
    return group if group.startswith("/") else "/" + group


def _groups(v: tuple[str, ...]) -> tuple[str, ...]:
    for g in v:
        if not _GROUP_RE.match(g):
            raise ValueError(
                f"{g!r} is not a group; write a top-level group's name ('sre', letters, digits, "
                "'_', '.', '-') or a full group path ('/platform/sre')"
            )
    paths = [group_path(g) for g in v]
    if len(set(paths)) != len(paths):
        raise ValueError("lists a group twice ('sre' and '/sre' are the same group); remove the "
                         "duplicate")
    return v


def _label_map(v: dict[str, str], what: str) -> dict[str, str]:
    for key, value in v.items():
        if not re.match(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$", key) or (
            value and not re.match(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$", value)
        ):
            raise ValueError(f"{key!r}: {value!r} is not a valid Kubernetes label of {what}")
    return v


class ServiceRef(_Model):
    """The Kubernetes Service that serves an application."""

    name: DnsLabel = Field(description="Service name.")
    namespace: DnsLabel = Field("default", description="Namespace of the Service and its pods.")
    port: Port = Field(description="Service port.")


WAYPOINT_NAME = "authproxy-waypoint"
"""Default name of the waypoint the stack creates for ambient apps (one per namespace). Not
Istio's conventional `waypoint`, so the stack never adopts (and on destroy deletes) a waypoint
somebody else created under that name."""


class AppWaypoint(_Model):
    """The waypoint of an ambient app: created by the stack, or an existing one."""

    name: DnsLabel = Field(WAYPOINT_NAME, description="Name of the waypoint Gateway.")
    create: bool = Field(
        True,
        description="Create the waypoint (a Gateway API Gateway of class `istio-waypoint` in the "
        "app's namespace, for Service traffic). `false`: use an existing waypoint of that name, "
        "which must accept Service traffic (`istio.io/waypoint-for: service` or `all`).",
    )
    namespace: DnsLabel | None = Field(
        None,
        description="Namespace of an existing waypoint (`create: false`) outside the app's "
        "namespace (label `istio.io/use-waypoint-namespace`); unset = the app's namespace.",
    )
    service_account: DnsLabel | None = Field(
        None,
        description="Service account of the waypoint's pods, whose identity alone may reach the "
        "app's pods; unset = the waypoint's name (istiod's default, unless the Gateway carries "
        "`gateway.istio.io/service-account`).",
    )

    @property
    def identity_account(self) -> str:
        return self.service_account or self.name


class App(_Model):
    """One protected application."""

    name: DnsLabel = Field(description="Short name, used in resource names.")
    host: Hostname = Field(description="Host name the app is served on; must be under `domain`.")
    service: ServiceRef = Field(description="Where the gateway sends the app's traffic.")
    groups: tuple[str, ...] = Field(
        (),
        description="Keycloak groups allowed in; empty means every signed-in user. A name "
        "(`sre`) is the top-level group `/sre`; a full path (`/platform/sre`) names a subgroup. "
        "Tokens carry full group paths, so a same-named group elsewhere in the realm never "
        "matches.",
    )
    public_paths: tuple[str, ...] = Field(
        (),
        description="Paths served without sign-in: exact (`/healthz`) or prefix ending in `*` "
        "(`/static/*`). Never anything under `/oauth2/`.",
    )
    api_clients: bool = Field(
        False,
        description="Accept `Authorization: Bearer` Keycloak tokens from machine clients without "
        "the browser flow (the token is still verified at the gateway and the sidecar).",
    )
    api_paths: tuple[str, ...] = Field(
        (),
        description="Path regexes (oauth2-proxy `--api-route`) that answer 401 instead of "
        "redirecting to sign-in, e.g. `^/api/`.",
    )
    authorize_at: Literal["sidecar", "waypoint", "gateway", "both"] = Field(
        "both",
        description="Where the JWT and group checks run: at the ingress gateway and again at the "
        "app's own proxy (`both`, the default: its sidecar, or its waypoint when ambient), at the "
        "gateway only (`gateway`: no app-side policies; in-mesh callers reach the pods unchecked), "
        "at the sidecar only (`sidecar`: discouraged; a pod the sidecar policies miss lets every "
        "signed-in user in, and `pulumi preview` says so) or, for an ambient app, at its waypoint "
        "only (`waypoint`). Both ext_authz modes check at the gateway.",
    )
    dataplane: Literal["sidecar", "ambient"] = Field(
        "sidecar",
        description="How the app's pods are in the mesh: `sidecar` (an Envoy sidecar per pod) or "
        "`ambient` (Istio ambient mode: ztunnel at the pods, the app checks in a waypoint; needs "
        "Istio >= 1.24 (`istio.version`) and the Gateway API CRDs). Ambient apps get a waypoint, "
        "their Service is labelled to use it (also for ingress traffic), and ztunnel refuses "
        "every connection to their pods that does not come from the waypoint (docs/ambient.md).",
    )
    waypoint: AppWaypoint | None = Field(
        None,
        description="The ambient app's waypoint (only with `dataplane: ambient`; default: the "
        "stack creates `authproxy-waypoint` in the app's namespace).",
    )
    workload_labels: dict[str, str] | None = Field(
        None,
        description="Labels of the app's pods (the ones its Service selects), which the sidecar "
        "policies, the STRICT mTLS PeerAuthentication and the preflight check select (for an "
        "ambient app: ztunnel's L4 policy and the HBONE NetworkPolicy). Required when the sidecar "
        "checks (authorizeAt `both` or `sidecar`) and for ambient apps: nothing is guessed. Read "
        "them with `kubectl get service -n <namespace> <name> -o jsonpath='{.spec.selector}'`.",
    )
    strip_session_cookies: bool = Field(
        True,
        description="Remove oauth2-proxy's cookies (the session cookie `session.cookieName`, its "
        "split parts `_0`, `_1`..., the CSRF cookies) from the `Cookie` header at the gateway "
        "before requests reach the app, so no app can replay another user's session elsewhere. "
        "Set `false` only for an app that really needs the session cookie; it then gets every "
        "cookie of the domain.",
    )

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _groups(v)

    @field_validator("workload_labels")
    @classmethod
    def _workload_labels(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and not v:
            raise ValueError(
                "is empty, which would select every pod of the namespace; give the labels of the "
                "app's pods (its Service's selector)"
            )
        return None if v is None else _label_map(v, "the app's pods")

    @field_validator("public_paths")
    @classmethod
    def _public_paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            if not p.startswith("/"):
                raise ValueError(f"{p!r} must start with '/' (e.g. '/healthz' or '/static/*')")
            if "*" in p[:-1] or re.search(r"%|\\|/\.\.?(/|\*?$)|//|\?|#", p):
                raise ValueError(
                    f"{p!r} is not a plain path; use an exact path or a prefix ending in '*', "
                    "without '..', '//', '%', '?', '#' or inner '*'"
                )
            if path_overlaps_oauth2(p):
                raise ValueError(
                    f"{p!r} would expose oauth2-proxy's {OAUTH2_PREFIX} endpoints (or everything); "
                    f"narrow it to the app's own paths, e.g. '/static/*' (`{OAUTH2_PREFIX}` is "
                    "already routed to oauth2-proxy)"
                )
        return v

    @field_validator("api_paths")
    @classmethod
    def _api_paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"{p!r} is not a valid regular expression ({e})") from None
            if not p.startswith("^/"):
                raise ValueError(f"{p!r} must be anchored at the path start, like '^/api/'")
        return v

    @property
    def selector_labels(self) -> dict[str, str]:
        """The configured labels of the app's pods (empty when not configured: allowed only
        with authorizeAt=gateway, where no policy selects the pods)."""
        return dict(self.workload_labels or {})

    @property
    def group_paths(self) -> tuple[str, ...]:
        """The app's groups as the full paths the token's ``groups`` claim carries."""
        return tuple(group_path(g) for g in self.groups)

    @property
    def sidecar_checks(self) -> bool:
        """Whether the app's sidecar gets policies (authorizeAt sidecar or both; an ambient app
        has no sidecar: its waypoint checks)."""
        return not self.ambient and self.authorize_at in ("sidecar", "both")

    @property
    def waypoint_checks(self) -> bool:
        """Whether the ambient app's waypoint gets the JWT and group policies (authorizeAt
        waypoint or both)."""
        return self.ambient and self.authorize_at in ("waypoint", "both")

    @property
    def admits_gateway_only(self) -> bool:
        """Whether the app's own proxy (its sidecar, or an ambient app's waypoint) checks requests
        and so admits a user's token only from the gateway's workload identity
        (``istio.gateway.serviceAccount``)."""
        return self.sidecar_checks or self.waypoint_checks

    @property
    def ambient(self) -> bool:
        return self.dataplane == "ambient"

    @property
    def waypoint_ref(self) -> AppWaypoint:
        """The ambient app's waypoint (the default one when `waypoint` is unset)."""
        return self.waypoint or AppWaypoint()

    @property
    def waypoint_namespace(self) -> str:
        return self.waypoint_ref.namespace or self.service.namespace

    @property
    def url(self) -> str:
        return f"https://{self.host}/"


# --------------------------------------------------------------------------------------------
# Keycloak
# --------------------------------------------------------------------------------------------


class KeycloakAdmin(_Model):
    """How the stack authenticates to Keycloak's admin API."""

    auth: Literal["password", "client-credentials"] = Field(
        "password",
        description="`password` (username + secret `keycloakAdminPassword`) or "
        "`client-credentials` (clientId + secret `keycloakAdminClientSecret`).",
    )
    realm: str = Field("master", description="Realm the admin credentials belong to.")
    username: str = Field("admin", description="Admin user (auth=password).")
    client_id: str = Field("admin-cli", description="Admin client id.")


class DemoUser(_Model):
    """A demo user (dev stacks only), created with a random initial password."""

    username: DnsLabel = Field(description="Login name.")
    email: str | None = Field(None, description="E-mail; default `<username>@<domain>`.")
    first_name: str = Field("Demo", description="Given name.")
    last_name: str | None = Field(None, description="Family name; default the username.")
    groups: tuple[str, ...] = Field(
        (), description="Groups the user joins (names or full paths, as in `apps[].groups`)."
    )

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _groups(v)


class InClusterPeer(_Model):
    """Where a dependency runs inside the cluster, for NetworkPolicy egress rules."""

    namespace: DnsLabel = Field(description="Namespace of the pods.")
    pod_labels: dict[str, str] = Field(description="Labels of the pods.")
    port: Port = Field(description="Container port the pods listen on.")


class Keycloak(_Model):
    """The Keycloak server, realm and client."""

    url: str = Field(description="Public base URL of Keycloak (https), without `/realms/...`.")
    realm: DnsLabel = Field("authproxy", description="Realm name.")
    realm_mode: Literal["create", "existing"] = Field(
        "create", description="`create` the realm, or use an `existing` one (looked up)."
    )
    client_id: str = Field("oauth2-proxy", description="Client id of the OIDC client created.")
    admin: KeycloakAdmin = Field(default_factory=KeycloakAdmin, description="Admin API access.")
    manage_groups: bool = Field(
        True,
        description="Create the groups apps name; false looks them up in the realm instead "
        "(e.g. groups synced from a directory).",
    )
    demo_users: tuple[DemoUser, ...] = Field(
        (), description="Demo users (dev only); passwords are exported as secret outputs."
    )
    in_cluster: InClusterPeer | None = Field(
        None,
        description="Keycloak's pods when it runs in this cluster (narrows oauth2-proxy's egress "
        "NetworkPolicy); unset means egress to the URL's port anywhere.",
    )
    ca_certificate: str | None = Field(
        None,
        description="PEM certificate of the CA that signed Keycloak's TLS certificate (a private "
        "CA): trusted by the admin API calls `pulumi up` makes, by oauth2-proxy (mounted from a "
        "ConfigMap, `--provider-ca-file`) and by an istiod the stack installs; an existing istiod "
        "needs it mounted (docs/deploy.md). Unset = the system trust stores.",
    )

    client_timeout: int = Field(
        30,
        ge=1,
        le=600,
        description="Seconds each admin API call of `pulumi up` may take (the Keycloak provider's "
        "client timeout; its SDK default of 5 s fails against a busy Keycloak, whose password "
        "hashing alone can take seconds per login).",
    )

    @field_validator("ca_certificate")
    @classmethod
    def _ca_certificate(cls, v: str | None) -> str | None:
        if v is not None and "-----BEGIN CERTIFICATE-----" not in v:
            raise ValueError(
                "is not a PEM certificate; paste the CA certificate including its "
                "'-----BEGIN CERTIFICATE-----' line (e.g. `pulumi config set --path "
                "authproxy:keycloak.caCertificate -- \"$(cat ca.pem)\"`)"
            )
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        m = re.match(r"^https://([a-z0-9.-]+)(:\d{1,5})?/?$", v)
        if not m or not is_hostname(m.group(1)):
            raise ValueError(
                f"{v!r} is not a Keycloak base URL; use https://HOST[:PORT] without a path "
                "(Keycloak 17+ has no /auth prefix)"
            )
        return v.rstrip("/")

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/{self.realm}"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].split(":")[0].rstrip("/")

    @property
    def port(self) -> int:
        rest = self.url.split("://", 1)[1]
        return int(rest.split(":")[1]) if ":" in rest else 443


# --------------------------------------------------------------------------------------------
# Session
# --------------------------------------------------------------------------------------------


class Session(_Model):
    """Session and token lifetimes. Durations: '30s', '5m', '8h', '1h30m'."""

    cookie_name: str = Field("_authproxy", description="Name of oauth2-proxy's session cookie.")
    cookie_expire: Duration = Field(
        parse_duration("8h"), description="Session cookie lifetime (oauth2-proxy cookie-expire)."
    )
    cookie_refresh: Duration = Field(
        parse_duration("2m"),
        description="Refresh the tokens when the session is older than this (0 = never). Must be "
        "shorter than accessTokenLifespan so apps never see an expired JWT. The difference is how "
        "long Keycloak may be unreachable before active users are signed out (oauth2-proxy drops "
        "a session whose refresh failed once its token expired; docs/reliability.md).",
    )
    access_token_lifespan: Duration = Field(
        parse_duration("5m"), description="Keycloak access/ID token lifetime (set on the client)."
    )
    sso_session_idle_timeout: Duration = Field(
        parse_duration("30m"),
        description="SSO session idle timeout of the realm the stack creates (realm and client). "
        "Not settable with keycloak.realmMode=existing: the realm's own lifetimes apply.",
    )
    sso_session_max_lifespan: Duration = Field(
        parse_duration("10h"),
        description="SSO session max lifespan of the realm the stack creates (realm and client). "
        "Not settable with keycloak.realmMode=existing (Keycloak's default, 10h, is assumed when "
        "checking cookieExpire).",
    )

    @field_validator("cookie_name")
    @classmethod
    def _cookie_name(cls, v: str) -> str:
        if not COOKIE_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid cookie name; use letters, digits, '_' or '-'")
        return v


# --------------------------------------------------------------------------------------------
# Redis (session store)
# --------------------------------------------------------------------------------------------

_QUANTITY_RE = re.compile(r"^(\d+(\.\d+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_QUANTITY_FACTORS = {
    None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}


def parse_quantity(value: str) -> float:
    """A Kubernetes resource quantity ('100m', '1', '1.5', '64Mi', '2Gi') as a number."""
    m = _QUANTITY_RE.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity; write it like '100m' or '1' (CPU) or "
            "'64Mi', '2Gi' (memory, storage)"
        )
    return float(m.group(1)) * _QUANTITY_FACTORS[m.group(3)]


def _quantity(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    parse_quantity(value)  # raises unless `value` is a quantity string
    return cast(str, value)


Quantity = Annotated[str, BeforeValidator(_quantity)]

_REDIS_URL_RE = re.compile(r"^rediss?://[A-Za-z0-9.-]+(:\d{1,5})?/?$")


class Persistence(_Model):
    """Persistent volume for the session store (always on)."""

    size: Quantity = Field("1Gi", description="PersistentVolumeClaim size per Redis server.")
    storage_class: str | None = Field(None, description="StorageClass; unset uses the default.")


class Sentinel(_Model):
    """Replication + sentinel settings (redis.mode=ha)."""

    master_name: str = Field(
        "authproxy",
        description="Sentinel master set name (letters, digits, '_', '-', '.'); oauth2-proxy "
        "asks the sentinels for this master.",
    )
    replicas: int = Field(
        3, ge=3, le=9, description="Redis servers (one master), each with a sentinel; at least 3 "
        "so a quorum survives losing one."
    )
    down_after: Duration = Field(
        parse_duration("5s"),
        description="How long the master must stay unreachable before the sentinels agree it is "
        "down and promote a replica (the chart's `down-after-milliseconds`). Every signed-in "
        "request fails for about this long plus a second when the master dies (docs/"
        "reliability.md); shorter risks a needless failover when the master merely stalls.",
    )

    @field_validator("down_after")
    @classmethod
    def _down_after(cls, v: int) -> int:
        if not 1 <= v <= 60:
            raise ValueError("must be between 1s and 60s")
        return v

    @field_validator("master_name")
    @classmethod
    def _master_name(cls, v: str) -> str:
        if v and not re.match(r"^[A-Za-z0-9_.-]{1,64}$", v):
            raise ValueError(
                f"{v!r} is not a valid sentinel master name; use letters, digits, '_', '-' or '.'"
            )
        return v


class ExternalRedis(_Model):
    """An existing Redis (e.g. managed). Password from secret `externalRedisPassword`."""

    url: str = Field(
        "", description="`redis://HOST:PORT` or `rediss://HOST:PORT` (standalone)."
    )
    sentinel_master_name: str | None = Field(None, description="Sentinel master name, if sentinel.")
    sentinel_urls: tuple[str, ...] = Field((), description="Sentinel URLs (`redis://HOST:26379`).")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not _REDIS_URL_RE.match(v):
            raise ValueError(f"{v!r} is not a Redis URL; use redis://HOST:PORT or rediss://HOST:PORT")
        return v

    @field_validator("sentinel_urls")
    @classmethod
    def _sentinel_urls(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for u in v:
            if not _REDIS_URL_RE.match(u):
                raise ValueError(
                    f"{u!r} is not a sentinel URL; use redis://HOST:PORT (usually port 26379)"
                )
        if len(set(v)) != len(v):
            raise ValueError("lists a sentinel URL twice; remove the duplicate")
        return v

    @property
    def ports(self) -> tuple[int, ...]:
        """TCP ports oauth2-proxy connects to (for its egress NetworkPolicy)."""
        urls = self.sentinel_urls or ((self.url,) if self.url else ())
        out: set[int] = set()
        for u in urls:
            hostport = u.split("://", 1)[1].rstrip("/")
            out.add(int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 6379)
        return tuple(sorted(out))


class Redis(_Model):
    """The session store (see docs/session-store.md for the chart choice)."""

    mode: Literal["standalone", "ha", "external"] = Field(
        "standalone",
        description="`standalone` (one server, dev), `ha` (replication + sentinel, prod) or "
        "`external` (no chart; use `external`).",
    )
    chart: HelmChart = Field(
        default_factory=lambda: HelmChart(
            repository="https://dandydeveloper.github.io/charts", name="redis-ha", version="4.39.0"
        ),
        description="Helm chart (pinned): dandydeveloper/redis-ha, or a mirror of it.",
    )
    chart_path: str | None = Field(
        None,
        description="Local copy of that chart (`.tgz` archive or folder), installed instead of "
        "fetching it from `chart.repository` (air-gapped machines). It must be the chart "
        "`chart.name` at `chart.version`.",
    )
    image: Image = Field(
        default_factory=lambda: Image(
            repository="public.ecr.aws/docker/library/redis", tag="8.8.0-alpine"
        ),
        description="Redis image (the official Docker library image, pinned).",
    )
    exporter_image: Image = Field(
        default_factory=lambda: Image(repository="quay.io/oliver006/redis_exporter", tag="v1.86.0"),
        description="Redis metrics exporter image (pinned; used when `metrics` is true).",
    )
    persistence: Persistence = Field(default_factory=Persistence, description="Persistence.")
    sentinel: Sentinel = Field(default_factory=Sentinel, description="HA settings (mode=ha).")
    metrics: bool = Field(
        False,
        description="Deploy the Redis metrics exporter (a ServiceMonitor for it too when "
        "proxy.serviceMonitor is true).",
    )
    external: ExternalRedis | None = Field(None, description="External Redis (mode=external).")

    @field_validator("chart_path")
    @classmethod
    def _chart_path(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "://" in v):
            raise ValueError(
                f"{v!r} is not a local chart path; give a .tgz archive or chart folder on disk "
                "(repositories go in `redis.chart.repository`)"
            )
        return v


# --------------------------------------------------------------------------------------------
# oauth2-proxy
# --------------------------------------------------------------------------------------------


class ResourceList(_Model):
    """CPU and memory quantities."""

    cpu: Quantity = Field(description="CPU quantity.")
    memory: Quantity = Field(description="Memory quantity.")


class Resources(_Model):
    """Container requests and limits."""

    requests: ResourceList = Field(
        default_factory=lambda: ResourceList(cpu="50m", memory="64Mi"), description="Requests."
    )
    limits: ResourceList = Field(
        default_factory=lambda: ResourceList(cpu="1", memory="256Mi"), description="Limits."
    )


class Autoscaling(_Model):
    """Optional HorizontalPodAutoscaler."""

    enabled: bool = Field(False, description="Create a HorizontalPodAutoscaler.")
    min_replicas: int = Field(2, ge=1, description="HPA minimum replicas.")
    max_replicas: int = Field(5, ge=1, description="HPA maximum replicas.")
    target_cpu_utilization: int = Field(75, ge=10, le=100, description="Target CPU percent.")


class ProxyLifecycle(_Model):
    """How an oauth2-proxy pod leaves and joins the Service without failing a request (rolling
    restarts, node drains; docs/reliability.md)."""

    drain_delay: Duration = Field(
        parse_duration("10s"),
        description="preStop sleep: a terminating pod keeps serving this long after it left the "
        "Service's endpoints, until every gateway has stopped sending to it (istiod's push), "
        "and only then gets SIGTERM. 0 = no preStop hook.",
    )
    termination_grace_period: Duration = Field(
        parse_duration("30s"),
        description="terminationGracePeriodSeconds: drainDelay plus the time requests still in "
        "flight get to finish (oauth2-proxy waits for them after SIGTERM).",
    )
    min_ready: Duration = Field(
        parse_duration("5s"),
        description="Deployment minReadySeconds: a new pod counts as available (and the rollout "
        "stops an old one) only after it was ready this long, so the gateways know it first.",
    )

    @field_validator("drain_delay")
    @classmethod
    def _drain_delay(cls, v: int) -> int:
        if v > 120:
            raise ValueError("must be at most 120s")
        return v

    @field_validator("termination_grace_period")
    @classmethod
    def _grace(cls, v: int) -> int:
        if not 1 <= v <= 600:
            raise ValueError("must be between 1s and 600s")
        return v

    @field_validator("min_ready")
    @classmethod
    def _min_ready(cls, v: int) -> int:
        if v > 300:
            raise ValueError("must be at most 300s")
        return v


OAUTH2_PROXY_REFRESH_LOCK_WAIT = 5
"""oauth2-proxy v7.15's wait for a session's refresh lock (``sessionRefreshObtainTimeout`` in
pkg/middleware/stored_session.go, not configurable); past it the session is deleted."""

MIN_SHUTDOWN_SECONDS = 10
"""What terminationGracePeriod must leave after drainDelay for requests in flight (a check ends
within istio.extAuthzTimeout; a sign-in callback waits for Keycloak's token endpoint)."""


class Proxy(_Model):
    """The oauth2-proxy workload."""

    image: Image = Field(
        default_factory=lambda: Image(repository=OAUTH2_PROXY_REPOSITORY, tag=OAUTH2_PROXY_VERSION),
        description="oauth2-proxy image (pinned; the default is the release the live tests build "
        "and prove, components/versions.py).",
    )
    replicas: int = Field(
        1, ge=1, le=50,
        description="Replicas (2+ recommended in prod). Not used while autoscaling is enabled: "
        "the HPA owns the count then (the Deployment starts at autoscaling.minReplicas, and "
        "the stack never sets it again, so a preview shows no diff when the HPA scales).",
    )
    pdb_min_available: int | None = Field(
        None,
        ge=0,
        description="PodDisruptionBudget minAvailable; must be below the replica count. Unset: "
        "`maxUnavailable: 1` instead, so a drain evicts one pod at a time whatever the replica "
        "count (also while an HPA scales it), and a single replica can still be evicted.",
    )
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, description="HPA settings.")
    resources: Resources = Field(default_factory=Resources, description="Requests and limits.")
    email_domains: tuple[str, ...] = Field(
        ("*",), description="Allowed e-mail domains (`*` = any verified e-mail)."
    )
    service_monitor: bool = Field(False, description="Create a Prometheus-operator ServiceMonitor.")
    go_max_procs: int | None = Field(
        None, ge=1, le=64, description="GOMAXPROCS for oauth2-proxy; unset = the CPU limit."
    )
    lifecycle: ProxyLifecycle = Field(
        default_factory=ProxyLifecycle,
        description="Draining and readiness during rollouts (preStop, grace period, minReady).",
    )
    trusted_proxy_ips: tuple[str, ...] = Field(
        CLUSTER_ADDRESS_RANGES,
        description="Address ranges (CIDR) of callers oauth2-proxy lets name the client address "
        "(`--trusted-proxy-ip`; it reads it only from the `X-Envoy-External-Address` the gateway "
        "sets on every check). The default is the private, CGNAT, IPv6 ULA and loopback ranges "
        "pod networks use; narrow it to the gateway pods' range if you know it. `0.0.0.0/0` and "
        "`::/0` are refused.",
    )

    @field_validator("trusted_proxy_ips")
    @classmethod
    def _trusted_proxy_ips(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("is empty; list the gateway pods' address range(s) in CIDR form")
        for c in v:
            try:
                net = ipaddress.ip_network(c, strict=True)
            except ValueError:
                raise ValueError(
                    f"{c!r} is not a CIDR range; write it like '10.0.0.0/8' or 'fd00::/8' "
                    "(host bits zero)"
                ) from None
            if net.prefixlen == 0:
                raise ValueError(
                    f"{c!r} trusts every address to name the client, so anyone could forge the "
                    "addresses oauth2-proxy logs; list the gateway pods' range instead"
                )
        return v

    @field_validator("email_domains")
    @classmethod
    def _email_domains(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("is empty, so nobody could sign in; use ['*'] or list domains")
        for d in v:
            if d != "*" and not is_hostname(d):
                raise ValueError(
                    f"{d!r} is not an e-mail domain; use '*' or a domain such as 'example.com'"
                )
        return v


# --------------------------------------------------------------------------------------------
# Istio
# --------------------------------------------------------------------------------------------


HSTS_HEADER = "strict-transport-security"


class Hsts(_Model):
    """The `Strict-Transport-Security` header the gateway adds to every HTTPS response of its
    hosts (apps, the auth host, and its own redirects and refusals)."""

    max_age: Duration = Field(
        parse_duration("8760h"),
        description="`max-age`: how long browsers go to the hosts over HTTPS only (default one "
        "year). 0 tells browsers to forget it (and the policy pack reports the hosts).",
    )
    include_subdomains: bool = Field(
        False,
        description="Add `includeSubDomains` (then every subdomain of each gateway host must serve "
        "HTTPS too).",
    )
    preload: bool = Field(
        False,
        description="Add `preload` (browser preload lists need includeSubDomains and a max-age of "
        "at least one year).",
    )

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, v: int) -> int:
        if v > 2 * 365 * 86400:
            raise ValueError("is longer than two years; browsers cap it, and a mistake then lasts "
                             "that long; use at most '17520h'")
        return v

    @property
    def value(self) -> str:
        """The header value."""
        parts = [f"max-age={self.max_age}"]
        if self.include_subdomains:
            parts.append("includeSubDomains")
        if self.preload:
            parts.append("preload")
        return "; ".join(parts)


class Gateway(_Model):
    """The Istio ingress gateway."""

    name: DnsLabel = Field("authproxy", description="Name of the Gateway object.")
    namespace: DnsLabel = Field("istio-ingress", description="Namespace of the gateway pods.")
    selector: dict[str, str] = Field(
        default_factory=lambda: {"istio": "ingressgateway"},
        description="Labels of the ingress gateway pods (never empty: the gateway's policies and "
        "EnvoyFilters select by them).",
    )
    tls_credential_name: DnsLabel = Field(
        "authproxy-tls", description="TLS Secret (in the gateway namespace) for the HTTPS server."
    )
    hosts: tuple[str, ...] = Field(
        (),
        description="Hosts the gateway serves (`*.example.com` allowed); default: the auth host "
        "and every app host.",
    )
    http_target_ports: tuple[Port, ...] = Field(
        (80, 8080),
        description="Container ports of the gateway pods' plain-HTTP listener, the one that only "
        "redirects to HTTPS (the Service's targetPort for port 80: 80 with the istio gateway "
        "chart, 8080 with the legacy istio-ingressgateway). Requests on them that did not arrive "
        "as HTTPS (`X-Forwarded-Proto` not `https`) skip ext_authz and the gateway's DENY "
        "policies, so they get the redirect before anything else. List no other port here.",
    )
    service_account: DnsLabel | None = Field(
        None,
        description="Service account of the gateway pods. The apps' sidecars and ambient apps' "
        "waypoints admit a user's token only from this identity "
        "(`cluster.local/ns/<namespace>/sa/<this>`, over STRICT mTLS or the gateway's HBONE "
        "connection), so a token one app received opens no other app's sidecar or waypoint. "
        "Default: `istio-ingressgateway` when the stack installs Istio, "
        "`<name>-<gatewayApi.className>` with the Gateway API (istiod's deployment); otherwise "
        "required when an app's sidecar or waypoint checks.",
    )
    hsts: Hsts = Field(default_factory=Hsts, description="HSTS header on every gateway host.")
    underscore_headers: Literal["reject", "drop"] = Field(
        "reject",
        description="Requests with a header name containing `_` (`X_Auth_Request_Groups` is "
        "`X-Auth-Request-Groups` to WSGI, CGI, Rack and PHP apps): `reject` answers 400 (Envoy's "
        "edge recommendation), `drop` removes such headers before any filter.",
    )
    https_target_ports: tuple[Port, ...] = Field(
        (443, 8443),
        description="Container ports of the gateway pods' HTTPS listener (the Service's "
        "targetPort for port 443: 443 with the istio gateway chart, 8443 with the legacy "
        "istio-ingressgateway). The gateway's DENY policies are scoped to these and the HTTP "
        "ports, so they never touch raw TCP servers of a shared gateway.",
    )

    @field_validator("http_target_ports", "https_target_ports")
    @classmethod
    def _target_ports(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("is empty; list the container ports of the gateway's listener")
        if len(set(v)) != len(v):
            raise ValueError("lists a port twice; remove the duplicate")
        return v

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError(
                "is empty; policies and EnvoyFilters without a selector would apply to every "
                "workload of the namespace (or the whole mesh). Set the gateway pods' labels, "
                "e.g. {istio: ingressgateway}"
            )
        return _label_map(v, "the gateway pods")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for h in v:
            bare = h[2:] if h.startswith("*.") else h
            if not is_hostname(bare):
                raise ValueError(f"{h!r} is not a host name or '*.'-wildcard host name")
        return v


class CertManager(_Model):
    """Optional cert-manager Certificate for the gateway's TLS Secret."""

    issuer: str | None = Field(None, description="Issuer name; unset = no Certificate.")
    issuer_kind: Literal["ClusterIssuer", "Issuer"] = Field(
        "ClusterIssuer", description="Issuer kind."
    )


INSTALLED_GATEWAY_SERVICE_ACCOUNT = "istio-ingressgateway"
"""The service account of the gateway chart release the stack installs (istio.install.enabled;
the chart names it after the release, components/istio_install.py GATEWAY_RELEASE)."""

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
"""The label istiod puts on the pods of a Gateway API gateway it deploys (value: the Gateway's
name); Istio's own attachment of policies by `targetRefs` matches proxies by it."""


class GatewayApi(_Model):
    """Kubernetes Gateway API ingress (istio.ingressApi=gateway-api)."""

    class_name: DnsLabel = Field(
        "istio",
        description="`gatewayClassName` of the Gateway the stack creates (`istio`: deployed by "
        "istiod).",
    )
    create: bool = Field(
        True,
        description="Create the Gateway (`istio.gateway.name` in `istio.gateway.namespace`). "
        "`false`: attach the routes and policies to an existing Gateway of that name and "
        "namespace, which must have the listeners `httpListener` and `httpsListener` and admit "
        "HTTPRoutes from its own namespace.",
    )
    http_listener: DnsLabel = Field(
        "http", description="Name of the Gateway's HTTP listener (port 80, redirects to HTTPS)."
    )
    https_listener: DnsLabel = Field(
        "https", description="Name of the Gateway's HTTPS listener (port 443)."
    )


class IstioInstall(_Model):
    """Optional Istio install through Helm (dev clusters)."""

    enabled: bool = Field(
        False,
        description="Install Istio base, istiod (with the ext_authz provider in its meshConfig) "
        "and gateway charts.",
    )
    repository: str = Field(
        "https://blob.istio.io/istio-release/charts",
        description="Istio chart repository (Istio publishes charts here since 1.31; "
        "`oci://ghcr.io/istio/release/charts` also works).",
    )
    version: str = Field("1.31.0", description="Istio chart version (pinned, exact).")

    @field_validator("version")
    @classmethod
    def _exact_version(cls, v: str) -> str:
        if not re.match(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$", v):
            raise ValueError(f"{v!r} is not an exact Istio version; pin one such as '1.31.0'")
        return v


class OutlierDetection(_Model):
    """Ejection of an oauth2-proxy replica that the gateway cannot reach (DestinationRule)."""

    consecutive_errors: int = Field(
        3, ge=0, le=100,
        description="Connect failures, resets or timeouts in a row (`consecutiveGatewayErrors`) "
        "after which a gateway stops sending to that replica for a while; 0 = no ejection. "
        "oauth2-proxy's own 5xx answers never eject (they come from Redis or Keycloak, which "
        "every replica shares).",
    )
    base_ejection_time: Duration = Field(
        parse_duration("15s"),
        description="How long an ejected replica is left out (Envoy multiplies it by the number "
        "of ejections).",
    )

    @field_validator("base_ejection_time")
    @classmethod
    def _ejection_time(cls, v: int) -> int:
        if not 1 <= v <= 300:
            raise ValueError("must be between 1s and 300s")
        return v


class Istio(_Model):
    """Istio ingress and authorization."""

    ingress_api: Literal["istio", "gateway-api"] = Field(
        "istio",
        description="`istio`: an Istio Gateway (`networking.istio.io/v1`) and VirtualServices. "
        "`gateway-api`: a Kubernetes Gateway API Gateway (`gateway.networking.k8s.io/v1`, class "
        "`istio.gatewayApi.className`) and HTTPRoutes; the gateway's policies and EnvoyFilters "
        "attach to it with `targetRefs`, and its pods are the ones istiod labels "
        "`gateway.networking.k8s.io/gateway-name: <istio.gateway.name>` (`istio.gateway.selector` "
        "is not used).",
    )
    gateway_api: GatewayApi = Field(
        default_factory=GatewayApi, description="Gateway API ingress (istio.ingressApi=gateway-api)."
    )
    ext_authz_mode: Literal["extension-provider", "envoy-filter"] = Field(
        "extension-provider",
        description="`extension-provider` (mesh config + CUSTOM AuthorizationPolicy) or "
        "`envoy-filter` (an EnvoyFilter, for meshes whose config can't be changed).",
    )
    provider_name: DnsLabel = Field(
        "authproxy-oauth2-proxy", description="Name of the mesh extension provider."
    )
    ext_authz_timeout: Duration = Field(
        parse_duration("2s"), description="ext_authz check timeout (fails closed). Below 5s while "
        "session.cookieRefresh is on: oauth2-proxy deletes a session whose refresh lock it waited "
        "5 s for, and a check that ends first keeps the session (docs/reliability.md).",
    )
    ext_authz_retries: int = Field(
        2, ge=0, le=5,
        description="Retries of an ext_authz check that did not reach oauth2-proxy (connection "
        "refused or reset), each on another replica, within extAuthzTimeout; a slow answer is "
        "waited for, never retried; 0 = none.",
    )
    outlier_detection: OutlierDetection = Field(
        default_factory=OutlierDetection,
        description="Ejecting an unreachable oauth2-proxy replica at the gateway.",
    )
    gateway: Gateway = Field(default_factory=Gateway, description="Ingress gateway.")
    version: str | None = Field(
        None,
        description="Istio version of the cluster's control plane (`istioctl version`), for what "
        "depends on it: ambient apps need 1.24 or newer (the Service label "
        "`istio.io/ingress-use-waypoint`). Default: `istio.install.version` when the stack "
        "installs Istio; required with ambient apps otherwise.",
    )
    cert_manager: CertManager = Field(default_factory=CertManager, description="cert-manager.")
    install: IstioInstall = Field(default_factory=IstioInstall, description="Istio install.")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^\d+\.\d+(\.\d+)?([-+][0-9A-Za-z.-]+)?$", v):
            raise ValueError(f"{v!r} is not an Istio version; write it like '1.31.0'")
        return v

    @field_validator("ext_authz_timeout")
    @classmethod
    def _timeout(cls, v: int) -> int:
        if not 1 <= v <= 60:
            raise ValueError("must be between 1s and 60s")
        return v


AWAIT_TIMEOUT_MIN = 10
AWAIT_TIMEOUT_MAX = 2 * 3600


class Kubernetes(_Model):
    """How `pulumi up` treats the cluster."""

    await_timeout: Duration = Field(
        parse_duration("10m"),
        description="How long `pulumi up` waits for each Kubernetes object to become ready (a "
        "Deployment rolled out, a Service with endpoints, the Redis Helm release with all its "
        "pods ready) and `pulumi destroy` for each to be gone: Pulumi's `customTimeouts` on "
        "every object and Helm's `timeout` on releases. Past it the step fails with the "
        "provider's message naming the object; the Redis release is rolled back (Helm "
        "`atomic`). 10s to 2h; not used with skipAwait.",
    )

    skip_await: bool = Field(
        False,
        description="Do not wait for workloads to become ready: every object gets the "
        "`pulumi.com/skipAwait` annotation and Helm releases `skipAwait` (and no `atomic`, which "
        "would wait), and objects are deleted in the background (no wait for the garbage "
        "collector), so `pulumi up` and `destroy` "
        "finish once the API server accepted the objects. For clusters where pods start "
        "later (GitOps bootstrap, nodes still joining) or never (API-server-only test clusters); "
        "readiness must then be checked elsewhere.",
    )

    @field_validator("await_timeout")
    @classmethod
    def _await_timeout(cls, v: int) -> int:
        if not AWAIT_TIMEOUT_MIN <= v <= AWAIT_TIMEOUT_MAX:
            raise ValueError(
                f"{format_duration(v)} is outside 10s..2h; a rollout of oauth2-proxy or Redis "
                "takes minutes on a busy cluster (the default is 10m), and a longer wait only "
                "hides a rollout that is stuck"
            )
        return v


def _marker(value: Any) -> Any:
    """`pulumi config set --path authproxy:rotation.cookieSecret 2` stores the number 2: a rotation
    marker is any string or whole number, kept as a string."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Marker = Annotated[str, BeforeValidator(_marker)]


class Rotation(_Model):
    """Bump a value to regenerate that secret (used as pulumi-random `keepers`)."""

    cookie_secret: Marker = Field("1", description="Rotation marker of the cookie secret.")
    client_secret: Marker = Field("1", description="Rotation marker of the OIDC client secret.")
    redis_password: Marker = Field("1", description="Rotation marker of the Redis password.")


class Preflight(_Model):
    """Read-only checks of the cluster and Keycloak before `pulumi preview`/`up` change anything."""

    enabled: bool = Field(
        True,
        description="Check the live cluster (through the same kubeconfig and context as the "
        "Kubernetes provider) and Keycloak before any resource is created; a failing check stops "
        "`pulumi preview`/`up` with one line naming the fix. `false` only for offline previews "
        "(no cluster reachable); `pulumi up` then deploys unchecked (docs/preflight.md).",
    )
    skip: tuple[str, ...] = Field(
        (),
        description="Names of single checks not to run (e.g. `keycloak` when Keycloak is reachable "
        "from the cluster but not from where `pulumi` runs); docs/preflight.md lists them.",
    )
    istio_namespace: DnsLabel = Field(
        "istio-system",
        description="Namespace of istiod and its mesh config (the `istio` ConfigMap).",
    )
    istio_revision: str | None = Field(
        None,
        description="Istio revision (`istio.io/rev`) of the control plane the gateway and apps "
        "use; its mesh config is the ConfigMap `istio-<revision>`. Unset: the default revision.",
    )
    timeout: int = Field(
        10, ge=1, le=120, description="Seconds each read of the cluster or Keycloak may take."
    )

    @field_validator("istio_revision")
    @classmethod
    def _revision(cls, v: str | None) -> str | None:
        if v is not None and not _DNS_LABEL_RE.match(v):
            raise ValueError(f"{v!r} is not an Istio revision name (a DNS label such as '1-31-0')")
        return v


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


class StackConfig(_Model):
    """Everything under the `authproxy:` config namespace."""

    domain: Hostname = Field(
        description="Base domain: the session cookie is set for it, every host is under it."
    )
    auth_host: Hostname | None = Field(
        None, description="Host serving `/oauth2/*` (sign-in callback); default `auth.<domain>`."
    )
    namespace: DnsLabel = Field("authproxy", description="Namespace for oauth2-proxy and Redis.")
    apps: tuple[App, ...] = Field(description="Protected applications (at least one).")
    keycloak: Keycloak = Field(description="Keycloak connection, realm and client.")
    session: Session = Field(default_factory=Session, description="Lifetimes.")
    redis: Redis = Field(default_factory=Redis, description="Session store.")
    proxy: Proxy = Field(default_factory=Proxy, description="oauth2-proxy workload.")
    istio: Istio = Field(default_factory=Istio, description="Istio ingress and authorization.")
    kubernetes: Kubernetes = Field(default_factory=Kubernetes, description="Cluster behaviour.")
    rotation: Rotation = Field(default_factory=Rotation, description="Secret rotation markers.")
    preflight: Preflight = Field(
        default_factory=Preflight, description="Checks of the cluster before anything changes."
    )

    # Filled by load(): which secret keys are set. Never the values.
    secrets_set: frozenset[str] = Field(frozenset(), exclude=True)

    @property
    def pdb_min_available(self) -> int | None:
        """The PodDisruptionBudget's minAvailable if configured; None: `maxUnavailable: 1`."""
        return self.proxy.pdb_min_available

    @property
    def auth_hostname(self) -> str:
        return self.auth_host or f"auth.{self.domain}"

    @property
    def redirect_url(self) -> str:
        return f"https://{self.auth_hostname}/oauth2/callback"

    @property
    def gateway_pod_labels(self) -> dict[str, str]:
        """Labels of the ingress gateway's pods: `istio.gateway.selector`, or with the Gateway API
        the label istiod gives the pods of the Gateway it deploys."""
        if self.istio.ingress_api == "gateway-api":
            return {GATEWAY_NAME_LABEL: self.istio.gateway.name}
        return dict(self.istio.gateway.selector)

    @property
    def gateway_service_account(self) -> str | None:
        """The gateway pods' service account: configured, or the one istiod's Gateway API
        deployment (``<name>-<class>``) or the gateway chart the stack installs uses; None when
        it cannot be known."""
        gw = self.istio.gateway
        if gw.service_account:
            return gw.service_account
        if self.istio.ingress_api == "gateway-api":
            return f"{gw.name}-{self.istio.gateway_api.class_name}"
        if self.istio.install.enabled:
            return INSTALLED_GATEWAY_SERVICE_ACCOUNT
        return None

    @property
    def gateway_principal(self) -> str | None:
        """The gateway's workload identity as AuthorizationPolicy ``principals`` write it
        (``cluster.local`` stands for the mesh's trust domain and its aliases in istiod)."""
        sa = self.gateway_service_account
        return None if sa is None else f"cluster.local/ns/{self.istio.gateway.namespace}/sa/{sa}"

    @property
    def gateway_hosts(self) -> tuple[str, ...]:
        if self.istio.gateway.hosts:
            return self.istio.gateway.hosts
        return (self.auth_hostname, *(a.host for a in self.apps))

    @property
    def groups(self) -> tuple[str, ...]:
        """Every group any app or demo user names, as full paths, sorted, once."""
        paths = {p for a in self.apps for p in a.group_paths}
        paths |= {group_path(g) for u in self.keycloak.demo_users for g in u.groups}
        return tuple(sorted(paths))

    @property
    def ambient_apps(self) -> tuple[App, ...]:
        return tuple(a for a in self.apps if a.ambient)

    @property
    def istio_version(self) -> str | None:
        """The cluster's Istio version: `istio.version`, else the one the stack installs."""
        if self.istio.version:
            return self.istio.version
        return self.istio.install.version if self.istio.install.enabled else None


def host_matches(pattern: str, host: str) -> bool:
    """Istio host match: exact, or '*.suffix' matching one or more leading labels."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def under_domain(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


MIN_AMBIENT_ISTIO = (1, 24)
"""Istio reads `istio.io/ingress-use-waypoint` on a Service since 1.24 (on a namespace since 1.25);
without it the ingress gateway sends straight to the pods and skips the waypoint's checks."""


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("-")[0].split("+")[0])[:3])


def _ambient_checks(cfg: StackConfig) -> list[tuple[str, str]]:
    """Rules for `apps[].dataplane` and the waypoints (docs/ambient.md)."""
    p: list[tuple[str, str]] = []
    k = NAMESPACE + ":"
    waypoints: dict[tuple[str, str], tuple[int, AppWaypoint]] = {}
    for i, app in enumerate(cfg.apps):
        ak = f"{k}apps[{i}]"
        if not app.ambient:
            if app.waypoint is not None:
                p.append((ak + ".waypoint", "is only used with dataplane: ambient; remove it or "
                          "set dataplane: ambient"))
            if app.authorize_at == "waypoint":
                p.append((ak + ".authorizeAt", "'waypoint' needs dataplane: ambient (a sidecar app "
                          "is checked in its sidecar: use 'sidecar', 'gateway' or 'both')"))
            continue
        if app.authorize_at == "sidecar":
            p.append((ak + ".authorizeAt", "'sidecar' does not exist for dataplane: ambient (no "
                      "sidecar runs there; ztunnel cannot read HTTP). The app's checks run in its "
                      "waypoint: use 'both' (the default: the gateway and the waypoint), "
                      "'waypoint' or 'gateway'"))
        if not app.workload_labels:
            p.append((ak + ".workloadLabels", "is required with dataplane: ambient: ztunnel's L4 "
                      "policy (only the waypoint may reach the pods) and the HBONE NetworkPolicy "
                      f"select exactly the pods behind Service {app.service.namespace}/"
                      f"{app.service.name}, and no label is guessed (a wrong guess lets traffic "
                      "around the waypoint). Set it to the Service's selector (kubectl get service "
                      f"-n {app.service.namespace} {app.service.name} -o "
                      "jsonpath='{.spec.selector}')"))
        wp = app.waypoint_ref
        if wp.create and wp.namespace not in (None, app.service.namespace):
            p.append((ak + ".waypoint.namespace", "only an existing waypoint (create: false) may "
                      "live in another namespace; the stack creates waypoints in the app's "
                      f"namespace {app.service.namespace!r}. Remove it or set create: false"))
        key = (app.waypoint_namespace, wp.name)
        if key in waypoints:
            j, other = waypoints[key]
            if (other.create, other.identity_account) != (wp.create, wp.identity_account):
                p.append((ak + ".waypoint", f"names the waypoint {key[0]}/{key[1]} like apps[{j}] "
                          "but with another create/serviceAccount; one waypoint has one setting"))
        waypoints.setdefault(key, (i, wp))
    if not cfg.ambient_apps:
        return p
    first = next(i for i, a in enumerate(cfg.apps) if a.ambient)
    if cfg.istio.install.enabled:
        p.append((k + "istio.install.enabled", f"apps[{first}] is ambient, which the stack's Istio "
                  "install does not provide (istio-cni, ztunnel, the Gateway API CRDs for "
                  "waypoints). Install Istio with the ambient profile and the Gateway API CRDs "
                  "first, then set istio.install.enabled=false and istio.version"))
    version = cfg.istio_version
    if version is None:
        p.append((k + "istio.version", f"is required by apps[{first}] (dataplane: ambient): set it "
                  "to the cluster's Istio version (`istioctl version`), 1.24 or newer"))
    elif _version_tuple(version)[:2] < MIN_AMBIENT_ISTIO:
        p.append((k + "istio.version", f"{version!r} is too old for ambient apps: the ingress "
                  "gateway honours `istio.io/ingress-use-waypoint` on a Service only since Istio "
                  "1.24, and would skip the waypoint's checks. Upgrade Istio, or use dataplane: "
                  "sidecar"))
    return p


def _cross_checks(cfg: StackConfig) -> list[tuple[str, str]]:
    """Rules that span several keys. Returns (key, message) pairs."""
    p: list[tuple[str, str]] = []
    k = NAMESPACE + ":"
    auth = cfg.auth_hostname
    if not under_domain(auth, cfg.domain):
        p.append((
            k + "authHost",
            f"{auth!r} is not under the cookie domain {cfg.domain!r}; the session cookie would "
            f"not reach it. Use a host such as 'auth.{cfg.domain}'.",
        ))
    seen_hosts: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    for i, app in enumerate(cfg.apps):
        ak = f"{k}apps[{i}]"
        if not under_domain(app.host, cfg.domain):
            p.append((
                ak + ".host",
                f"{app.host!r} is not under the cookie domain {cfg.domain!r}; sign-in would loop. "
                f"Serve the app on a subdomain of {cfg.domain!r} or change `{k}domain`.",
            ))
        if app.host == auth:
            p.append((
                ak + ".host",
                f"{app.host!r} is the auth host, which serves only /oauth2/*; give the app its "
                "own host name",
            ))
        if app.host in seen_hosts:
            p.append((
                ak + ".host",
                f"{app.host!r} is already used by apps[{seen_hosts[app.host]}]; each app needs "
                "its own host",
            ))
        seen_hosts.setdefault(app.host, i)
        if app.name in seen_names:
            p.append((
                ak + ".name",
                f"{app.name!r} is already used by apps[{seen_names[app.name]}]; names must be unique",
            ))
        seen_names.setdefault(app.name, i)
        if cfg.istio.gateway.hosts and not any(
            host_matches(h, app.host) for h in cfg.istio.gateway.hosts
        ):
            p.append((
                ak + ".host",
                f"{app.host!r} is not among the gateway's hosts {list(cfg.istio.gateway.hosts)}; "
                f"add it to `{k}istio.gateway.hosts`",
            ))
        if app.sidecar_checks and not app.workload_labels:
            p.append((
                ak + ".workloadLabels",
                f"is required with authorizeAt={app.authorize_at!r}: the sidecar policies must "
                f"select exactly the pods behind Service {app.service.namespace}/"
                f"{app.service.name}, and no label is guessed (a wrong guess selects nothing and "
                "lets every signed-in user in). Set it to the Service's selector (kubectl get "
                f"service -n {app.service.namespace} {app.service.name} -o "
                "jsonpath='{.spec.selector}'), or set authorizeAt to 'gateway'",
            ))
    p += _ambient_checks(cfg)
    sidecar_apps = [a.name for a in cfg.apps if a.admits_gateway_only]
    if sidecar_apps and cfg.gateway_service_account is None:
        p.append((
            k + "istio.gateway.serviceAccount",
            f"is required: the sidecars or waypoints of {sidecar_apps} admit a user's token only from the "
            "gateway's workload identity, which is its pods' service account. Set it (kubectl get "
            f"pod -n {cfg.istio.gateway.namespace} -l <istio.gateway.selector> -o "
            "jsonpath='{.items[0].spec.serviceAccountName}')",
        ))
    hsts = cfg.istio.gateway.hsts
    if hsts.preload and (not hsts.include_subdomains or hsts.max_age < 365 * 86400):
        p.append((
            k + "istio.gateway.hsts.preload",
            "needs includeSubDomains and a maxAge of at least one year ('8760h'), or browser "
            "preload lists refuse the host",
        ))
    if cfg.istio.gateway.hosts and not any(
        host_matches(h, auth) for h in cfg.istio.gateway.hosts
    ):
        p.append((
            k + "istio.gateway.hosts",
            f"does not include the auth host {auth!r}; add it",
        ))
    gw = cfg.istio.gateway
    both = sorted(set(gw.http_target_ports) & set(gw.https_target_ports))
    if both:
        p.append((
            k + "istio.gateway.httpTargetPorts",
            f"lists {both}, which istio.gateway.httpsTargetPorts lists too; requests on the HTTP "
            "ports skip ext_authz until they are redirected, so a port must be one or the other",
        ))
    if cfg.istio.ingress_api == "gateway-api":
        if "selector" in gw.model_fields_set:
            p.append((
                k + "istio.gateway.selector",
                "is not used with istio.ingressApi=gateway-api: the gateway's policies attach to "
                "the Gateway by targetRefs and its pods carry "
                f"`{GATEWAY_NAME_LABEL}: {gw.name}`; remove it",
            ))
        for i, app in enumerate(cfg.apps):
            for path in app.public_paths:
                if path.endswith("*") and not path.endswith("/*"):
                    p.append((
                        f"{k}apps[{i}].publicPaths",
                        f"{path!r}: with istio.ingressApi=gateway-api a prefix must end in '/*' "
                        "(Gateway API PathPrefix matches whole path segments, so the route and the "
                        f"authorization policies would disagree); use {path[:-1].rstrip('/') + '/*'!r}",
                    ))
        ga = cfg.istio.gateway_api
        if ga.http_listener == ga.https_listener:
            p.append((
                k + "istio.gatewayApi.httpsListener",
                f"is the same listener as istio.gatewayApi.httpListener ({ga.http_listener!r}); "
                "the HTTP listener only redirects to HTTPS, so name two different listeners",
            ))
        if cfg.istio.install.enabled:
            p.append((
                k + "istio.install.enabled",
                "is not supported with istio.ingressApi=gateway-api: Istio's charts do not carry "
                "the Gateway API CRDs, and istiod deploys the gateway itself. Install the Gateway "
                "API CRDs (standard channel) and Istio first, and set istio.install.enabled=false",
            ))
    elif "gateway_api" in cfg.istio.model_fields_set:
        p.append((
            k + "istio.gatewayApi",
            "is only used with istio.ingressApi=gateway-api (it is 'istio'); remove it or set "
            "istio.ingressApi",
        ))
    if cfg.istio.install.enabled:
        # The installed gateway chart serves 80/443 on the same container ports.
        for key, ports, port in (("httpTargetPorts", gw.http_target_ports, 80),
                                 ("httpsTargetPorts", gw.https_target_ports, 443)):
            if port not in ports:
                p.append((
                    f"{k}istio.gateway.{key}",
                    f"does not include {port}, the container port of the gateway chart the stack "
                    "installs (istio.install.enabled); add it",
                ))

    s = cfg.session
    if s.cookie_refresh == 0 and s.cookie_expire > s.access_token_lifespan:
        p.append((
            k + "session.cookieExpire",
            f"the session ({format_duration(s.cookie_expire)}) outlives the token "
            f"({format_duration(s.access_token_lifespan)}) and session.cookieRefresh is 0, so "
            "apps would receive expired JWTs; set session.cookieRefresh below "
            "session.accessTokenLifespan, or shorten session.cookieExpire",
        ))
    if s.cookie_refresh and s.cookie_refresh >= s.access_token_lifespan:
        p.append((
            k + "session.cookieRefresh",
            f"{format_duration(s.cookie_refresh)} is not shorter than session.accessTokenLifespan "
            f"({format_duration(s.access_token_lifespan)}); tokens would expire before refresh",
        ))
    if s.cookie_refresh and cfg.istio.ext_authz_timeout >= OAUTH2_PROXY_REFRESH_LOCK_WAIT:
        p.append((
            k + "istio.extAuthzTimeout",
            f"{format_duration(cfg.istio.ext_authz_timeout)} is not shorter than "
            f"{OAUTH2_PROXY_REFRESH_LOCK_WAIT}s: while Keycloak is slow, oauth2-proxy stops waiting for a "
            f"session's refresh lock after {OAUTH2_PROXY_REFRESH_LOCK_WAIT}s and deletes the session; a "
            "shorter check timeout ends the wait first and the session survives (docs/reliability.md). "
            "Set it below 5s, or session.cookieRefresh to 0",
        ))
    if s.cookie_refresh and s.cookie_refresh >= s.cookie_expire:
        p.append((
            k + "session.cookieRefresh",
            "must be shorter than session.cookieExpire (oauth2-proxy refuses to start otherwise)",
        ))
    if s.cookie_expire > s.sso_session_max_lifespan:
        p.append((
            k + "session.cookieExpire",
            f"{format_duration(s.cookie_expire)} outlives the Keycloak SSO session "
            f"({format_duration(s.sso_session_max_lifespan)}), so refreshes would fail before the "
            "cookie expires; shorten it or raise session.ssoSessionMaxLifespan",
        ))

    kc = cfg.keycloak
    if kc.realm_mode == "existing":
        for name in ("sso_session_idle_timeout", "sso_session_max_lifespan"):
            if name in s.model_fields_set:
                p.append((
                    k + "session." + to_camel(name),
                    "applies only to a realm the stack creates (keycloak.realmMode=create); with "
                    "an existing realm its own SSO lifetimes apply (Keycloak refuses a client "
                    "session longer than the realm's). Remove it, and change the realm's settings "
                    "in Keycloak if needed.",
                ))
    need = "keycloakAdminPassword" if kc.admin.auth == "password" else "keycloakAdminClientSecret"
    if need not in cfg.secrets_set:
        p.append((
            k + need,
            f"is required by keycloak.admin.auth={kc.admin.auth!r}; set it with "
            f"`pulumi config set --secret {k}{need} <value>`",
        ))
    if kc.realm_mode == "existing" and kc.realm == kc.admin.realm == "master":
        p.append((
            k + "keycloak.realm",
            "protecting apps with the 'master' admin realm is unsafe; use a dedicated realm",
        ))
    known_groups = {g for a in cfg.apps for g in a.group_paths}
    users: set[str] = set()
    for i, u in enumerate(kc.demo_users):
        if u.username in users:
            p.append((f"{k}keycloak.demoUsers[{i}].username", f"{u.username!r} is listed twice"))
        users.add(u.username)
        for g in u.groups:
            if group_path(g) not in known_groups:
                p.append((
                    f"{k}keycloak.demoUsers[{i}].groups",
                    f"{g!r} is not a group any app names; add it to an app's groups or remove it",
                ))

    r = cfg.redis
    if r.mode == "external":
        ext = r.external
        if ext is None or not (ext.url or ext.sentinel_urls):
            p.append((
                k + "redis.external",
                "redis.mode=external needs redis.external.url (or sentinelUrls with "
                "sentinelMasterName)",
            ))
        elif ext.url and ext.sentinel_urls:
            p.append((
                k + "redis.external.sentinelUrls",
                "set either redis.external.url (one server) or sentinelUrls (sentinel), not both",
            ))
        elif ext.sentinel_urls and not ext.sentinel_master_name:
            p.append((
                k + "redis.external.sentinelMasterName",
                "sentinel URLs need the sentinel master name; set it",
            ))
        elif ext.sentinel_master_name and not ext.sentinel_urls:
            p.append((
                k + "redis.external.sentinelUrls",
                "a sentinel master name needs the sentinels' URLs (redis://HOST:26379); set "
                "them, or remove sentinelMasterName to use redis.external.url",
            ))
        if "externalRedisPassword" not in cfg.secrets_set:
            p.append((
                k + "externalRedisPassword",
                "is required by redis.mode=external; set it with "
                f"`pulumi config set --secret {k}externalRedisPassword <value>`",
            ))
    elif r.external is not None:
        p.append((
            k + "redis.external",
            f"is only used with redis.mode=external (mode is {r.mode!r}); remove it or change the mode",
        ))
    if r.mode == "ha" and not r.sentinel.master_name:
        p.append((
            k + "redis.sentinel.masterName",
            "redis.mode=ha needs a sentinel master name; set one such as 'authproxy'",
        ))

    kube = cfg.kubernetes
    if kube.skip_await and "await_timeout" in kube.model_fields_set:
        p.append((
            k + "kubernetes.awaitTimeout",
            "has no effect with kubernetes.skipAwait=true (nothing waits); remove one of them",
        ))

    px = cfg.proxy
    floor = px.autoscaling.min_replicas if px.autoscaling.enabled else px.replicas
    if px.pdb_min_available is not None and px.pdb_min_available >= floor:
        raise_key = "proxy.autoscaling.minReplicas" if px.autoscaling.enabled else "proxy.replicas"
        p.append((
            k + "proxy.pdbMinAvailable",
            f"{px.pdb_min_available} with {floor} replica(s) would block every voluntary eviction "
            f"(node drains hang); set it below the replica count or raise {raise_key}",
        ))
    if px.autoscaling.enabled and px.autoscaling.max_replicas < px.autoscaling.min_replicas:
        p.append((
            k + "proxy.autoscaling.maxReplicas",
            "must be at least proxy.autoscaling.minReplicas",
        ))
    lc = px.lifecycle
    if lc.termination_grace_period < lc.drain_delay + MIN_SHUTDOWN_SECONDS:
        p.append((
            k + "proxy.lifecycle.terminationGracePeriod",
            f"{format_duration(lc.termination_grace_period)} leaves less than "
            f"{MIN_SHUTDOWN_SECONDS}s after proxy.lifecycle.drainDelay "
            f"({format_duration(lc.drain_delay)}) for requests in flight, so the kubelet would "
            "kill oauth2-proxy mid-request; set it to at least drainDelay + "
            f"{MIN_SHUTDOWN_SECONDS}s",
        ))
    for res in ("cpu", "memory"):
        req = getattr(px.resources.requests, res)
        lim = getattr(px.resources.limits, res)
        if parse_quantity(req) > parse_quantity(lim):
            p.append((
                f"{k}proxy.resources.requests.{res}",
                f"{req!r} is above the limit {lim!r}; Kubernetes rejects such a pod. Lower the "
                f"request or raise proxy.resources.limits.{res}",
            ))
    return p


def _loc_to_key(loc: Iterable[Any]) -> str:
    """Turn a pydantic error location into the user's config key (camelCase, [i] indices)."""
    out = NAMESPACE + ":"
    first = True
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        part = str(part)
        if "[" in part or part.startswith("function-"):
            continue  # validator-internal location parts
        name = to_camel(part) if "_" in part else part
        out += name if first else "." + name
        first = False
    return out


_FIXES = {
    "missing": "it is required; set it",
    "extra_forbidden": "is not a known key; check its spelling against docs/configuration.md",
}


def load(raw: Mapping[str, Any], secrets_set: Iterable[str] = ()) -> StackConfig:
    """Validate raw config values (key without namespace -> value) into a StackConfig.

    Raises ConfigError naming every bad key and its fix. ``secrets_set`` names the secret keys that
    are set (their values never reach this function).
    """
    problems: list[tuple[str, str]] = []
    data = {k: v for k, v in raw.items() if k not in SECRET_KEYS}
    unknown = [k for k in data if k not in StackConfig.model_fields and to_camel(k) not in
               {to_camel(f) for f in StackConfig.model_fields}]
    for k in unknown:
        problems.append((
            f"{NAMESPACE}:{k}",
            "is not a known key; check its spelling against docs/configuration.md",
        ))
        data.pop(k)
    if "apps" in data and isinstance(data["apps"], list) and not data["apps"]:
        problems.append((
            f"{NAMESPACE}:apps",
            "is empty; list at least one application to protect (host, service)",
        ))
    try:
        cfg = StackConfig.model_validate({**data, "secrets_set": frozenset(secrets_set)})
    except ValidationError as e:
        for err in e.errors():
            key = _loc_to_key(err["loc"])
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if err["type"] in _FIXES:
                msg = _FIXES[err["type"]]
            elif err["type"] == "literal_error":
                msg = f"{err.get('input')!r} is not one of {err['ctx']['expected']}"
            if (key, msg) not in problems:
                problems.append((key, msg))
        raise ConfigError(problems) from None
    if not cfg.apps and not any(k == f"{NAMESPACE}:apps" for k, _ in problems):
        problems.append((f"{NAMESPACE}:apps", "is empty; list at least one application to protect"))
    problems += _cross_checks(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


# --------------------------------------------------------------------------------------------
# Reference documentation, generated from the model (docs/configuration.md is tested against it)
# --------------------------------------------------------------------------------------------


_VALIDATOR_TYPES = {
    "_hostname": "hostname",
    "_dns_label": "name",
    "parse_duration": "duration",
    "_quantity": "quantity",
}


def _type_name(field: Any) -> str:
    """A short, readable type for the reference table."""
    import typing

    def name(tp: Any, metadata: list[Any]) -> str:
        for m in metadata:
            fn = getattr(getattr(m, "func", None), "__name__", None)
            if fn in _VALIDATOR_TYPES:
                return _VALIDATOR_TYPES[fn]
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            return name(args[0], list(args[1:]))
        if origin is typing.Literal:
            return " / ".join(f"`{a}`" for a in args)
        if origin in (typing.Union, __import__("types").UnionType):
            parts = [name(a, []) for a in args if a is not type(None)]
            return " or ".join(parts) + (" (optional)" if type(None) in args else "")
        if origin is tuple:
            return f"list of {name(args[0], [])}"
        if origin is dict:
            return "map of string"
        return getattr(tp, "__name__", str(tp))

    return name(field.annotation, list(field.metadata))


def _default_text(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "see below"
        return f"`{value!r}`"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if _type_name(field) == "duration":
        return f"`{format_duration(value)}`"
    if value == ():
        return "`[]`"
    if isinstance(value, tuple):
        return f"`{list(value)!r}`"
    return f"`{value!r}`"


def config_reference_markdown() -> str:
    """Markdown reference of every key, generated from the model's fields and descriptions."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from components/config.py by `make docs`; tests/unit/test_config_docs.py "
        "keeps it in step. -->",
        "",
        f"All keys live in the `{NAMESPACE}:` namespace. Structured keys are set in "
        "`Pulumi.<stack>.yaml` or with `pulumi config set --path`. Durations are written like "
        "`30s`, `5m`, `8h`, `1h30m`.",
        "",
        "## Secrets",
        "",
        "| key | used when |",
        "| --- | --- |",
    ]
    for key, desc in SECRET_KEYS.items():
        lines.append(f"| `{NAMESPACE}:{key}` (secret) | {desc} |")
    lines += ["", "Set them with `pulumi config set --secret KEY VALUE`.", ""]

    def walk(model: type[BaseModel], prefix: str, title: str) -> None:
        nested: list[tuple[type[BaseModel], str, str]] = []
        lines.extend([f"## {title}", "", (model.__doc__ or "").strip().splitlines()[0], ""])
        lines.extend(["| key | type | default | description |", "| --- | --- | --- | --- |"])
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            alias = field.alias or name
            key = f"{prefix}{alias}"
            ann = field.annotation
            inner = _submodel(ann)
            type_text = _type_name(field)
            if inner is not None:
                is_list = type_text.startswith("list of")
                type_text = f"list of {inner.__name__}" if is_list else inner.__name__
                nested.append((inner, key + ("[]." if is_list else "."), f"`{key}`"))
            lines.append(
                f"| `{key}` | {type_text} | {_default_text(field)} | "
                f"{(field.description or '').replace('|', '/')} |"
            )
        lines.append("")
        for sub, sub_prefix, sub_title in nested:
            walk(sub, sub_prefix, sub_title)

    walk(StackConfig, "", "Top-level keys")
    return "\n".join(lines).rstrip() + "\n"


def _submodel(annotation: Any) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------------------------
# Local runs (authproxy_local: the live harness, `make engine`, the render): the config values
# they set to point a stack at local servers, built here so that keys stay known in this module
# only. Values are plain data with the stack file's (camelCase) keys, without the namespace.
# --------------------------------------------------------------------------------------------

KEYCLOAK_ADMIN_PASSWORD_KEY = "keycloakAdminPassword"
"""The secret key holding the Keycloak admin user's password (keycloak.admin.auth=password); a
local run also starts its Keycloak with it as the bootstrap admin's password."""
KEYCLOAK_ADMIN_CLIENT_SECRET_KEY = "keycloakAdminClientSecret"
EXTERNAL_REDIS_PASSWORD_KEY = "externalRedisPassword"


def required_secret_keys(cfg: StackConfig) -> tuple[str, ...]:
    """The secret keys ``cfg`` needs set (see the checks in :func:`load`): the Keycloak admin
    credential of ``keycloak.admin.auth`` and, with ``redis.mode: external``, the Redis password."""
    keys = [KEYCLOAK_ADMIN_PASSWORD_KEY if cfg.keycloak.admin.auth == "password"
            else KEYCLOAK_ADMIN_CLIENT_SECRET_KEY]
    if cfg.redis.mode == "external":
        keys.append(EXTERNAL_REDIS_PASSWORD_KEY)
    return tuple(keys)


def admin_client_secret_key(cfg: StackConfig) -> str | None:
    """The secret key of the pre-made admin client (keycloak.admin.auth=client-credentials)."""
    return KEYCLOAK_ADMIN_CLIENT_SECRET_KEY if cfg.keycloak.admin.auth == "client-credentials" else None


def ext_authz_mode_values(mode: str) -> dict[str, Any]:
    """Values that select the ext_authz mode (istio.extAuthzMode)."""
    return {"istio": {"extAuthzMode": mode}}


def local_server_values(*, keycloak_ca_pem: str, redis_chart_path: str,
                        keycloak_url: str | None = None, awaited: bool = False,
                        stack_values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Values that point a stack at servers on this machine, through stack config only, as a
    user points a stack at their own Keycloak and cluster: Keycloak's CA (and URL), the local
    copy of the redis-ha chart (no chart repository is reachable), no Istio install (the local
    runs bring their own istiod translation) and, unless ``awaited`` (a cluster whose controllers
    and nodes act, as `make engine` runs), no readiness waits (an API server alone: pods never
    run). A stack that installs Istio (``stack_values``) keeps the gateway identity the install
    would have given it (``istio.gateway.serviceAccount``: the sidecars admit tokens from it), as
    a user whose Istio is installed elsewhere names it."""
    keycloak: dict[str, Any] = {"caCertificate": keycloak_ca_pem}
    if keycloak_url is not None:
        keycloak["url"] = keycloak_url
    istio: dict[str, Any] = {"install": {"enabled": False}}
    raw = (stack_values or {}).get("istio") or {}
    if ((raw.get("install") or {}).get("enabled") and raw.get("ingressApi", "istio") == "istio"
            and not (raw.get("gateway") or {}).get("serviceAccount")):
        istio["gateway"] = {"serviceAccount": INSTALLED_GATEWAY_SERVICE_ACCOUNT}
    values: dict[str, Any] = {
        "keycloak": keycloak,
        "redis": {"chartPath": redis_chart_path},
        "istio": istio,
    }
    if not awaited:
        values["kubernetes"] = {"skipAwait": True}
    return values


def await_timeout_values(seconds: int) -> dict[str, Any]:
    """Values that bound every readiness wait (kubernetes.awaitTimeout)."""
    return {"kubernetes": {"awaitTimeout": f"{seconds}s"}}


def image_values(workload: Literal["proxy", "redis"], repository: str, tag: str) -> dict[str, Any]:
    """Values that set oauth2-proxy's (proxy.image) or Redis's (redis.image) image."""
    return {workload: {"image": {"repository": repository, "tag": tag}}}


def replica_values(replicas: int | None = None, autoscaling_min: int | None = None) -> dict[str, Any]:
    """Values that set proxy.replicas and/or proxy.autoscaling.minReplicas."""
    proxy: dict[str, Any] = {}
    if replicas is not None:
        proxy["replicas"] = replicas
    if autoscaling_min is not None:
        proxy["autoscaling"] = {"minReplicas": autoscaling_min}
    return {"proxy": proxy}


def existing_gateway_values(name: str, http_listener: str, https_listener: str) -> dict[str, Any]:
    """Values that attach a gateway-api stack to an existing Gateway (istio.gatewayApi.create
    false) of that name, in istio.gateway.namespace, with those listeners."""
    return {"istio": {"gateway": {"name": name},
                      "gatewayApi": {"create": False, "httpListener": http_listener,
                                     "httpsListener": https_listener}}}


def namespace_values(namespace: str) -> dict[str, Any]:
    """Values that put oauth2-proxy and Redis into ``namespace``."""
    return {"namespace": namespace}


def cookie_secret_rotation_values(cfg: StackConfig, to: str | None = None) -> dict[str, Any]:
    """Values that rotate the cookie secret (rotation.cookieSecret): the marker ``to``, else its
    marker plus one when it is a number, else ``2``."""
    marker = cfg.rotation.cookie_secret
    if to is None:
        to = str(int(marker) + 1) if marker.isdigit() else "2"
    return {"rotation": {"cookieSecret": to}}


def flatten_values(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested values -> ``{"a.b.c": leaf}``: the paths of ``pulumi config set --path`` (lists
    stay whole values)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten_values(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def preflight_values(enabled: bool) -> dict[str, Any]:
    """The `authproxy:*` values that switch the preflight on or off (for runs whose cluster has
    no real Istio: the live harness, generated stacks)."""
    return {"preflight": {"enabled": enabled}}
