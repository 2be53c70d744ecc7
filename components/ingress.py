"""The ingress: an Istio Gateway (HTTP -> HTTPS redirect, HTTPS with a TLS credential), the
VirtualServices of the auth host and of every protected app, and optionally a cert-manager
Certificate for all gateway hosts.

Routes are planned by a pure function (:func:`app_routes`) that names every HTTP route
deterministically; components/authz.py reads the same plan, so in ``envoy-filter`` mode its
per-route ext_authz exemptions match these route names exactly. Per app host, in order:

``<app>-oauth2``    ``/oauth2/*`` -> oauth2-proxy (sign-in / sign-out links on the app host)
``<app>-public-N``  each public path -> the app, no sign-in
``<app>-bearer``    (apps with ``apiClients``) ``Authorization: Bearer ...`` sent by the client (no
                    :data:`CHECKED_MARK` header) -> the app; the token is verified by the gateway's
                    RequestAuthentication instead of the browser flow
``<app>-default``   everything else -> the app, behind ext_authz

The auth host has one route, ``auth-host``, to oauth2-proxy.

VirtualServices live in the gateway's namespace and the Gateway's hosts are written ``./host``, so
only VirtualServices of that namespace can bind routes to these hosts (another namespace cannot
attach a route that skips the checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.common import COMMON_LABELS, OAUTH2_PREFIX
from components.headers import identity_headers, never_upstream

HTTP_PORT = 80
HTTPS_PORT = 443
BEARER_PREFIX = "Bearer "
"""Requests whose Authorization header starts with this (case-sensitive, like Istio's header
matchers) take the API-client path on apps with ``apiClients``."""
AUTH_ROUTE = "auth-host"
COOKIES_FORWARDED_ANNOTATION = "authproxy.io/session-cookies"
"""Set to ``forwarded`` on the VirtualService of an app that opted out of cookie stripping
(``apps[].stripSessionCookies: false``): the opt-out stays visible on the object, and the policy
pack accepts the missing strip there only."""
CHECKED_MARK = "x-auth-request-user"
"""A header only oauth2-proxy's allowed check puts on the request (clients cannot send it: the
gateway strips ``x-auth-request-*`` on arrival). The bearer route requires its absence: Istio's
``jwt_authn`` clears Envoy's route cache after verifying a token, so after the check (which puts
oauth2-proxy's token into ``Authorization``) the route is chosen again, and a signed-in browser
request then matched the bearer route and lost its identity headers. Found by running istiod's own
translation (issue 12); the hand-written one did not clear the route cache."""


class GatewayArgs(TypedDict):
    name: str
    namespace: str
    selector: dict[str, str]
    tls_credential_name: str
    hosts: list[str]
    """Hosts the gateway serves (wildcards allowed)."""


class Backend(TypedDict):
    host: str
    """Cluster DNS name of the Service."""
    port: int
    name: str
    """The Service's name (Gateway API backendRefs name Services, not hosts)."""
    namespace: str


class RoutedApp(TypedDict):
    """What the route plan of an app host depends on."""

    name: str
    public_paths: list[str]
    api_clients: bool
    strip_session_cookies: bool
    """Whether oauth2-proxy's cookies are removed before requests reach the app."""


class AppRouteArgs(RoutedApp):
    host: str
    backend: Backend


class CertificateArgs(TypedDict):
    issuer: str
    issuer_kind: str


IngressApi = Literal["istio", "gateway-api"]


class GatewayApiArgs(TypedDict):
    class_name: str
    create: bool
    """False: attach to an existing Gateway (name/namespace of ``gateway``)."""
    http_listener: str
    https_listener: str


class IngressArgs(TypedDict):
    api: IngressApi
    gateway: GatewayArgs
    gateway_api: GatewayApiArgs
    auth_host: str
    proxy: Backend
    """oauth2-proxy's Service."""
    apps: list[AppRouteArgs]
    certificate: CertificateArgs | None


@dataclass(frozen=True)
class Route:
    """One named VirtualService HTTP route."""

    name: str
    match: tuple[dict[str, Any], ...]
    """HTTPMatchRequest list; empty = every request."""
    backend: Literal["app", "proxy"]
    ext_authz: bool
    """Whether the request must pass oauth2-proxy's check on this route."""
    remove: tuple[str, ...] = field(default=())
    """Request headers removed before the request goes upstream."""
    strip_cookies: bool = True
    """Whether the gateway removes oauth2-proxy's cookies here (components/cookies.py): on every
    route to an app unless the app opted out, never on routes to oauth2-proxy (it reads them)."""


