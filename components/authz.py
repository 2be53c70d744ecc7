"""Authorization at the ingress gateway and at the apps' sidecars.

**ext_authz through oauth2-proxy, two modes with the same behaviour** (``istio.extAuthzMode``):

``extension-provider`` (default)
    The mesh config registers oauth2-proxy as an ``envoyExtAuthzHttp`` extension provider
    (:func:`mesh_config`: exported as the stack output ``meshConfig`` and, when the stack installs
    Istio, put into istiod's Helm values by the same function). An AuthorizationPolicy with
    ``action: CUSTOM`` selects the ingress gateway and targets, per app, the app's host (and
    ``host:*``, since the gateway ignores the port when it picks a route but a policy's ``hosts``
    match the literal authority), every path except ``/oauth2/*`` and the app's public paths
    (two rules per app with that target; see "Plain HTTP" below).
``envoy-filter``
    For meshes whose config cannot be changed: an EnvoyFilter (v1alpha3, ``workloadSelector`` +
    ``configPatches``) inserts the typed ext_authz v3 filter **first** in the gateway's HTTP
    connection managers (``INSERT_FIRST``), built from the *same* provider entry by
    :func:`ext_authz_filter_config` (the translation Istio itself applies), and disables it per
    route (``ExtAuthzPerRoute{disabled: true}``) on the exempt routes that components/ingress.py
    names: ``auth-host``, ``<app>-oauth2``, ``<app>-public-N``, ``<app>-bearer``. The filter runs on
    every route of the selected gateway: give protected hosts their own gateway if it is shared.
    First, like istiod's own CUSTOM ext_authz, it runs before Istio's ``jwt_authn`` and RBAC
    filters, so the gateway verifies the token oauth2-proxy returns and checks the groups in the
    same proxy in both modes. (Inserted before the router, as it used to be, it ran after them and
    the gateway could not check groups; an insertion relative to ``jwt_authn`` would silently
    vanish on a gateway without a RequestAuthentication.)

**Plain HTTP gets the redirect, before any check (both modes).** The Gateway's HTTP server has
``httpsRedirect``, which istiod turns into ``require_tls: ALL`` on its virtual hosts; Envoy's router
answers the 301 when ``X-Forwarded-Proto`` is not ``https`` (envoy source/common/router/
config_impl.cc, ``getRouteFromEntries``), i.e. only *after* every HTTP filter ran, and a redirected
request carries no per-route config, so per-route exemptions cannot help. Without care, plain
``http://`` requests would get oauth2-proxy's 302 to Keycloak and its ``Secure`` CSRF cookie over
plain HTTP. So ext_authz and the gateway's DENY policies skip a request exactly when the router will
redirect it: it arrived on one of the gateway's HTTP listener ports (``istio.gateway.httpTargetPorts``,
the pods' container ports, which is what policies and listener matches see at a gateway) **and** its
``X-Forwarded-Proto`` is not ``https``. The second half matters behind a load balancer that
terminates TLS and forwards to the HTTP port with ``X-Forwarded-Proto: https`` (trusted with
``numTrustedProxies``): the router routes those requests normally, so they are checked. An HTTP
port missing from the list only brings back the 302 over plain HTTP. A port listed as HTTP that is
really HTTPS is safe only while Envoy sets ``X-Forwarded-Proto`` itself (no trusted proxies), so
config.py rejects a port listed as both, and the docs say to list nothing but redirect ports.

- extension-provider: two CUSTOM rules per app with the same target, one ``when
  destination.port notValues <HTTP ports>``, one ``when request.headers[x-forwarded-proto] values
  [https]``.
- envoy-filter: ext_authz is inserted into every gateway listener as before; on the HTTP listener
  ports (``listener.portNumber``) a ``header_to_metadata`` filter records ``X-Forwarded-Proto`` and
  the ext_authz filter is merged with ``filter_enabled_metadata`` = that value is ``https``. The
  per-route exemptions name the virtual hosts of both servers (``host:443`` and ``host:80``).
- DENY policies at the gateway: one rule scoped to the HTTPS ports, one to the HTTP ports with the
  ``X-Forwarded-Proto: https`` condition.
- The gateway's RequestAuthentication has no port scope: a request that carries an *invalid*
  bearer token over plain HTTP is answered 401 by jwt_authn instead of 301. It would get the same
  401 after the redirect, and the client has already sent its credential in clear text; no token or
  a valid one gets the 301.

Both fail closed: ``failOpen``/``failure_mode_allow`` false, and an unreachable or failing
oauth2-proxy (timeout ``istio.extAuthzTimeout``, 5xx) answers 503 (``statusOnError``) instead of
letting the request through. A CUSTOM policy naming an unknown provider makes Istio deny every
request on the gateway. Which headers flow where is components/headers.py.

**Gateway hardening (both modes)**: an EnvoyFilter merges into the gateway's HTTP connection
managers (a) the early header mutation that strips client-sent identity headers before any filter
runs and (b) path normalization equal to the mesh's ``DECODE_AND_MERGE_SLASHES``: ``normalize_path``
(dot segments), ``merge_slashes`` and ``path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD``.
Exemptions are path prefixes (``/oauth2/*``, ``/static/*``); without decoding ``%2F``/``%5C`` a path
such as ``/static/..%2Fadmin`` would match the exemption at the gateway and reach an app that
decodes it as ``/admin``. Case tricks only narrow a match (paths match case-sensitively), so they
send a request *through* the check, never around it. The exported mesh config carries the same
``pathNormalization`` so sidecars (public paths allowed without a token) normalize alike; it is a
mesh-wide setting that rejects nothing but rewrites encoded slashes for every workload.

**API clients** (``apps[].apiClients``): a request with ``Authorization: Bearer ...`` skips the
browser flow and is verified at the gateway, identically in both modes: in extension-provider mode
the app's CUSTOM rule has ``when: request.headers[authorization] notValues ["Bearer *"]``; in
envoy-filter mode the ``<app>-bearer`` route (same header prefix) has ext_authz disabled. The
gateway then checks the token itself: a RequestAuthentication for the realm (issuer, JWKS, audience
= the client id, ``forwardOriginalToken`` so sidecars see it too) rejects forged, expired or
wrong-audience tokens with 401, and a DENY policy refuses any such bearer request to those hosts
whose token did not yield a principal of our issuer (a token from another issuer is otherwise
treated like no token). DENY, not ALLOW: an ALLOW policy on a shared gateway would deny every
request it does not list. Gateway DENY rules name the gateway's HTTP and HTTPS listener ports
(``istio.gateway.httpTargetPorts``, ``httpsTargetPorts``); without ports Istio would apply an
HTTP-only DENY rule to raw TCP servers of the same gateway as "deny everything".

**Per application**, at the gateway (``authorizeAt`` gateway/both; ``both`` is the default, in
both ext_authz modes, since ext_authz runs before jwt_authn and RBAC): a DENY policy scoped to the
app's host and non-exempt paths that refuses requests without our principal or without one of the
app's groups (full group paths). At the app's sidecar (``authorizeAt`` sidecar/both), the second
line: a RequestAuthentication (issuer and JWKS of the realm, audiences = the client id,
``forwardOriginalToken: true``), an ALLOW AuthorizationPolicy that admits a principal of our issuer
(and, if the app lists groups, a ``groups`` claim among them) **only from the gateway's workload
identity** (``source.principals``), plus the app's public paths from anyone; a STRICT mTLS
PeerAuthentication on the same pods, so that identity is proven; and a DestinationRule in the
gateway's namespace that makes the gateway speak Istio mTLS to the app's Service, so a pod without
a sidecar gets no request at all (the TLS handshake fails: 503). The pods are the ones
``apps[].workloadLabels`` names (required; docs/security.md).

**Credential replay.** The ID token every app receives (``Authorization``) carries one audience,
the client id, so it would open any other app. It opens nothing else: another app's sidecar admits
it only from the gateway's identity over mTLS (a compromised app calling directly is refused), and
the gateway refuses a *client-sent* bearer token that was issued to oauth2-proxy's own client
(``azp``) on the API-client route (:func:`bearer_deny_policy_spec`), so an app cannot replay the
user's ID token as an API client either; through the browser route it needs the session cookie,
which no app receives. docs/security.md has the reasoning and what remains.

**Gateway hardening, more (both modes)**: header names with ``_`` rejected (or dropped,
``istio.gateway.underscoreHeaders``) at the edge (``headers_with_underscores_action``); HSTS on
every response of the gateway's hosts, upstream responses (per virtual host) and the gateway's own
local replies (the ext_authz redirect, refusals; HCM ``local_reply_config``); oauth2-proxy's ping
and ready endpoints refused from outside. The cookie filter also works on responses: an app's
``Set-Cookie`` for oauth2-proxy's cookies is removed (components/cookies.py).

**Ambient apps** (``apps[].dataplane: ambient``): the app-side RequestAuthentication and ALLOW
policy (``authorizeAt`` waypoint/both) attach with ``targetRefs`` to the app's Service and run in
its waypoint, with a DENY beside them (:func:`app_deny_policy_spec`); no PeerAuthentication or
DestinationRule (ztunnel and the waypoint speak HBONE, mTLS always); the waypoint admits a
user's token only from the gateway's workload identity, as the sidecar does. The waypoint, the Service
labels and ztunnel's L4 policy are components/ambient.py. The gateway side is unchanged: the
gateway is an ordinary Envoy in ambient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NotRequired, TypedDict

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.common import OAUTH2_PREFIX, format_duration
from components.config import HSTS_HEADER
from components.cookies import SessionCookies, lua_disabled_per_route, lua_filter
from components.gateway_traffic import (
    DEFAULT_TRAFFIC,
    GatewayTraffic,
    destination_rule_spec,
    ext_authz_retry_patch,
    ext_authz_retry_policy,
)
from components.headers import (
    CHECK_PATH_PREFIX,
    HEADERS,
    HeaderFlow,
    early_header_mutation,
    list_matcher,
)
from components.ingress import (
    BEARER_PREFIX,
    CHECKED_MARK,
    GATEWAY_API_GROUP,
    HTTP_PORT,
    HTTPS_PORT,
    IngressApi,
    Route,
    RoutedApp,
    app_routes,
    auth_routes,
    object_labels,
    re2_literal,
    vhost_name,
)
from components.proxy_settings import PING_PATH, READY_PATH
from components.session_keep import keep_filter, keep_on_proxy_routes

Mode = Literal["extension-provider", "envoy-filter"]
AuthorizeAt = Literal["sidecar", "waypoint", "gateway", "both"]
Dataplane = Literal["sidecar", "ambient"]

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
EXT_AUTHZ_PER_ROUTE_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
)
HCM_FILTER = "envoy.filters.network.http_connection_manager"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ROUTER_FILTER = "envoy.filters.http.router"
EXT_AUTHZ_PRIORITY = 10
SESSION_KEEP_PRIORITY = 15
"""Applied after the ext_authz EnvoyFilter (envoy-filter mode), whose filter it is inserted
before."""
COOKIE_STRIP_PRIORITY = 20
"""Applied after the ext_authz EnvoyFilter, so the cookie filter's INSERT_BEFORE router lands
between ext_authz and the router (oauth2-proxy must see the cookies first)."""
STATUS_ON_ERROR = 503
"""Answer when oauth2-proxy cannot be asked (down, timeout, 5xx): fail closed, and say so
truthfully instead of Envoy's default 403."""
PATH_NORMALIZATION = "DECODE_AND_MERGE_SLASHES"
OAUTH2_PATHS = OAUTH2_PREFIX + "*"
GROUPS_CLAIM = "request.auth.claims[groups]"
AZP_CLAIM = "request.auth.claims[azp]"
"""The client a token was issued to (OIDC ``azp``): oauth2-proxy's own client for the ID tokens it
hands the apps."""
CHECKED_KEY = f"request.headers[{CHECKED_MARK}]"
UNDERSCORE_ACTIONS = {"reject": "REJECT_REQUEST", "drop": "DROP_HEADER"}
"""``istio.gateway.underscoreHeaders`` -> Envoy's ``headers_with_underscores_action``."""
AUTHORIZATION_KEY = "request.headers[authorization]"
FORWARDED_PROTO_KEY = "request.headers[x-forwarded-proto]"
DESTINATION_PORT_KEY = "destination.port"
HTTPS_SCHEME = "https"
"""The only ``X-Forwarded-Proto`` value Envoy's router does not redirect on a ``require_tls``
virtual host (exact, case-sensitive comparison)."""
HEADER_TO_METADATA_FILTER = "envoy.filters.http.header_to_metadata"
HEADER_TO_METADATA_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
)
SCHEME_METADATA = ("authproxy.gateway", "x_forwarded_proto")
"""(dynamic metadata namespace, key) where envoy-filter mode records ``X-Forwarded-Proto`` on the
HTTP listener."""


