"""Which HTTP headers flow where between the client, the gateway, oauth2-proxy and the apps.

One definition (:data:`HEADERS`), read by both ext_authz modes (components/authz.py: the mesh
config's ``envoyExtAuthzHttp`` lists and the EnvoyFilter's typed ext_authz config), by the
VirtualService routes (components/ingress.py) and by the local Envoy harness.

The check (gateway -> oauth2-proxy, no path prefix, oauth2-proxy runs ``--reverse-proxy
--upstream=static://200``):

* Envoy always sends ``:authority``, ``:method``, ``:path`` and ``content-length`` (0, no body).
* ``authorization`` and ``cookie``: the session cookie (and CSRF cookie) oauth2-proxy reads.
* ``accept``: oauth2-proxy answers 401 instead of a sign-in redirect when it asks for JSON
  (XHR/fetch), so single-page apps see a clean error rather than a cross-site redirect.
* ``x-envoy-external-address`` is *added by Envoy* (never taken from the client) as the client
  address the gateway determined (``%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%``: the TCP peer, or
  what ``numTrustedProxies`` lets it take from ``X-Forwarded-For``). oauth2-proxy reads the client
  address for its logs from this header only (``--real-client-ip-header``) and only from the
  ``--trusted-proxy-ip`` ranges, so a client's own ``X-Forwarded-For``/``X-Real-IP`` (which are no
  longer copied into the check) cannot forge what it logs.
* The path is the request's path under :data:`CHECK_PATH_PREFIX` (the ext_authz ``path_prefix``):
  oauth2-proxy answers a few paths itself before any session check (``/robots.txt``, its ping and
  ready paths), and with the bare path the check would *allow* a request for ``/robots.txt`` on
  every app host. Under the prefix no check path is one of oauth2-proxy's own endpoints, so every
  check goes through the session check; the redirect target still comes from
  ``x-auth-request-redirect`` and the ``--api-route`` regexes are anchored under the prefix
  (components/proxy_settings.py).
* ``x-auth-request-redirect`` is *added by Envoy* (never taken from the client) as
  ``https://<authority><path>``: oauth2-proxy's ``--reverse-proxy`` redirect logic only trusts
  ``X-Forwarded-Host`` when it differs from the Host and falls back to the bare request URI,
  which after the callback on the auth host would land on the auth host. With this header the
  browser returns to the page it asked for (checked against ``--whitelist-domain``). Envoy fills
  the value from the request through its header formatter; the mesh config field
  ``includeAdditionalHeadersInCheck`` maps to the same ``headers_to_add``.

On allow (oauth2-proxy answers 200 with ``--set-authorization-header --set-xauthrequest``):

* upstream: ``authorization`` (``Bearer <Keycloak ID token>``, what the apps' sidecars verify) and
  the ``x-auth-request-{user,email,groups,preferred-username}`` identity headers. Envoy *overrides*
  a header of the same name. ``x-auth-request-access-token`` is **not** forwarded: the ID token
  already identifies the user, and handing every app a Keycloak access token would let any app
  call other APIs as the user (least privilege; the stack therefore does not set oauth2-proxy's
  ``--pass-access-token``).
* downstream: ``set-cookie`` (a refreshed session cookie).

On deny (302 to Keycloak, or 401 for API/XHR requests, 403): ``location``, ``set-cookie`` (the
CSRF cookie), ``content-type`` and ``cache-control`` (the redirect must not be cached). Envoy adds
``:status``, ``content-length``, ``www-authenticate`` and ``location`` to any non-empty deny list
itself; listing ``location`` keeps the intent visible. A non-empty list matters: with an empty one
Envoy would pass *every* header of oauth2-proxy's reply to the browser.

Client-sent identity headers never reach an app:

* Envoy overrides the allowed upstream headers only when oauth2-proxy returns them, and
  oauth2-proxy omits ``x-auth-request-groups`` for a user without groups (``-email`` without an
  e-mail). So the gateway strips every client header that looks like an identity assertion
  *before* any filter runs (:func:`early_header_mutation`, an HCM ``early_header_mutation``
  extension applied by components/authz.py in both modes): ``x-auth-request-*`` and the
  ``x-forwarded-{user,email,groups,preferred-username,access-token}`` / ``gap-auth`` headers
  oauth2-proxy can produce in other modes.
* A VirtualService ``headers.request.remove`` cannot do this alone: Envoy applies it in the router,
  *after* ext_authz, so it would also delete what oauth2-proxy just set. The routes still remove,
  as defence in depth, every identity header that is never legitimately forwarded
  (:func:`never_upstream`), and on routes where ext_authz does not run (public paths, bearer API
  requests) every identity header except ``authorization`` (:func:`identity_headers`).
* ``authorization`` from the client is overridden on allow (Keycloak always issues an ID token, so
  oauth2-proxy always sets it), and whatever reaches an app is verified by its sidecar's
  RequestAuthentication: a client-sent token is either rejected or is a valid token of our issuer
  and client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AUTHORIZATION = "authorization"
REDIRECT_HEADER = "x-auth-request-redirect"
REDIRECT_VALUE = "https://%REQ(:authority)%%REQ(:path)%"
"""The post-sign-in target: the gateway serves protected hosts over HTTPS only (port 80 redirects),
so the scheme is fixed; ``:path`` includes the query string."""
CLIENT_ADDRESS_HEADER = "x-envoy-external-address"
"""The check request's client address, set by the gateway (one of the names oauth2-proxy's
``--real-client-ip-header`` accepts)."""
CLIENT_ADDRESS_VALUE = "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
CHECK_PATH_PREFIX = "/authproxy-check"
"""Prefix of every check request's path (mesh config ``pathPrefix``, Envoy ``path_prefix``): it
puts the checked paths outside oauth2-proxy's own endpoints (``/robots.txt``, ping, ready,
``/oauth2/*``), which it would answer without a session."""

EARLY_MUTATION_NAME = "envoy.http.early_header_mutation.header_mutation"
EARLY_MUTATION_TYPE = (
    "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3."
    "HeaderMutation"
)


@dataclass(frozen=True)
class HeaderFlow:
    """Header names (lower case) per direction. Names ending in ``*`` are prefixes."""

    check_request: tuple[str, ...]
    """Client request headers copied into the check request (besides the ones Envoy always sends)."""
    check_additional: tuple[tuple[str, str], ...]
    """(name, value) headers the gateway adds to the check request, overriding the client's."""
    upstream_on_allow: tuple[str, ...]
    """oauth2-proxy response headers copied onto the request to the app (override)."""
    downstream_on_allow: tuple[str, ...]
    """oauth2-proxy response headers added to the app's response."""
    downstream_on_deny: tuple[str, ...]
    """oauth2-proxy response headers the browser gets when the check denies."""
    strip_exact: tuple[str, ...]
    """Client request headers removed at the edge before any filter runs."""
    strip_prefixes: tuple[str, ...]
    """Client request header prefixes removed at the edge before any filter runs."""


HEADERS = HeaderFlow(
    check_request=(AUTHORIZATION, "cookie", "accept"),
    check_additional=((REDIRECT_HEADER, REDIRECT_VALUE), (CLIENT_ADDRESS_HEADER, CLIENT_ADDRESS_VALUE)),
    upstream_on_allow=(
        AUTHORIZATION,
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-groups",
        "x-auth-request-preferred-username",
    ),
    downstream_on_allow=("set-cookie",),
    downstream_on_deny=("location", "set-cookie", "content-type", "cache-control"),
    strip_exact=(
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "x-forwarded-access-token",
        "gap-auth",
    ),
    strip_prefixes=("x-auth-request-",),
)

KNOWN_AUTH_REQUEST_HEADERS = (
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
    REDIRECT_HEADER,
)
"""Every ``x-auth-request-*`` header oauth2-proxy reads or writes (route-level removal needs
exact names; the edge strip uses the prefix)."""


def is_stripped(name: str, flow: HeaderFlow = HEADERS) -> bool:
    """Whether the edge removes a client request header of this name."""
    n = name.lower()
    return n in flow.strip_exact or any(n.startswith(p) for p in flow.strip_prefixes)


def identity_headers(flow: HeaderFlow = HEADERS) -> tuple[str, ...]:
    """Every identity header an app might trust, except ``authorization`` (verified by the
    sidecar instead). Removed on routes where ext_authz does not run."""
    names = [*KNOWN_AUTH_REQUEST_HEADERS, *flow.strip_exact]
    names += [h for h in flow.upstream_on_allow if h != AUTHORIZATION]
    return tuple(dict.fromkeys(names))


def never_upstream(flow: HeaderFlow = HEADERS) -> tuple[str, ...]:
    """Identity headers oauth2-proxy's answer never carries to the app: safe to remove on every
    app route, even after ext_authz."""
    allowed = set(flow.upstream_on_allow)
    return tuple(h for h in identity_headers(flow) if h not in allowed)


def string_matcher(name: str) -> dict[str, Any]:
    """One Envoy StringMatcher for a header name, as Istio builds it from the mesh config lists:
    ``abc*`` prefix, ``*abc`` suffix, otherwise exact; case-insensitive."""
    if name.endswith("*"):
        return {"prefix": name[:-1], "ignore_case": True}
    if name.startswith("*"):
        return {"suffix": name[1:], "ignore_case": True}
    return {"exact": name, "ignore_case": True}


def list_matcher(names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """An Envoy ListStringMatcher for header names."""
    return {"patterns": [string_matcher(n) for n in names]}


def early_header_mutation(flow: HeaderFlow = HEADERS) -> dict[str, Any]:
    """The HttpConnectionManager ``early_header_mutation_extensions`` entry that strips client
    identity headers before routing and before any HTTP filter (ext_authz, jwt_authn, RBAC)."""
    mutations: list[dict[str, Any]] = [
        {"remove_on_match": {"key_matcher": {"prefix": p, "ignore_case": True}}}
        for p in flow.strip_prefixes
    ]
    mutations += [{"remove": h} for h in flow.strip_exact]
    return {
        "name": EARLY_MUTATION_NAME,
        "typed_config": {"@type": EARLY_MUTATION_TYPE, "mutations": mutations},
    }
