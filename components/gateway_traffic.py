"""How the ingress gateway talks to oauth2-proxy's replicas when one of them goes away.

Two levers, both on the gateway side (docs/reliability.md has the measurements behind them):

* **Retrying a check that never reached a replica** (``istio.extAuthzRetries``). The ext_authz
  check is the one request on the session path that Istio's default route retries do not cover:
  it is not routed, so Envoy sends it once unless its ``http_service`` has a ``retry_policy``
  (Envoy's ext_authz ``HttpService.retry_policy``). The policy retries only what cannot have been
  answered (``connect-failure``: the replica is gone; ``reset``: the connection broke before a
  response, e.g. a replica that crashed, or closed an idle keep-alive connection at the moment the
  check was written to it), each time on another replica (``previous_hosts``), with a short
  back-off, all within the check's own timeout. A check is safe to repeat: it reads the session.
  Istio's ``envoyExtAuthzHttp`` provider has no retry field, so extension-provider mode adds it
  with an EnvoyFilter ``MERGE`` into the ext_authz filter istiod generates for the CUSTOM policy
  (Istio allows one CUSTOM provider per workload, so on the gateway that filter is ours);
  envoy-filter mode writes it into its own ext_authz filter.
* **Ejecting a replica that the gateway cannot reach** (``istio.outlierDetection``): a
  DestinationRule for oauth2-proxy's Service, in the gateway's namespace and exported only there,
  with ``consecutiveGatewayErrors`` (connect failures, resets and timeouts count as gateway
  errors) and ``consecutive5xxErrors: 0``: oauth2-proxy's own 500s come from Redis or Keycloak,
  which every replica shares, so ejecting for them would only take healthy replicas out. At most
  half the replicas are ever ejected (``maxEjectionPercent``), and below half healthy Envoy
  ignores ejection (``minHealthPercent``: Envoy's panic threshold), so a single replica is never
  shut off by its own errors.

Planned departures (a rolling restart, a drain) need neither: the pod's preStop sleep keeps it
serving until istiod has removed it from every gateway (components/oauth2_proxy.py). These two
cover the unplanned ones (a crash, an OOM kill, a node that vanishes).
"""

from __future__ import annotations

from typing import Any, TypedDict

from components.common import format_duration

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_HOSTS_TYPE = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)
RETRY_ON = "connect-failure,reset"
"""Only failures where oauth2-proxy cannot have answered."""
RETRY_BASE_INTERVAL = "0.025s"
"""Envoy's default base interval is 1 s, longer than the whole check may take."""
MAX_EJECTION_PERCENT = 50
MIN_HEALTH_PERCENT = 50


class Outlier(TypedDict):
    consecutive_errors: int
    """0 = no ejection."""
    base_ejection_seconds: int


class GatewayTraffic(TypedDict):
    check_retries: int
    outlier: Outlier


DEFAULT_TRAFFIC = GatewayTraffic(
    check_retries=2, outlier=Outlier(consecutive_errors=3, base_ejection_seconds=15)
)


def ext_authz_retry_policy(retries: int, check_timeout_seconds: int) -> dict[str, Any] | None:
    """Envoy ``config.core.v3.RetryPolicy`` for the ext_authz ``http_service``; None for 0.

    Envoy turns the back-off's ``max_interval`` into the per-try timeout of each attempt
    (``Http::Utility::convertCoreToRouteRetryPolicy``), so it is the check's own timeout: a slow
    check (a token refresh at Keycloak) is never cut short and sent again, which would leave
    oauth2-proxy's refresh lock held and fail the retries too (docs/reliability.md). The waits
    between attempts stay far below it (random, up to 50 and 100 ms for two retries)."""
    if retries <= 0:
        return None
    return {
        "retry_on": RETRY_ON,
        "num_retries": retries,
        "retry_back_off": {"base_interval": RETRY_BASE_INTERVAL,
                           "max_interval": f"{check_timeout_seconds}s"},  # protobuf Duration
        "retry_host_predicate": [
            {"name": PREVIOUS_HOSTS, "typed_config": {"@type": PREVIOUS_HOSTS_TYPE}}
        ],
        "host_selection_retry_max_attempts": 5,
    }


def ext_authz_retry_patch(retries: int, check_timeout_seconds: int) -> dict[str, Any] | None:
    """EnvoyFilter patch (extension-provider mode): MERGE the retry policy into the gateway's
    ext_authz HTTP filter on every listener; None when retries are off."""
    policy = ext_authz_retry_policy(retries, check_timeout_seconds)
    if policy is None:
        return None
    return {
        "applyTo": "HTTP_FILTER",
        "match": {
            "context": "GATEWAY",
            "listener": {"filterChain": {"filter": {
                "name": HCM_FILTER, "subFilter": {"name": EXT_AUTHZ_FILTER}}}},
        },
        "patch": {
            "operation": "MERGE",
            "value": {
                "name": EXT_AUTHZ_FILTER,
                "typed_config": {"@type": EXT_AUTHZ_TYPE, "http_service": {"retry_policy": policy}},
            },
        },
    }


def destination_rule_spec(service_host: str, outlier: Outlier) -> dict[str, Any] | None:
    """DestinationRule for oauth2-proxy's Service as the gateway sees it (created in the gateway's
    namespace, ``exportTo: ["."]``); None when ejection is off."""
    if outlier["consecutive_errors"] <= 0:
        return None
    return {
        "host": service_host,
        "exportTo": ["."],
        "trafficPolicy": {
            "outlierDetection": {
                "consecutiveGatewayErrors": outlier["consecutive_errors"],
                "consecutive5xxErrors": 0,
                "interval": "5s",
                "baseEjectionTime": format_duration(outlier["base_ejection_seconds"]),
                "maxEjectionPercent": MAX_EJECTION_PERCENT,
                "minHealthPercent": MIN_HEALTH_PERCENT,
            },
        },
    }