class ProviderArgs(TypedDict):
    """oauth2-proxy as the ext_authz service."""

    name: str
    """Extension provider name (istio.providerName)."""
    service_host: str
    """Cluster DNS name of oauth2-proxy's Service."""
    port: int
    timeout_seconds: int


class GatewayRef(TypedDict):
    name: str
    namespace: str
    api: IngressApi
    """``istio``: policies select the gateway pods by ``selector``; ``gateway-api``: they attach
    to the Gateway API Gateway ``namespace/name`` with ``targetRefs``."""
    selector: dict[str, str]
    http_ports: list[int]
    """Container ports of the gateway's plain-HTTP listener (the one redirecting to HTTPS)."""
    https_ports: list[int]
    """Container ports of the gateway's HTTPS listener."""
    principal: str | None
    """The gateway pods' workload identity (``cluster.local/ns/<ns>/sa/<sa>``); the apps' sidecars
    admit tokens only from it. None: unknown (then no app may check at its sidecar)."""
    hsts: str
    """The ``Strict-Transport-Security`` value for every response of the gateway's hosts."""
    underscore_headers: Literal["reject", "drop"]


class JwtArgs(TypedDict):
    issuer: str
    jwks_uri: str
    audiences: list[str]


class AppAuthzArgs(RoutedApp):
    host: str
    namespace: str
    """The app's namespace (its pods and sidecar policies)."""
    selector: dict[str, str]
    """Labels of the app's pods (``apps[].workloadLabels``; empty only without sidecar checks)."""
    groups: list[str]
    """Full group paths (``/admins``), as the token's ``groups`` claim carries them."""
    authorize_at: AuthorizeAt
    dataplane: Dataplane
    """``sidecar``: the app-side policies select the pods; ``ambient``: they attach to the app's
    Service (``targetRefs``), which its waypoint enforces (components/ambient.py)."""
    service: str
    """Name of the app's Service (in ``namespace``)."""
    service_host: str
    """Cluster DNS name of the app's Service (the gateway's mTLS DestinationRule)."""


