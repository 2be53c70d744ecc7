"""Envoy and Istio names the mesh room and the benchmark share (filter names, type URLs, labels).

Imports: nothing.
"""

from __future__ import annotations

HARNESS_LABEL = "authproxy.local/harness-addition"
"""Label on every Kubernetes object the harness adds to the translator's input."""

HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "envoy.filters.http.router"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

ISTIO_ONLY: dict[tuple[str, str], str] = {
    # (where, filter name) -> why removing it changes no authentication/authorization decision
    ("http_filter", "istio.metadata_exchange"):
        "peer metadata exchange (io.istio.http.peer_metadata) for telemetry labels; no filter "
        "of this stack reads it",
    ("http_filter", "istio.alpn"):
        "sets the upstream ALPN to istio-peer-exchange for telemetry; upstream mTLS/ALPN and "
        "routing are unchanged",
    ("http_filter", "istio.stats"):
        "Istio's Prometheus metrics (stats.PluginConfig); counts requests, decides nothing",
    ("network_filter", "istio.metadata_exchange"):
        "TCP peer metadata exchange for telemetry (envoy.tcp.metadataexchange.config)",
    ("network_filter", "istio.stats"):
        "Istio's TCP metrics (stats.PluginConfig); counts bytes, decides nothing",
    ("cluster_filter", "istio.metadata_exchange"):
        "upstream peer metadata exchange on outbound clusters, for telemetry",
}
"""The Istio-only extensions the adapter removes. Anything else upstream Envoy cannot load fails
the run (``envoy --mode validate`` names it)."""

POD_CIDR = "10.88"
"""Pod IPs the harness gives the workloads it models (never routable: the adapter maps them)."""


