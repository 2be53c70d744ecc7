"""oauth2-proxy's command line and environment, decided in one pure function.

:func:`proxy_command` turns plain typed inputs (:class:`ProxySettings`) into the container's
``args`` list and ``env`` list. The Kubernetes Deployment (components/oauth2_proxy.py) and the local
harness both call it, so the flag set exists once.

Args or env, per setting:

* Every non-secret setting is a command-line flag (``--name=value``). Flags are visible in the pod
  spec and in ``kubectl describe``, diff cleanly in ``pulumi preview``, and take precedence over
  env and config file in oauth2-proxy, so nothing else can silently override them.
* Secrets (cookie secret, client secret, Redis password, Redis sentinel password) are
  ``OAUTH2_PROXY_*`` environment variables filled by ``secretKeyRef`` from one Kubernetes Secret:
  a flag would put the value into the pod spec and the process list. The harness resolves the same
  references against its own values (:data:`SECRET_ENV`).
* ``GOMAXPROCS`` is env (a Go runtime setting, not an oauth2-proxy option): the configured number,
  or the container's CPU limit through ``resourceFieldRef`` (rounded up to whole CPUs), so the
  scheduler threads match the CPU quota whatever Go release the (overridable) image was built with.

Every flag name was checked against oauth2-proxy v7.15.6 (pkg/apis/options), the release
components/versions.py pins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from components.common import OAUTH2_PREFIX, format_duration
from components.config import CLUSTER_ADDRESS_RANGES
from components.cookies import SessionCookies
from components.headers import CHECK_PATH_PREFIX, CLIENT_ADDRESS_HEADER

HTTP_PORT = 4180
"""oauth2-proxy's HTTP port (sign-in endpoints and the ext_authz check)."""
METRICS_PORT = 44180
"""Prometheus metrics port (oauth2-proxy convention)."""

COOKIE_SECRET_KEY = "cookie-secret"
CLIENT_SECRET_KEY = "client-secret"
REDIS_PASSWORD_KEY = "redis-password"
"""Keys of the Kubernetes Secret the env entries reference."""

SECRET_ENV = {
    "OAUTH2_PROXY_COOKIE_SECRET": COOKIE_SECRET_KEY,
    "OAUTH2_PROXY_CLIENT_SECRET": CLIENT_SECRET_KEY,
    "OAUTH2_PROXY_REDIS_PASSWORD": REDIS_PASSWORD_KEY,
    "OAUTH2_PROXY_REDIS_SENTINEL_PASSWORD": REDIS_PASSWORD_KEY,
}
"""Every secret env variable the command may use -> the Secret key it reads."""

PING_PATH = OAUTH2_PREFIX + "ping"
READY_PATH = OAUTH2_PREFIX + "ready"
"""oauth2-proxy's liveness and readiness endpoints (``--ping-path``, ``--ready-path``), moved from
``/ping`` and ``/ready`` under its own prefix: requests for them on an app host go to oauth2-proxy
(its route), never to the app; the gateway refuses them from outside (components/authz.py), the
probes reach the pod directly."""
REAL_CLIENT_IP_HEADER = "X-Envoy-External-Address"
"""``--real-client-ip-header``: the check's client address, set by the gateway on every check
(components/headers.py, :data:`~components.headers.CLIENT_ADDRESS_HEADER`)."""
assert REAL_CLIENT_IP_HEADER.lower() == CLIENT_ADDRESS_HEADER
DEFAULT_SCOPE = "openid email profile"
"""No `groups` scope: the group-membership mapper sits on the client itself (components/identity.py),
so Keycloak puts `groups` in every token of this client whatever the requested scopes."""


class RedisConnection(TypedDict):
    """How oauth2-proxy reaches its session store."""

    mode: Literal["standalone", "sentinel"]
    url: str
    """redis(s)://HOST:PORT (mode=standalone); empty for sentinel."""
    sentinel_urls: list[str]
    """redis://HOST:26379 of each sentinel (mode=sentinel)."""
    master_name: str
    """Sentinel master set name (mode=sentinel)."""
    sentinel_password: bool
    """Whether the sentinels require the (same) password as the Redis servers."""


def cookie_domain(domain: str) -> str:
    """The session cookie's domain for a base domain: `.domain`.

    oauth2-proxy picks the cookie domain by plain suffix match on the request host; the leading dot
    keeps a look-alike host (`evilexample.com`) from matching `example.com`. Browsers ignore the
    dot, so the cookie still covers the base domain itself and every subdomain.
    """
    return "." + domain.lstrip(".")