class AuthzArgs(TypedDict):
    mode: Mode
    provider: ProviderArgs
    gateway: GatewayRef
    auth_host: str
    session_cookie_name: str
    """oauth2-proxy's ``--cookie-name`` (components/cookies.py derives every cookie it sets)."""
    jwt: JwtArgs
    client_id: str
    """oauth2-proxy's OIDC client: the ``azp`` of every ID token it hands the apps."""
    apps: list[AppAuthzArgs]
    traffic: NotRequired[GatewayTraffic]
    """Retries of the check and ejection of unreachable replicas (components/gateway_traffic.py);
    default :data:`~components.gateway_traffic.DEFAULT_TRAFFIC`."""


def traffic_of(args: AuthzArgs) -> GatewayTraffic:
    return args.get("traffic", DEFAULT_TRAFFIC)


# --------------------------------------------------------------------------------------------
# The extension provider and its Envoy form
# --------------------------------------------------------------------------------------------


def extension_provider(p: ProviderArgs, flow: HeaderFlow = HEADERS) -> dict[str, Any]:
    """The mesh config ``extensionProviders`` entry that registers oauth2-proxy."""
    return {
        "name": p["name"],
        "envoyExtAuthzHttp": {
            "service": p["service_host"],
            "port": p["port"],
            "timeout": format_duration(p["timeout_seconds"]),
            "failOpen": False,
            "statusOnError": str(STATUS_ON_ERROR),
            "pathPrefix": CHECK_PATH_PREFIX,
            "includeRequestHeadersInCheck": list(flow.check_request),
            "includeAdditionalHeadersInCheck": dict(flow.check_additional),
            "headersToUpstreamOnAllow": list(flow.upstream_on_allow),
            "headersToDownstreamOnAllow": list(flow.downstream_on_allow),
            "headersToDownstreamOnDeny": list(flow.downstream_on_deny),
        },
    }


def mesh_config(mode: Mode, p: ProviderArgs) -> dict[str, Any]:
    """What to merge into istiod's ``meshConfig``: the provider (extension-provider mode) and the
    path normalization the exemptions rely on (both modes)."""
    out: dict[str, Any] = {}
    if mode == "extension-provider":
        out["extensionProviders"] = [extension_provider(p)]
    out["pathNormalization"] = {"normalization": PATH_NORMALIZATION}
    return out


def mesh_config_yaml(mode: Mode, p: ProviderArgs) -> str:
    """:func:`mesh_config` as YAML with a short how-to comment (the ``meshConfig`` stack output)."""
    if mode == "extension-provider":
        head = (
            "# Merge into istiod's meshConfig (Helm value `meshConfig`, or the `mesh` key of the\n"
            "# istio ConfigMap): append the entry to an existing extensionProviders list.\n"
        )
    else:
        head = (
            "# istio.extAuthzMode=envoy-filter: no extension provider is needed (an EnvoyFilter\n"
            "# configures the gateway). Recommended: the same path normalization for sidecars.\n"
        )
    return head + yaml.safe_dump(mesh_config(mode, p), sort_keys=False, default_flow_style=False)


def outbound_cluster(host: str, port: int) -> str:
    """Istio's name for the Envoy cluster of a Service port."""
    return f"outbound|{port}||{host}"


