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
    ("http_filter", "waypoint_downstream_peer_metadata"):
        "a waypoint's peer metadata discovery for telemetry (io.istio.http.peer_metadata); no "
        "filter of this stack reads it",
    ("http_filter", "waypoint_upstream_peer_metadata"):
        "a waypoint's peer metadata propagation for telemetry (io.istio.http.peer_metadata)",
}
"""The Istio-only extensions the adapter removes. Anything else upstream Envoy cannot load fails
the run (``envoy --mode validate`` names it)."""

UPSTREAM_FACTORIES = {"istio.hashable_string": "envoy.hashable_string"}
"""Filter-state object factories of Istio's Envoy build -> upstream Envoy's equivalent: both are a
string accessor that is Hashable with xxHash64 (istio/proxy extensions/common hashable_string;
upstream source/common/router string_accessor_impl). istiod's waypoint sets its CONNECT authority
and peer principals with it."""
INTERNAL_LISTENER = {"name": "envoy.bootstrap.internal_listener", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}}
"""The bootstrap extension Envoy needs for listeners without an address (``internal_listener``:
the HBONE ``connect_originate`` of a gateway or waypoint, a waypoint's ``main_internal``);
Istio's bootstrap template enables it likewise."""

POD_CIDR = "10.88"
"""Pod IPs the harness gives the workloads it models (never routable: the adapter maps them)."""