def whitelist_domain(domain: str) -> str:
    """Allowed post-sign-in redirect targets: `.domain` = the domain and any subdomain of it, on the
    default port only; anything else (another domain, another port) is refused."""
    return "." + domain.lstrip(".")


def check_path_regex(route: str) -> str:
    """An ``--api-route`` regex (anchored ``^/...``, as config.py validates) for the check's path,
    which carries :data:`~components.headers.CHECK_PATH_PREFIX` in front of the request's path."""
    if not route.startswith("^/"):
        raise ValueError(f"API route {route!r} must be anchored at the path start ('^/...')")
    return "^" + re.escape(CHECK_PATH_PREFIX) + route[1:]


def backend_logout_url(issuer_url: str) -> str:
    """Keycloak's end-session endpoint with the session's ID token as hint, so sign-out also ends
    the Keycloak SSO session (oauth2-proxy replaces `{id_token}` when it calls it)."""
    return f"{issuer_url.rstrip('/')}/protocol/openid-connect/logout?id_token_hint={{id_token}}"


@dataclass(frozen=True)
class ProxySettings:
    """Everything the flag set depends on, as plain values."""

    issuer_url: str
    client_id: str
    redirect_url: str
    cookie_domains: tuple[str, ...]
    whitelist_domains: tuple[str, ...]
    redis: RedisConnection
    cookie_expire: int
    """Seconds."""
    cookie_refresh: int
    """Seconds; 0 disables refresh."""
    email_domains: tuple[str, ...] = ("*",)
    cookie_name: str = "_authproxy"
    cookie_csrf_expire: int = 15 * 60
    cookie_csrf_per_request_limit: int = 10
    """Bounds the per-request CSRF cookies a browser can pile up (431 errors otherwise)."""
    api_routes: tuple[str, ...] = ()
    """Path regexes (of the request's path, ``^/...``) answered with 401 instead of a redirect to
    sign-in; the flags carry them under the check's path prefix (:func:`check_path_regex`)."""
    trusted_proxy_ips: tuple[str, ...] = CLUSTER_ADDRESS_RANGES
    """``--trusted-proxy-ip``: who may name the client address (:data:`REAL_CLIENT_IP_HEADER`)."""
    scope: str = DEFAULT_SCOPE
    groups_claim: str = "groups"
    http_address: str = f"0.0.0.0:{HTTP_PORT}"
    metrics_address: str | None = f"0.0.0.0:{METRICS_PORT}"
    go_max_procs: int | None = None
    """GOMAXPROCS; None derives it from the container's CPU limit."""
    secret_name: str = "oauth2-proxy"
    """The Kubernetes Secret the env entries reference."""
    extra_args: tuple[str, ...] = field(default=())
    """Further flags appended last (e.g. the ingress's bearer-token handling). Not used by default."""
    provider_ca_file: str | None = None
    """Path of the CA bundle oauth2-proxy trusts for Keycloak (``--provider-ca-file``: discovery,
    token, JWKS and logout calls trust only it); None = the image's system trust store."""


def _flag(name: str, value: Any) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"--{name}={value}"