def ext_authz_filter_config(provider: dict[str, Any], cluster: str) -> dict[str, Any]:
    """The typed Envoy ext_authz v3 config for a mesh ``envoyExtAuthzHttp`` entry, field by field
    as istiod translates it (pilot/pkg/security/authz/builder/extauthz.go), so both modes send
    the same check and pass the same headers."""
    h = provider["envoyExtAuthzHttp"]
    return {
        "@type": EXT_AUTHZ_TYPE,
        "transport_api_version": "V3",
        "failure_mode_allow": bool(h["failOpen"]),
        "status_on_error": {"code": int(h["statusOnError"])},
        "allowed_headers": list_matcher(h["includeRequestHeadersInCheck"]),
        "http_service": {
            "server_uri": {
                "uri": f"http://{h['service']}",
                "cluster": cluster,
                "timeout": h["timeout"],
            },
            "path_prefix": h["pathPrefix"],
            "authorization_request": {
                "headers_to_add": [
                    {"key": k, "value": v}
                    for k, v in sorted(h["includeAdditionalHeadersInCheck"].items())
                ]
            },
            "authorization_response": {
                "allowed_upstream_headers": list_matcher(h["headersToUpstreamOnAllow"]),
                "allowed_client_headers": list_matcher(h["headersToDownstreamOnDeny"]),
                "allowed_client_headers_on_success": list_matcher(h["headersToDownstreamOnAllow"]),
            },
        },
    }


# --------------------------------------------------------------------------------------------
# Gateway: ext_authz coverage
# --------------------------------------------------------------------------------------------


def host_patterns(host: str) -> list[str]:
    """A host as policy ``hosts`` entries: bare and with any port."""
    return [host, f"{host}:*"]


def exempt_paths(app: AppAuthzArgs) -> list[str]:
    """Paths of an app host that never go through ext_authz."""
    return [OAUTH2_PATHS, *app["public_paths"]]


def principal(jwt: JwtArgs) -> str:
    """Request principals of our issuer (``iss/sub``)."""
    return f"{jwt['issuer']}/*"


def _selector(gw: GatewayRef) -> dict[str, Any]:
    return {"matchLabels": dict(gw["selector"])}


def gateway_target_refs(gw: GatewayRef) -> list[dict[str, str]]:
    """Istio's attachment of a policy to a Gateway API Gateway (same namespace as the policy)."""
    return [{"group": GATEWAY_API_GROUP, "kind": "Gateway", "name": gw["name"]}]


def policy_attachment(gw: GatewayRef) -> dict[str, Any]:
    """How an AuthorizationPolicy or RequestAuthentication at the gateway picks its proxies:
    ``selector`` (Istio Gateway) or ``targetRefs`` (Gateway API Gateway)."""
    if gw["api"] == "gateway-api":
        return {"targetRefs": gateway_target_refs(gw)}
    return {"selector": _selector(gw)}


def envoy_filter_attachment(gw: GatewayRef) -> dict[str, Any]:
    """The same for an EnvoyFilter: ``workloadSelector`` or ``targetRefs``."""
    if gw["api"] == "gateway-api":
        return {"targetRefs": gateway_target_refs(gw)}
    return {"workloadSelector": {"labels": dict(gw["selector"])}}


def vhost_ports(gw: GatewayRef) -> tuple[int, ...]:
    """Gateway servers whose virtual hosts carry the named routes: both with the Istio Gateway
    (the HTTP server's ``httpsRedirect`` keeps the routes), only HTTPS with the Gateway API (the
    HTTP listener has nothing but the redirect route)."""
    return (HTTPS_PORT,) if gw["api"] == "gateway-api" else (HTTPS_PORT, HTTP_PORT)


def _ports(ports: list[int]) -> list[str]:
    return [str(p) for p in ports]


def arrived_as_https() -> dict[str, Any]:
    """The condition under which the router does not redirect a request on the HTTP listener."""
    return {"key": FORWARDED_PROTO_KEY, "values": [HTTPS_SCHEME]}


def not_redirected(gw: GatewayRef) -> list[dict[str, Any]]:
    """Alternative ``when`` conditions (any one) that together cover every request the gateway's
    router does not redirect to HTTPS: not on an HTTP listener port, or arrived as HTTPS."""
    return [{"key": DESTINATION_PORT_KEY, "notValues": _ports(gw["http_ports"])}, arrived_as_https()]


def custom_policy_spec(args: AuthzArgs) -> dict[str, Any]:
    """The CUSTOM AuthorizationPolicy (extension-provider mode): per protected app, two rules with
    the same target that together cover every request the router will not redirect to HTTPS."""
    rules = []
    for app in args["apps"]:
        to = [{"operation": {"hosts": host_patterns(app["host"]), "notPaths": exempt_paths(app)}}]
        bearer = (
            [{"key": AUTHORIZATION_KEY, "notValues": [BEARER_PREFIX + "*"]}]
            if app["api_clients"] else []
        )
        for cond in not_redirected(args["gateway"]):
            rules.append({"to": to, "when": [cond, *bearer]})
    return {
        **policy_attachment(args["gateway"]),
        "action": "CUSTOM",
        "provider": {"name": args["provider"]["name"]},
        "rules": rules,
    }


def _route_disable_patch(vhost: str, route: str, per_filter: dict[str, Any]) -> dict[str, Any]:
    return {
        "applyTo": "HTTP_ROUTE",
        "match": {
            "context": "GATEWAY",
            "routeConfiguration": {"vhost": {"name": vhost, "route": {"name": route}}},
        },
        "patch": {
            "operation": "MERGE",
            "value": {"typed_per_filter_config": per_filter},
        },
    }