def gateway_ref(gw: GatewayArgs) -> str:
    return f"{gw['namespace']}/{gw['name']}"


def vhost_name(host: str, port: int = HTTPS_PORT) -> str:
    """Envoy virtual host name Istio gives a VirtualService host on the Gateway server of ``port``
    (the server's port number, not the gateway pod's container port)."""
    return f"{host}:{port}"


def public_path_match(path: str) -> dict[str, Any]:
    """The VirtualService URI match equivalent to an AuthorizationPolicy path (exact or
    prefix ending in ``*``)."""
    if path.endswith("*"):
        return {"uri": {"prefix": path[:-1]}}
    return {"uri": {"exact": path}}


def app_routes(app: RoutedApp, api: IngressApi = "istio") -> list[Route]:
    """The routes of one protected app host, most specific first.

    With the Gateway API (``api="gateway-api"``) a header match cannot require a header's
    *absence*, so the bearer route keeps only its ``Authorization`` match and a ``<app>-signed-in``
    route, listed before it, takes the requests that also carry :data:`CHECKED_MARK` (oauth2-proxy
    checked them): the same split as ``withoutHeaders``. Gateway API precedence (more header
    matches first, which Istio's conversion applies) keeps that order."""
    n = app["name"]
    strip = app["strip_session_cookies"]
    routes = [
        Route(f"{n}-oauth2", ({"uri": {"prefix": OAUTH2_PREFIX}},), "proxy", ext_authz=False,
              strip_cookies=False),
    ]
    for i, path in enumerate(app["public_paths"]):
        routes.append(
            Route(f"{n}-public-{i}", (public_path_match(path),), "app", False, identity_headers(),
                  strip)
        )
    if app["api_clients"] and api == "gateway-api":
        routes.append(
            Route(
                f"{n}-signed-in",
                ({"headers": {"authorization": {"prefix": BEARER_PREFIX},
                              CHECKED_MARK: {"regex": ".+"}}},),
                "app",
                ext_authz=True,
                remove=never_upstream(),
                strip_cookies=strip,
            )
        )
        routes.append(
            Route(
                f"{n}-bearer",
                ({"headers": {"authorization": {"prefix": BEARER_PREFIX}}},),
                "app",
                ext_authz=False,
                remove=identity_headers(),
                strip_cookies=strip,
            )
        )
    elif app["api_clients"]:
        routes.append(
            Route(
                f"{n}-bearer",
                ({"headers": {"authorization": {"prefix": BEARER_PREFIX}},
                  "withoutHeaders": {CHECKED_MARK: {}}},),
                "app",
                ext_authz=False,
                remove=identity_headers(),
                strip_cookies=strip,
            )
        )
    routes.append(Route(f"{n}-default", (), "app", ext_authz=True, remove=never_upstream(),
                        strip_cookies=strip))
    return routes


def auth_routes() -> list[Route]:
    """The auth host: everything to oauth2-proxy (it serves /oauth2/* itself)."""
    return [Route(AUTH_ROUTE, (), "proxy", ext_authz=False, strip_cookies=False)]


def _destination(b: Backend) -> dict[str, Any]:
    return {"destination": {"host": b["host"], "port": {"number": b["port"]}}}


def _http_route(r: Route, app: Backend, proxy: Backend) -> dict[str, Any]:
    out: dict[str, Any] = {"name": r.name}
    if r.match:
        out["match"] = [dict(m) for m in r.match]
    out["route"] = [_destination(app if r.backend == "app" else proxy)]
    if r.remove:
        out["headers"] = {"request": {"remove": list(r.remove)}}
    return out


def gateway_spec(gw: GatewayArgs) -> dict[str, Any]:
    """HTTP (redirect to HTTPS) and HTTPS (TLS from ``credentialName``) servers."""
    hosts = [f"./{h}" for h in gw["hosts"]]
    return {
        "selector": dict(gw["selector"]),
        "servers": [
            {
                "port": {"number": HTTP_PORT, "name": "http", "protocol": "HTTP"},
                "hosts": hosts,
                "tls": {"httpsRedirect": True},
            },
            {
                "port": {"number": HTTPS_PORT, "name": "https", "protocol": "HTTPS"},
                "hosts": hosts,
                "tls": {
                    "mode": "SIMPLE",
                    "credentialName": gw["tls_credential_name"],
                    "minProtocolVersion": "TLSV1_2",
                },
            },
        ],
    }