def _secret_env(name: str, secret: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": SECRET_ENV[name]}}}


def proxy_args(s: ProxySettings) -> list[str]:
    """The container args (no secrets)."""
    if not s.cookie_domains or not s.whitelist_domains:
        raise ValueError("oauth2-proxy needs at least one cookie domain and one whitelist domain")
    if not s.redirect_url.startswith("https://"):
        raise ValueError("the redirect URL must be https (the session cookie is Secure)")
    if not s.trusted_proxy_ips:
        raise ValueError("oauth2-proxy needs at least one --trusted-proxy-ip range (it would "
                         "otherwise trust every caller's X-Forwarded-* headers)")
    # The cookie names: one definition shared with the gateway's cookie filter.
    cookies = SessionCookies(s.cookie_name)
    a: list[str] = [
        # OIDC against the realm issuer; endpoints come from discovery.
        _flag("provider", "oidc"),
        _flag("oidc-issuer-url", s.issuer_url),
        _flag("client-id", s.client_id),
        _flag("redirect-url", s.redirect_url),
        _flag("code-challenge-method", "S256"),
        _flag("scope", s.scope),
        _flag("oidc-groups-claim", s.groups_claim),
        *(_flag("email-domain", d) for d in s.email_domains),
        # Session cookie: a small ticket; the session itself lives in Redis.
        _flag("cookie-name", cookies.name),
        *(_flag("cookie-domain", d) for d in s.cookie_domains),
        *(_flag("whitelist-domain", d) for d in s.whitelist_domains),
        _flag("cookie-secure", True),
        _flag("cookie-httponly", True),
        _flag("cookie-samesite", "lax"),
        _flag("cookie-expire", format_duration(s.cookie_expire)),
        _flag("cookie-refresh", format_duration(s.cookie_refresh)),
        _flag("cookie-csrf-per-request", cookies.csrf_per_request),
        _flag("cookie-csrf-per-request-limit", s.cookie_csrf_per_request_limit),
        _flag("cookie-csrf-expire", format_duration(s.cookie_csrf_expire)),
        _flag("session-store-type", "redis"),
    ]
    r = s.redis
    if r["mode"] == "sentinel":
        if not r["master_name"] or not r["sentinel_urls"]:
            raise ValueError("sentinel mode needs a master name and at least one sentinel URL")
        a += [
            _flag("redis-use-sentinel", True),
            _flag("redis-sentinel-master-name", r["master_name"]),
            *(_flag("redis-sentinel-connection-urls", u) for u in r["sentinel_urls"]),
        ]
    else:
        if not r["url"]:
            raise ValueError("standalone mode needs a Redis URL")
        a.append(_flag("redis-connection-url", r["url"]))
    a += [
        # Behind the gateway's ext_authz: 200 when signed in, a redirect to Keycloak otherwise;
        # identity goes back to Envoy in response headers.
        _flag("reverse-proxy", True),
        _flag("upstream", "static://200"),
        _flag("set-xauthrequest", True),
        _flag("set-authorization-header", True),
        # No --pass-access-token: the gateway never forwards X-Auth-Request-Access-Token
        # (components/headers.py), so the header cost CPU on every check and put the access
        # token on the wire for nothing (make bench: -25-30% oauth2-proxy CPU per check,
        # together with the request log below).
        _flag("skip-provider-button", True),
        # Health endpoints under /oauth2/ (the default /ping and /ready would be answered on any
        # path the check sends); the probes follow (components/oauth2_proxy.py).
        _flag("ping-path", PING_PATH),
        _flag("ready-path", READY_PATH),
        _flag("silence-ping-logging", True),
        # The client address comes from the header the gateway sets on every check, and only
        # from the trusted ranges (no trusting X-Forwarded-*/X-Real-IP from anyone).
        _flag("real-client-ip-header", REAL_CLIENT_IP_HEADER),
        *(_flag("trusted-proxy-ip", c) for c in s.trusted_proxy_ips),
        # The per-request log line duplicates the gateway's access log; sign-in and sign-out
        # events stay in oauth2-proxy's auth log.
        _flag("request-logging", False),
        _flag("http-address", s.http_address),
    ]
    if s.metrics_address:
        a.append(_flag("metrics-address", s.metrics_address))
    a += [_flag("api-route", check_path_regex(route)) for route in dict.fromkeys(s.api_routes)]
    a.append(_flag("backend-logout-url", backend_logout_url(s.issuer_url)))
    if s.provider_ca_file:
        a.append(_flag("provider-ca-file", s.provider_ca_file))
    a += list(s.extra_args)
    return a


def proxy_env(s: ProxySettings) -> list[dict[str, Any]]:
    """The container env: secrets only through secretKeyRef, plus GOMAXPROCS."""
    env = [
        _secret_env("OAUTH2_PROXY_CLIENT_SECRET", s.secret_name),
        _secret_env("OAUTH2_PROXY_COOKIE_SECRET", s.secret_name),
        _secret_env("OAUTH2_PROXY_REDIS_PASSWORD", s.secret_name),
    ]
    if s.redis["mode"] == "sentinel" and s.redis["sentinel_password"]:
        env.append(_secret_env("OAUTH2_PROXY_REDIS_SENTINEL_PASSWORD", s.secret_name))
    if s.go_max_procs is not None:
        env.append({"name": "GOMAXPROCS", "value": str(s.go_max_procs)})
    else:
        env.append({
            "name": "GOMAXPROCS",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}},
        })
    return env


def proxy_command(s: ProxySettings) -> tuple[list[str], list[dict[str, Any]]]:
    """(container args, container env) for oauth2-proxy."""
    return proxy_args(s), proxy_env(s)