def _on_both_servers(gw: GatewayRef, routes: list[tuple[str, str]],
                     per_filter: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-route patches for the virtual hosts of the Gateway servers that carry the routes
    (:func:`vhost_ports`: ``host:443``, and ``host:80`` with the Istio Gateway)."""
    return [
        _route_disable_patch(vhost_name(host, port), route, per_filter)
        for port in vhost_ports(gw)
        for host, route in routes
    ]


def gateway_routes_where(args: AuthzArgs, keep: Callable[[Route], bool]) -> list[tuple[str, str]]:
    """(host, route name) of the gateway routes (auth host, then each app) that ``keep`` selects."""
    out = [(args["auth_host"], r.name) for r in auth_routes() if keep(r)]
    for app in args["apps"]:
        out += [(app["host"], r.name) for r in app_routes(app, args["gateway"]["api"]) if keep(r)]
    return out


def exempt_routes(args: AuthzArgs) -> list[tuple[str, str]]:
    """(host, route name) of every gateway route where ext_authz must not run."""
    return gateway_routes_where(args, lambda r: not r.ext_authz)


def _hcm_match(port: int | None = None) -> dict[str, Any]:
    """Match the gateway's HTTP connection managers (on one listener port, or every listener)."""
    listener: dict[str, Any] = {} if port is None else {"portNumber": port}
    listener["filterChain"] = {"filter": {"name": HCM_FILTER}}
    return {"context": "GATEWAY", "listener": listener}


def _http_listener_match(sub_filter: str, port: int | None = None) -> dict[str, Any]:
    """Match an HTTP filter of the gateway's HTTP connection managers (on one listener port, or
    on every listener)."""
    listener: dict[str, Any] = {} if port is None else {"portNumber": port}
    listener["filterChain"] = {"filter": {"name": HCM_FILTER, "subFilter": {"name": sub_filter}}}
    return {"context": "GATEWAY", "listener": listener}


def http_listener_patches(gw: GatewayRef) -> list[dict[str, Any]]:
    """envoy-filter mode, per HTTP listener port: record ``X-Forwarded-Proto`` in dynamic metadata
    before ext_authz, and enable ext_authz there only when it is ``https`` (otherwise the router
    answers the redirect)."""
    ns, key = SCHEME_METADATA
    record = {
        "name": HEADER_TO_METADATA_FILTER,
        "typed_config": {
            "@type": HEADER_TO_METADATA_TYPE,
            "request_rules": [{
                "header": "x-forwarded-proto",
                "on_header_present": {"metadata_namespace": ns, "key": key, "type": "STRING"},
                "remove": False,
            }],
        },
    }
    only_https = {
        "name": EXT_AUTHZ_FILTER,
        "typed_config": {
            "@type": EXT_AUTHZ_TYPE,
            "filter_enabled_metadata": {
                "filter": ns,
                "path": [{"key": key}],
                "value": {"string_match": {"exact": HTTPS_SCHEME}},
            },
        },
    }
    out: list[dict[str, Any]] = []
    for port in gw["http_ports"]:
        match = _http_listener_match(EXT_AUTHZ_FILTER, port)
        out.append({"applyTo": "HTTP_FILTER", "match": match,
                    "patch": {"operation": "INSERT_BEFORE", "value": record}})
        out.append({"applyTo": "HTTP_FILTER", "match": match,
                    "patch": {"operation": "MERGE", "value": only_https}})
    return out


def ext_authz_envoy_filter_spec(args: AuthzArgs) -> dict[str, Any]:
    """The EnvoyFilter of envoy-filter mode: the ext_authz HTTP filter before the router of every
    gateway listener, off on the HTTP listener unless the request arrived as HTTPS, and per-route
    exemptions on the virtual hosts of both Gateway servers."""
    p = args["provider"]
    typed = ext_authz_filter_config(
        extension_provider(p), outbound_cluster(p["service_host"], p["port"])
    )
    retry = ext_authz_retry_policy(traffic_of(args)["check_retries"], p["timeout_seconds"])
    if retry is not None:
        typed["http_service"]["retry_policy"] = retry
    patches: list[dict[str, Any]] = [
        {
            # First in the chain, as istiod places its own ext_authz: before jwt_authn and RBAC,
            # which then verify the token oauth2-proxy returns and check the groups.
            "applyTo": "HTTP_FILTER",
            "match": _hcm_match(),
            "patch": {
                "operation": "INSERT_FIRST",
                "value": {"name": EXT_AUTHZ_FILTER, "typed_config": typed},
            },
        }
    ]
    patches += http_listener_patches(args["gateway"])
    patches += _on_both_servers(
        args["gateway"], exempt_routes(args), {EXT_AUTHZ_FILTER: {"@type": EXT_AUTHZ_PER_ROUTE_TYPE, "disabled": True}}
    )
    return {
        **envoy_filter_attachment(args["gateway"]),
        # The header_to_metadata insertion is relative to ext_authz; an explicit priority orders
        # this EnvoyFilter against the others (the cookie filter comes after it).
        "priority": EXT_AUTHZ_PRIORITY,
        "configPatches": patches,
    }


def cookie_forwarding_routes(args: AuthzArgs) -> list[tuple[str, str]]:
    """(host, route name) of every gateway route where oauth2-proxy's cookies are kept: the
    routes to oauth2-proxy, and every route of an app that opted out."""
    return gateway_routes_where(args, lambda r: not r.strip_cookies)


def session_cookie_envoy_filter_spec(args: AuthzArgs) -> dict[str, Any]:
    """Both modes: the Lua filter removing oauth2-proxy's cookies (components/cookies.py) before
    the router of every gateway listener, after ext_authz (``priority`` orders it after the
    envoy-filter mode's insertion; in extension-provider mode istiod's ext_authz sits before the
    router anyway), switched off on the routes :func:`cookie_forwarding_routes` names."""
    cookies = SessionCookies(args["session_cookie_name"])
    patches: list[dict[str, Any]] = [
        {
            "applyTo": "HTTP_FILTER",
            "match": _http_listener_match(ROUTER_FILTER),
            "patch": {"operation": "INSERT_BEFORE", "value": lua_filter(cookies)},
        }
    ]
    patches += _on_both_servers(args["gateway"], cookie_forwarding_routes(args),
                                lua_disabled_per_route())
    return {
        **envoy_filter_attachment(args["gateway"]),
        "priority": COOKIE_STRIP_PRIORITY,
        "configPatches": patches,
    }


def proxy_routes(args: AuthzArgs) -> list[tuple[str, str]]:
    """(host, route name) of every gateway route to oauth2-proxy (``/oauth2/*``, the auth host)."""
    return gateway_routes_where(args, lambda r: r.backend == "proxy")


def session_keep_envoy_filter_spec(args: AuthzArgs) -> dict[str, Any]:
    """The EnvoyFilter (both modes) that keeps a session cookie through a session-store outage
    (components/session_keep.py): a response filter right before ext_authz, so it sees the
    denials ext_authz answers with; on the routes to oauth2-proxy it drops nothing (sign-out) and
    takes the session ticket off sign-in callbacks (a sign-in never reuses a ticket)."""
    cookies = SessionCookies(args["session_cookie_name"])
    patches: list[dict[str, Any]] = [{
        "applyTo": "HTTP_FILTER",
        "match": _http_listener_match(EXT_AUTHZ_FILTER),
        "patch": {"operation": "INSERT_BEFORE", "value": keep_filter(cookies)},
    }]
    patches += _on_both_servers(args["gateway"], proxy_routes(args), keep_on_proxy_routes(cookies))
    return {
        **envoy_filter_attachment(args["gateway"]),
        "priority": SESSION_KEEP_PRIORITY,
        "configPatches": patches,
    }


def hsts_header(value: str) -> dict[str, Any]:
    """Envoy ``HeaderValueOption`` that sets HSTS, replacing whatever the response carried (an app
    could otherwise send ``max-age=0`` and switch it off for the host)."""
    return {"header": {"key": HSTS_HEADER, "value": value},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def authority_regex(hosts: list[str]) -> str:
    """RE2 matching an ``:authority`` of one of ``hosts`` (any case, optional port)."""
    alts = "|".join(re2_literal(h) for h in dict.fromkeys(hosts))
    return f"(?i)^(?:{alts})(?::[0-9]+)?$"


def hardening_hosts(args: AuthzArgs) -> list[str]:
    """The hosts whose virtual hosts the stack owns on the gateway: the auth host and each app."""
    return [args["auth_host"], *(a["host"] for a in args["apps"])]


def gateway_hardening_envoy_filter_spec(args: AuthzArgs) -> dict[str, Any]:
    """Both modes: strip client identity headers before any filter, normalize paths, refuse (or
    drop) header names with underscores, and set HSTS on every HTTPS response of our hosts: on
    upstream responses per virtual host, on the gateway's local replies (ext_authz's redirect,
    RBAC refusals, 503s; route response headers never reach those) by the HTTPS listeners'
    ``local_reply_config``, scoped to our hosts by ``:authority``."""
    gw = args["gateway"]
    hsts = hsts_header(gw["hsts"])
    patches: list[dict[str, Any]] = [
        {
            "applyTo": "NETWORK_FILTER",
            "match": {"context": "GATEWAY", "listener": {"filterChain": {"filter": {"name": HCM_FILTER}}}},
            "patch": {
                "operation": "MERGE",
                "value": {
                    "typed_config": {
                        "@type": HCM_TYPE,
                        "normalize_path": True,
                        "merge_slashes": True,
                        "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
                        "early_header_mutation_extensions": [early_header_mutation()],
                        "common_http_protocol_options": {
                            "headers_with_underscores_action":
                                UNDERSCORE_ACTIONS[gw["underscore_headers"]],
                        },
                    }
                },
            },
        }
    ]
    local_replies = {
        "mappers": [{
            "filter": {"header_filter": {"header": {
                "name": ":authority",
                "string_match": {"safe_regex": {"regex": authority_regex(hardening_hosts(args))}},
            }}},
            "headers_to_add": [hsts],
        }],
    }
    for port in gw["https_ports"]:
        patches.append({
            "applyTo": "NETWORK_FILTER",
            "match": {"context": "GATEWAY", "listener": {
                "portNumber": port, "filterChain": {"filter": {"name": HCM_FILTER}}}},
            "patch": {"operation": "MERGE", "value": {"typed_config": {
                "@type": HCM_TYPE, "local_reply_config": local_replies}}},
        })
    for host in hardening_hosts(args):
        patches.append({
            "applyTo": "VIRTUAL_HOST",
            "match": {"context": "GATEWAY",
                      "routeConfiguration": {"vhost": {"name": vhost_name(host, HTTPS_PORT)}}},
            "patch": {"operation": "MERGE", "value": {"response_headers_to_add": [hsts]}},
        })
    return {**envoy_filter_attachment(gw), "configPatches": patches}


# --------------------------------------------------------------------------------------------
# JWT and group policies
# --------------------------------------------------------------------------------------------


def jwt_rule(jwt: JwtArgs) -> dict[str, Any]:
    return {
        "issuer": jwt["issuer"],
        "jwksUri": jwt["jwks_uri"],
        "audiences": list(jwt["audiences"]),
        "forwardOriginalToken": True,
    }


def at_gateway(app: AppAuthzArgs) -> bool:
    return app["authorize_at"] in ("gateway", "both")


def at_app_proxy(app: AppAuthzArgs) -> bool:
    """The app's own proxy checks the JWT and groups: its sidecar, or an ambient app's waypoint."""
    return app["authorize_at"] in ("sidecar", "waypoint", "both")


def app_attachment(app: AppAuthzArgs) -> dict[str, Any]:
    """How an app-side policy picks its proxy: the pods' ``selector`` (sidecar), or
    ``targetRefs`` to the app's Service (ambient: enforced by the Service's waypoint; a
    ``selector`` policy would land on ztunnel, which cannot read HTTP)."""
    if app["dataplane"] == "ambient":
        return {"targetRefs": [{"group": "", "kind": "Service", "name": app["service"]}]}
    return {"selector": _app_selector(app)}


def needs_gateway_jwt(args: AuthzArgs) -> bool:
    """The gateway verifies tokens when an app takes bearer tokens or is authorized there."""
    return any(a["api_clients"] or at_gateway(a) for a in args["apps"])


def gateway_request_authentication_spec(args: AuthzArgs) -> dict[str, Any]:
    return {**policy_attachment(args["gateway"]), "jwtRules": [jwt_rule(args["jwt"])]}


def _scopes(args: AuthzArgs, app: AppAuthzArgs) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Where a gateway DENY rule for the app applies, as (``to`` entry, extra ``when``) pairs: the
    app's host minus exempt paths on the HTTPS listener ports, and on the HTTP listener ports only
    for requests that arrived as HTTPS (the others get the redirect). The ports also keep Istio
    from turning the HTTP-only rule into "deny everything" on raw TCP servers."""
    gw = args["gateway"]

    def to(ports: list[int]) -> dict[str, Any]:
        return {"operation": {"hosts": host_patterns(app["host"]), "ports": _ports(ports),
                              "notPaths": exempt_paths(app)}}

    return [(to(gw["https_ports"]), []), (to(gw["http_ports"]), [arrived_as_https()])]


def bearer_deny_policy_spec(args: AuthzArgs) -> dict[str, Any] | None:
    """DENY bearer requests to API-client apps (a) whose token gave no principal of our issuer,
    or (b) that the client sent with a token issued to oauth2-proxy's own client (``azp``): the
    ID token every app receives, replayed as if it were a machine client's. A request oauth2-proxy
    checked carries its :data:`~components.ingress.CHECKED_MARK` (clients cannot send it: the edge
    strips ``x-auth-request-*``), so (b) never touches the signed-in browser path."""
    apps = [a for a in args["apps"] if a["api_clients"]]
    if not apps:
        return None
    bearer = {"key": AUTHORIZATION_KEY, "values": [BEARER_PREFIX + "*"]}
    replayed = [{"key": AZP_CLAIM, "values": [args["client_id"]]},
                {"key": CHECKED_KEY, "notValues": ["*"]}]
    rules: list[dict[str, Any]] = []
    for a in apps:
        for to, extra in _scopes(args, a):
            rules.append({"from": [{"source": {"notRequestPrincipals": [principal(args["jwt"])]}}],
                          "to": [to], "when": [bearer, *extra]})
            rules.append({"to": [to], "when": [bearer, *replayed, *extra]})
    return {**policy_attachment(args["gateway"]), "action": "DENY", "rules": rules}


def proxy_health_deny_policy_spec(args: AuthzArgs) -> dict[str, Any]:
    """DENY oauth2-proxy's ping and ready endpoints from outside, on every host of the stack:
    they are for the kubelet's probes, which reach the pod directly, and ``ready`` answers with
    the session store's connection error."""
    gw = args["gateway"]
    hosts = [h for host in hardening_hosts(args) for h in host_patterns(host)]

    def to(ports: list[int]) -> dict[str, Any]:
        return {"operation": {"hosts": hosts, "ports": _ports(ports), "paths": [PING_PATH, READY_PATH]}}

    return {**policy_attachment(gw), "action": "DENY",
            "rules": [{"to": [to(gw["https_ports"])]},
                      {"to": [to(gw["http_ports"])], "when": [arrived_as_https()]}]}


def gateway_app_policy_spec(args: AuthzArgs, app: AppAuthzArgs) -> dict[str, Any]:
    """DENY at the gateway (authorizeAt gateway/both): no principal of our issuer, or (if the app
    lists groups) no `groups` claim among them."""
    rules: list[dict[str, Any]] = []
    for to, extra in _scopes(args, app):
        no_principal: dict[str, Any] = {
            "from": [{"source": {"notRequestPrincipals": [principal(args["jwt"])]}}], "to": [to]}
        if extra:
            no_principal["when"] = list(extra)
        rules.append(no_principal)
        if app["groups"]:
            rules.append({"to": [to],
                          "when": [{"key": GROUPS_CLAIM, "notValues": list(app["groups"])}, *extra]})
    return {**policy_attachment(args["gateway"]), "action": "DENY", "rules": rules}


def _app_selector(app: AppAuthzArgs) -> dict[str, Any]:
    if not app["selector"]:
        raise ValueError(f"app {app['name']}: sidecar policies need the pods' labels "
                         "(apps[].workloadLabels); an empty selector would select every pod")
    return {"matchLabels": dict(app["selector"])}


def app_request_authentication_spec(args: AuthzArgs, app: AppAuthzArgs) -> dict[str, Any]:
    return {**app_attachment(app), "jwtRules": [jwt_rule(args["jwt"])]}


def gateway_principals(args: AuthzArgs) -> list[str]:
    """The workload identities a user's token is admitted from at an app's sidecar or waypoint."""
    p = args["gateway"]["principal"]
    if not p:
        raise ValueError("the apps' sidecars and waypoints admit tokens only from the gateway's workload "
                         "identity, which is not known (istio.gateway.serviceAccount)")
    return [p]


def app_authorization_policy_spec(args: AuthzArgs, app: AppAuthzArgs) -> dict[str, Any]:
    """ALLOW at the app's sidecar or an ambient app's waypoint: our principal (and groups)
    **arriving from the gateway's workload identity** (mTLS; at a waypoint the peer of the HBONE
    connection), or a public path from anyone. A token an app received, replayed by that app
    straight at this proxy, comes from the app's own identity and is refused."""
    source: dict[str, Any] = {"principals": gateway_principals(args),
                              "requestPrincipals": [principal(args["jwt"])]}
    signed_in: dict[str, Any] = {"from": [{"source": source}]}
    if app["groups"]:
        signed_in["when"] = [{"key": GROUPS_CLAIM, "values": list(app["groups"])}]
    rules = [signed_in]
    if app["public_paths"]:
        rules.append({"to": [{"operation": {"paths": list(app["public_paths"])}}]})
    return {**app_attachment(app), "action": "ALLOW", "rules": rules}


def app_deny_policy_spec(args: AuthzArgs, app: AppAuthzArgs) -> dict[str, Any]:
    """DENY at an ambient app's waypoint, beside the ALLOW, on any path but the public ones: a
    request without our principal, one not from the gateway's workload identity (a user's token
    replayed from inside the mesh), or (if the app lists groups) without one of its groups. ALLOW
    policies add up, so another ALLOW attached to a shared waypoint (the namespace's, a
    GatewayClass's) could admit what ours does not; a DENY holds whatever else is attached."""
    scope = {"to": [{"operation": {"notPaths": list(app["public_paths"])}}]} if app["public_paths"] else {}
    rules: list[dict[str, Any]] = [
        {"from": [{"source": {"notRequestPrincipals": [principal(args["jwt"])]}}], **scope},
        {"from": [{"source": {"notPrincipals": gateway_principals(args)}}], **scope},
    ]
    if app["groups"]:
        rules.append({**scope, "when": [{"key": GROUPS_CLAIM, "notValues": list(app["groups"])}]})
    return {**app_attachment(app), "action": "DENY", "rules": rules}


def app_peer_authentication_spec(app: AppAuthzArgs) -> dict[str, Any]:
    """STRICT mTLS on the app's pods: every caller proves its workload identity, so the sidecar
    policy's ``principals`` mean what they say, and plain-text callers are refused."""
    return {"selector": _app_selector(app), "mtls": {"mode": "STRICT"}}


def app_destination_rule_spec(app: AppAuthzArgs) -> dict[str, Any]:
    """In the gateway's namespace, visible only there: the gateway always speaks Istio mTLS to the
    app's Service (not only to pods that look sidecar-injected), so a pod without a sidecar fails
    the handshake instead of receiving requests nothing else checks."""
    return {"host": app["service_host"], "exportTo": ["."],
            "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}


AUTHORIZE_AT_ANNOTATION = "authproxy.io/authorize-at"
"""On the sidecar policy of an app checked only there (``authorizeAt: sidecar``): the choice stays
visible on the object, and the policy pack's groups-checked-at-the-gateway rule accepts it."""


def sidecar_policy_annotations(app: AppAuthzArgs) -> dict[str, str]:
    return {AUTHORIZE_AT_ANNOTATION: "sidecar"} if app["authorize_at"] == "sidecar" else {}


def sidecar_only_notice(app: AppAuthzArgs) -> str | None:
    """The preview warning for an app whose groups only its sidecar checks."""
    if app["authorize_at"] != "sidecar":
        return None
    what = f"groups {app['groups']}" if app["groups"] else "the sign-in"
    return (f"app {app['name']}: {what} are enforced only by the app's sidecar "
            "(authorizeAt: sidecar); a pod the sidecar policies miss (other labels, no sidecar) "
            "lets every signed-in user in. Use authorizeAt: both (the default).")


class Authz(pulumi.ComponentResource):
    """ext_authz (either mode), gateway hardening, and the JWT and group policies.

    Outputs:
      mesh_config: the YAML to merge into istiod's meshConfig (see :func:`mesh_config_yaml`).
      provider_name: the extension provider the CUSTOM policy names.
    """

    mesh_config: pulumi.Output[str]
    provider_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: AuthzArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("authproxy:authz:Authz", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        gw = args["gateway"]
        prefix = gw["name"]

        def cr(logical: str, api: str, kind: str, obj: str, ns: str, spec: dict[str, Any],
               annotations: dict[str, str] | None = None) -> None:
            meta: dict[str, Any] = {"name": obj, "namespace": ns, "labels": object_labels()}
            if annotations:
                meta["annotations"] = annotations
            k8s.apiextensions.CustomResource(
                f"{name}-{logical}",
                api_version=api,
                kind=kind,
                metadata=meta,
                spec=spec,
                opts=child,
            )

        sec, net = "security.istio.io/v1", "networking.istio.io/v1alpha3"
        gns = gw["namespace"]
        cr("hardening", net, "EnvoyFilter", f"{prefix}-gateway-hardening", gns,
           gateway_hardening_envoy_filter_spec(args))
        cr("proxy-health", sec, "AuthorizationPolicy", f"{prefix}-deny-proxy-health", gns,
           proxy_health_deny_policy_spec(args))
        cr("cookie-strip", net, "EnvoyFilter", f"{prefix}-session-cookie-strip", gns,
           session_cookie_envoy_filter_spec(args))
        if args["mode"] == "extension-provider":
            cr("ext-authz", sec, "AuthorizationPolicy", f"{prefix}-ext-authz", gns,
               custom_policy_spec(args))
        else:
            cr("ext-authz", net, "EnvoyFilter", f"{prefix}-ext-authz", gns,
               ext_authz_envoy_filter_spec(args))
        cr("cookie-keep", net, "EnvoyFilter", f"{prefix}-session-cookie-keep", gns,
           session_keep_envoy_filter_spec(args))
        traffic = traffic_of(args)
        retry_patch = ext_authz_retry_patch(traffic["check_retries"], args["provider"]["timeout_seconds"])
        if args["mode"] == "extension-provider" and retry_patch is not None:
            cr("check-retry", net, "EnvoyFilter", f"{prefix}-check-retry", gns,
               {**envoy_filter_attachment(gw), "configPatches": [retry_patch]})
        rule = destination_rule_spec(args["provider"]["service_host"], traffic["outlier"])
        if rule is not None:
            cr("proxy-outlier", "networking.istio.io/v1", "DestinationRule",
               f"{prefix}-oauth2-proxy", gns, rule)
        if needs_gateway_jwt(args):
            cr("gateway-jwt", sec, "RequestAuthentication", f"{prefix}-jwt", gns,
               gateway_request_authentication_spec(args))
        bearer = bearer_deny_policy_spec(args)
        if bearer is not None:
            cr("bearer-deny", sec, "AuthorizationPolicy", f"{prefix}-bearer-requires-jwt", gns, bearer)
        for app in args["apps"]:
            a = app["name"]
            if at_gateway(app):
                cr(f"gateway-{a}", sec, "AuthorizationPolicy", f"{prefix}-{a}-gateway-authz", gns,
                   gateway_app_policy_spec(args, app))
            if at_app_proxy(app):
                ans = app["namespace"]
                cr(f"app-{a}-jwt", sec, "RequestAuthentication", f"{prefix}-{a}-jwt", ans,
                   app_request_authentication_spec(args, app))
                cr(f"app-{a}-allow", sec, "AuthorizationPolicy", f"{prefix}-{a}-require-jwt", ans,
                   app_authorization_policy_spec(args, app), sidecar_policy_annotations(app))
                if app["dataplane"] == "ambient":
                    cr(f"app-{a}-deny", sec, "AuthorizationPolicy", f"{prefix}-{a}-deny-unsigned",
                       ans, app_deny_policy_spec(args, app))
                else:
                    cr(f"app-{a}-mtls", sec, "PeerAuthentication", f"{prefix}-{a}-mtls", ans,
                       app_peer_authentication_spec(app))
                    cr(f"app-{a}-gateway-mtls", "networking.istio.io/v1", "DestinationRule",
                       f"{prefix}-{a}-mtls", gns, app_destination_rule_spec(app))
            notice = sidecar_only_notice(app)
            if notice:
                pulumi.log.warn(notice, resource=self)

        self.mesh_config = pulumi.Output.from_input(mesh_config_yaml(args["mode"], args["provider"]))
        self.provider_name = pulumi.Output.from_input(args["provider"]["name"])
        self.register_outputs({"mesh_config": self.mesh_config, "provider_name": self.provider_name})