def auth_virtual_service_spec(args: IngressArgs) -> dict[str, Any]:
    proxy = args["proxy"]
    return {
        "hosts": [args["auth_host"]],
        "gateways": [gateway_ref(args["gateway"])],
        "http": [_http_route(r, proxy, proxy) for r in auth_routes()],
    }


def app_virtual_service_spec(args: IngressArgs, app: AppRouteArgs) -> dict[str, Any]:
    return {
        "hosts": [app["host"]],
        "gateways": [gateway_ref(args["gateway"])],
        "http": [_http_route(r, app["backend"], args["proxy"]) for r in app_routes(app)],
    }


# --------------------------------------------------------------------------------------------
# Kubernetes Gateway API (istio.ingressApi=gateway-api)
# --------------------------------------------------------------------------------------------

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_VERSION = GATEWAY_API_GROUP + "/v1"
REFERENCE_GRANT_VERSION = GATEWAY_API_GROUP + "/v1beta1"
HTTPS_REDIRECT_ROUTE = "https-redirect"
"""Name of the HTTP listener's only route (and rule): everything -> 301 to https."""


def gateway_api_gateway_spec(args: IngressArgs) -> dict[str, Any]:
    """HTTP (80) and HTTPS (443, TLS from the Secret ``tls_credential_name``) listeners that
    admit HTTPRoutes of the Gateway's own namespace only (the Istio mode's ``./host``)."""
    gw, ga = args["gateway"], args["gateway_api"]
    allowed = {
        "namespaces": {"from": "Same"},
        "kinds": [{"group": GATEWAY_API_GROUP, "kind": "HTTPRoute"}],
    }
    return {
        "gatewayClassName": ga["class_name"],
        "listeners": [
            {"name": ga["http_listener"], "port": HTTP_PORT, "protocol": "HTTP",
             "allowedRoutes": allowed},
            {
                "name": ga["https_listener"],
                "port": HTTPS_PORT,
                "protocol": "HTTPS",
                "tls": {
                    "mode": "Terminate",
                    "certificateRefs": [
                        {"group": "", "kind": "Secret", "name": gw["tls_credential_name"]}
                    ],
                },
                "allowedRoutes": allowed,
            },
        ],
    }


def _parent_ref(args: IngressArgs, section: str) -> dict[str, Any]:
    gw = args["gateway"]
    return {"group": GATEWAY_API_GROUP, "kind": "Gateway", "name": gw["name"],
            "namespace": gw["namespace"], "sectionName": section}


_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def re2_literal(text: str) -> str:
    """``text`` as an RE2 pattern matching exactly it (only metacharacters escaped: RE2 rejects
    escapes of letters and spaces, which Python's ``re.escape`` produces)."""
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


def _header_match(name: str, m: dict[str, str]) -> dict[str, Any]:
    """A VirtualService StringMatch on a header as a Gateway API HTTPHeaderMatch (which has no
    prefix type: a prefix becomes an anchored regular expression, which Envoy matches whole)."""
    if "exact" in m:
        return {"type": "Exact", "name": name, "value": m["exact"]}
    if "prefix" in m:
        return {"type": "RegularExpression", "name": name, "value": re2_literal(m["prefix"]) + ".*"}
    if "regex" in m:
        return {"type": "RegularExpression", "name": name, "value": m["regex"]}
    raise ValueError(f"header match {m!r} has no Gateway API form")


def gateway_api_match(m: dict[str, Any]) -> dict[str, Any]:
    """One route match of the plan (VirtualService form) as a Gateway API HTTPRouteMatch."""
    if "withoutHeaders" in m:
        raise ValueError("the Gateway API cannot match a header's absence; plan the route with "
                         "api='gateway-api'")
    uri = m.get("uri") or {"prefix": "/"}
    if "exact" in uri:
        path = {"type": "Exact", "value": uri["exact"]}
    else:
        path = {"type": "PathPrefix", "value": uri["prefix"]}
    out: dict[str, Any] = {"path": path}
    headers = m.get("headers") or {}
    if headers:
        out["headers"] = [_header_match(n, headers[n]) for n in sorted(headers)]
    return out


def _backend_ref(b: Backend) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": b["name"], "namespace": b["namespace"],
            "port": b["port"], "weight": 1}


def _gateway_api_rule(r: Route, app: Backend, proxy: Backend) -> dict[str, Any]:
    out: dict[str, Any] = {"name": r.name,
                           "matches": [gateway_api_match(dict(m)) for m in (r.match or ({},))]}
    if r.remove:
        out["filters"] = [{"type": "RequestHeaderModifier",
                           "requestHeaderModifier": {"remove": list(r.remove)}}]
    out["backendRefs"] = [_backend_ref(app if r.backend == "app" else proxy)]
    return out


def redirect_http_route_spec(args: IngressArgs) -> dict[str, Any]:
    """The HTTP listener's route: every gateway host, 301 to the same URL over https."""
    return {
        "parentRefs": [_parent_ref(args, args["gateway_api"]["http_listener"])],
        "hostnames": list(dict.fromkeys(args["gateway"]["hosts"])),
        "rules": [{
            "name": HTTPS_REDIRECT_ROUTE,
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "filters": [{"type": "RequestRedirect",
                         "requestRedirect": {"scheme": "https", "statusCode": 301}}],
        }],
    }


def auth_http_route_spec(args: IngressArgs) -> dict[str, Any]:
    proxy = args["proxy"]
    return {
        "parentRefs": [_parent_ref(args, args["gateway_api"]["https_listener"])],
        "hostnames": [args["auth_host"]],
        "rules": [_gateway_api_rule(r, proxy, proxy) for r in auth_routes()],
    }


def app_http_route_spec(args: IngressArgs, app: AppRouteArgs) -> dict[str, Any]:
    return {
        "parentRefs": [_parent_ref(args, args["gateway_api"]["https_listener"])],
        "hostnames": [app["host"]],
        "rules": [_gateway_api_rule(r, app["backend"], args["proxy"])
                  for r in app_routes(app, "gateway-api")],
    }


def reference_grant_specs(args: IngressArgs) -> dict[str, dict[str, Any]]:
    """Per backend namespace other than the routes' (the Gateway's): a ReferenceGrant that lets
    HTTPRoutes of the Gateway's namespace reference exactly the Services the routes use there."""
    ns = args["gateway"]["namespace"]
    services: dict[str, list[str]] = {}
    for b in [args["proxy"], *(a["backend"] for a in args["apps"])]:
        if b["namespace"] != ns:
            names = services.setdefault(b["namespace"], [])
            if b["name"] not in names:
                names.append(b["name"])
    return {
        target: {
            "from": [{"group": GATEWAY_API_GROUP, "kind": "HTTPRoute", "namespace": ns}],
            "to": [{"group": "", "kind": "Service", "name": n} for n in sorted(names)],
        }
        for target, names in sorted(services.items())
    }


def certificate_spec(args: IngressArgs) -> dict[str, Any] | None:
    """cert-manager Certificate writing the gateway's TLS Secret, for every gateway host."""
    cert = args["certificate"]
    if cert is None:
        return None
    gw = args["gateway"]
    return {
        "secretName": gw["tls_credential_name"],
        "dnsNames": list(dict.fromkeys(gw["hosts"])),
        "issuerRef": {"name": cert["issuer"], "kind": cert["issuer_kind"], "group": "cert-manager.io"},
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
    }


def object_labels() -> dict[str, str]:
    return dict(COMMON_LABELS)


def app_virtual_service_annotations(app: RoutedApp) -> dict[str, str]:
    """Annotations of an app's VirtualService: the explicit cookie opt-out, if any."""
    return {} if app["strip_session_cookies"] else {COOKIES_FORWARDED_ANNOTATION: "forwarded"}


class Ingress(pulumi.ComponentResource):
    """Gateway, VirtualServices and optional Certificate.

    Outputs:
      gateway: "<namespace>/<name>" of the Gateway.
      virtual_services: names of the VirtualServices (auth host first; ingress API ``istio``).
      http_routes: names of the HTTPRoutes (redirect, auth host, apps; ingress API
        ``gateway-api``, which creates a ``gateway.networking.k8s.io/v1`` Gateway unless it
        exists, and ReferenceGrants in the backends' namespaces).
    """

    gateway: pulumi.Output[str]
    virtual_services: pulumi.Output[list[str]]
    http_routes: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: IngressArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("authproxy:ingress:Ingress", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        gw = args["gateway"]
        ns = gw["namespace"]

        def meta(obj_name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {"name": obj_name, "namespace": ns, "labels": object_labels()}
            if annotations:
                out["annotations"] = annotations
            return out

        deps: list[pulumi.Resource] = []
        cert = certificate_spec(args)
        if cert is not None:
            deps.append(
                k8s.apiextensions.CustomResource(
                    f"{name}-certificate",
                    api_version="cert-manager.io/v1",
                    kind="Certificate",
                    metadata=meta(gw["tls_credential_name"]),
                    spec=cert,
                    opts=child,
                )
            )
        if args["api"] == "gateway-api":
            self._gateway_api(name, args, meta, deps)
            return
        gateway = k8s.apiextensions.CustomResource(
            f"{name}-gateway",
            api_version="networking.istio.io/v1",
            kind="Gateway",
            metadata=meta(gw["name"]),
            spec=gateway_spec(gw),
            opts=pulumi.ResourceOptions(parent=self, depends_on=deps),
        )
        after_gateway = pulumi.ResourceOptions(parent=self, depends_on=[gateway])
        # (suffix of the logical and object names, spec, annotations): the auth host first, then
        # each app.
        virtual_services: list[tuple[str, dict[str, Any], dict[str, str]]] = [
            (AUTH_ROUTE, auth_virtual_service_spec(args), {})
        ] + [
            (f"app-{app['name']}", app_virtual_service_spec(args, app),
             app_virtual_service_annotations(app))
            for app in args["apps"]
        ]
        vs_names = self._route_objects(f"{name}-vs", gw["name"], "networking.istio.io/v1",
                                       "VirtualService", virtual_services, meta, after_gateway)

        self.gateway = pulumi.Output.from_input(gateway_ref(gw))
        self.virtual_services = pulumi.Output.from_input(vs_names)
        self.register_outputs(
            {"gateway": self.gateway, "virtual_services": self.virtual_services}
        )

    def _gateway_api(self, name: str, args: IngressArgs,
                     meta: Callable[[str, dict[str, str] | None], dict[str, Any]],
                     deps: list[pulumi.Resource]) -> None:
        """istio.ingressApi=gateway-api: the Gateway (unless it exists), ReferenceGrants, then
        the HTTPRoutes (redirect, auth host, each app)."""
        gw = args["gateway"]
        after: list[pulumi.Resource] = list(deps)
        if args["gateway_api"]["create"]:
            after.append(k8s.apiextensions.CustomResource(
                f"{name}-gateway",
                api_version=GATEWAY_API_VERSION,
                kind="Gateway",
                metadata=meta(gw["name"], None),
                spec=gateway_api_gateway_spec(args),
                opts=pulumi.ResourceOptions(parent=self, depends_on=deps),
            ))
        for target, spec in reference_grant_specs(args).items():
            # Granted before the routes exist, so no route is ever accepted without its backend.
            after.append(k8s.apiextensions.CustomResource(
                f"{name}-grant-{target}",
                api_version=REFERENCE_GRANT_VERSION,
                kind="ReferenceGrant",
                metadata={"name": f"{gw['name']}-{gw['namespace']}-routes", "namespace": target,
                          "labels": object_labels()},
                spec=spec,
                opts=pulumi.ResourceOptions(parent=self),
            ))
        routes: list[tuple[str, dict[str, Any], dict[str, str]]] = [
            (HTTPS_REDIRECT_ROUTE, redirect_http_route_spec(args), {}),
            (AUTH_ROUTE, auth_http_route_spec(args), {}),
        ] + [
            (f"app-{app['name']}", app_http_route_spec(args, app),
             app_virtual_service_annotations(app))
            for app in args["apps"]
        ]
        route_names = self._route_objects(f"{name}-route", gw["name"], GATEWAY_API_VERSION,
                                          "HTTPRoute", routes, meta,
                                          pulumi.ResourceOptions(parent=self, depends_on=after))
        self.gateway = pulumi.Output.from_input(gateway_ref(gw))
        self.http_routes = pulumi.Output.from_input(route_names)
        self.register_outputs({"gateway": self.gateway, "http_routes": self.http_routes})

    def _route_objects(self, logical: str, prefix: str, api_version: str, kind: str,
                       items: list[tuple[str, dict[str, Any], dict[str, str]]],
                       meta: Callable[[str, dict[str, str] | None], dict[str, Any]],
                       opts: pulumi.ResourceOptions) -> list[str]:
        """One route object per (suffix, spec, annotations), named ``<prefix>-<suffix>``
        (logical name ``<logical>-<suffix>``); returns the object names."""
        names = [f"{prefix}-{suffix}" for suffix, _, _ in items]
        for (suffix, spec, notes), obj_name in zip(items, names, strict=True):
            k8s.apiextensions.CustomResource(
                f"{logical}-{suffix}",
                api_version=api_version,
                kind=kind,
                metadata=meta(obj_name, notes),
                spec=spec,
                opts=opts,
            )
        return names
