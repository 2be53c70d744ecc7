"""The bench Envoys' bootstraps: copies of the rendered gateway listener (and of the app's sidecar
listener) from the harness's bootstraps, each on its own address, routed to a fast upstream.

Imports: the standard library, :mod:`authproxy_local.mesh`, :mod:`.model`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from authproxy_local.mesh.adapter import static_cluster
from authproxy_local.mesh.envoy_config import EXT_AUTHZ, HCM, HCM_TYPE, ROUTER, ROUTER_TYPE

from .model import UPSTREAM_BODY, UPSTREAM_CLUSTER, UPSTREAM_HEADER, BenchError


def _walk(value: Any) -> Iterator[tuple[dict[str, Any], str, Any]]:
    if isinstance(value, dict):
        for k, v in list(value.items()):
            yield value, k, v
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def _hcms(listener: dict[str, Any]) -> list[dict[str, Any]]:
    chains = [*listener.get("filter_chains", [])]
    if listener.get("default_filter_chain"):
        chains.append(listener["default_filter_chain"])
    return [f["typed_config"] for c in chains for f in c.get("filters", []) if f.get("name") == HCM]


def authz_cluster(listener: dict[str, Any]) -> str:
    """The cluster the listener's ext_authz filter calls (oauth2-proxy's Service)."""
    for hcm in _hcms(listener):
        for f in hcm.get("http_filters", []):
            if f.get("name") == EXT_AUTHZ:
                return str(f["typed_config"]["http_service"]["server_uri"]["cluster"])
    raise ValueError(f"listener {listener.get('name')!r} has no ext_authz filter")


def _addr(ip: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": ip, "port_value": int(port)}}


def _static_cluster(name: str, addr: tuple[str, int], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    c = static_cluster(name, addr)
    c.update(copy.deepcopy(dict(extra or {})))
    return c


def _https_listener(boot: Mapping[str, Any], port: int) -> dict[str, Any]:
    for lst in boot["static_resources"]["listeners"]:
        if int(lst["address"]["socket_address"]["port_value"]) == port and any(
                "transport_socket" in c for c in lst.get("filter_chains", [])):
            return lst
    raise ValueError(f"the bootstrap has no HTTPS listener on port {port}")


def _app_chain(listener: Mapping[str, Any], app_host: str) -> dict[str, Any]:
    for c in listener["filter_chains"]:
        if app_host in ((c.get("filter_chain_match") or {}).get("server_names") or []):
            return c
    raise ValueError(f"no filter chain serves {app_host!r}")


def bench_bootstrap(
    boot: Mapping[str, Any],
    *,
    app_host: str,
    listeners: Mapping[str, tuple[str, int]],
    proxies: Mapping[str, tuple[str, int]],
    upstream: tuple[str, int],
    admin: tuple[str, int],
    https_port: int = 443,
    cluster_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    sources: Mapping[str, Mapping[str, Any]] | None = None,
    drop_filters: Mapping[str, Sequence[str]] | None = None,
    upstreams: Mapping[str, tuple[str, int]] | None = None,
    bare: Iterable[str] = ("baseline",),
    jwt_cache: Iterable[str] = (),
) -> dict[str, Any]:
    """The bench Envoy's bootstrap, from the harness's gateway one (istiod's config through
    :mod:`authproxy_local.mesh.adapter`).

    ``listeners`` maps a listener name to its address; ``"baseline"`` gets the rendered HTTPS
    gateway listener with the router as its only HTTP filter, every other name the listener as
    rendered. ``proxies[name]`` (optional per listener) is the oauth2-proxy that listener's
    ext_authz filter and ``/oauth2/`` routes use instead of the harness's one (the session-cookie
    and tuned variants); ``cluster_overrides[name]`` merges fields into that listener's
    oauth2-proxy cluster. In every copy: routes to the apps go to the fast upstream (``upstream``:
    a plain-HTTP listener answering ``200 ok``), access logs are dropped (as on a gateway without
    access logging), stat prefixes are ``bench_<name>``, and the app host's chain is also the
    default chain (wrk sends the IP address as SNI). ``sources[name]`` takes that listener from
    another bootstrap of the same endpoints (the other ext_authz mode's render);
    ``drop_filters[name]`` lists HTTP filters removed from that listener. ``upstreams[name]``
    sends that listener's app routes to another address instead of ``upstream`` (the app's
    sidecar, for the whole-path variants); listeners in ``bare`` keep only the router (the
    baselines); listeners in ``jwt_cache`` get Envoy's JWT cache (:func:`with_jwt_cache`)."""
    clusters: dict[str, dict[str, Any]] = {}
    bare, jwt_cache = set(bare), set(jwt_cache)
    out_listeners = []
    for name, addr in listeners.items():
        src = (sources or {}).get(name, boot)
        gw = _https_listener(src, https_port)
        authz = authz_cluster(gw)
        clusters_in = {c["name"]: c for c in src["static_resources"]["clusters"]}
        for n in sorted({"harness|keycloak", authz} | {n for n in clusters_in if n.startswith("jwks|")}):
            if n in clusters_in and n not in clusters:
                clusters[n] = copy.deepcopy(clusters_in[n])
        lst = copy.deepcopy(gw)
        lst["name"] = f"bench_{name}"
        lst["address"] = _addr(*addr)
        lst["default_filter_chain"] = copy.deepcopy(_app_chain(lst, app_host))
        target = authz
        if name in proxies or (cluster_overrides and name in cluster_overrides):
            target = f"bench|oauth2-proxy|{name}"
            base = clusters_in[authz]
            proxy_addr = proxies.get(name)
            if proxy_addr is None:
                ep = base["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                proxy_addr = (ep["socket_address"]["address"], ep["socket_address"]["port_value"])
            clusters[target] = _static_cluster(target, proxy_addr, (cluster_overrides or {}).get(name))
        dropped = set((drop_filters or {}).get(name, ()))
        removed = 0
        for hcm in _hcms(lst):
            hcm.pop("access_log", None)
            hcm["stat_prefix"] = f"bench_{name}"
            if name in bare:
                hcm["http_filters"] = [f for f in hcm["http_filters"] if f.get("name") == ROUTER]
            if name in jwt_cache:
                with_jwt_cache(hcm)
            kept = [f for f in hcm["http_filters"] if f.get("name") not in dropped]
            removed += len(hcm["http_filters"]) - len(kept)
            hcm["http_filters"] = kept
        if dropped and not removed:
            raise BenchError(f"listener {name}: no HTTP filter {sorted(dropped)} to remove")
        app_cluster = UPSTREAM_CLUSTER
        if upstreams and name in upstreams:
            app_cluster = f"bench|sidecar|{name}"
            clusters[app_cluster] = _static_cluster(app_cluster, upstreams[name])
        for parent, k, v in _walk(lst):
            if k == "cluster" and isinstance(v, str):
                if v == authz:
                    parent[k] = target
                elif v.startswith("outbound|"):
                    parent[k] = app_cluster
        out_listeners.append(lst)
    clusters[UPSTREAM_CLUSTER] = _static_cluster(UPSTREAM_CLUSTER, upstream)
    out_listeners.append({
        "name": "bench_upstream",
        "address": _addr(*upstream),
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": "bench_upstream",
            "route_config": {"virtual_hosts": [{"name": "upstream", "domains": ["*"], "routes": [{
                "match": {"prefix": "/"},
                "direct_response": {"status": 200, "body": {"inline_string": UPSTREAM_BODY}},
                "response_headers_to_add": [{"header": {"key": UPSTREAM_HEADER, "value": "1"}}],
            }]}]},
            "http_filters": [{"name": ROUTER, "typed_config": {"@type": ROUTER_TYPE}}],
        }}]}],
    })
    return {
        "node": {"id": "authproxy-bench", "cluster": "authproxy-bench"},
        "admin": {"address": _addr(*admin)},
        "static_resources": {"listeners": out_listeners, "clusters": list(clusters.values())},
    }


JWT_CACHE_SIZE = 1000
"""Entries of Envoy's JWT cache per worker thread in the JWT-cache variants."""


def with_jwt_cache(hcm: dict[str, Any], size: int = JWT_CACHE_SIZE) -> int:
    """Turn on Envoy's JWT cache (``jwt_cache_config``) on every provider of the connection
    manager's ``jwt_authn`` filter; returns how many providers. Envoy caches a token only after it
    verified it, keyed by the whole token string, and checks ``exp``/``nbf`` again on every hit
    (envoy source/extensions/filters/http/jwt_authn/jwt_cache.cc), so a forged token still gets a
    full verification and an expired one is still refused. Istio has no field for it, and an
    EnvoyFilter MERGE cannot add it: istiod merges EnvoyFilter patches with map entries replaced,
    not merged (istio pkg/proto/merge), so the patch would have to restate the whole provider
    including the JWKS istiod inlines."""
    n = 0
    for f in hcm.get("http_filters", []):
        if f.get("name") == "envoy.filters.http.jwt_authn":
            for p in (f.get("typed_config") or {}).get("providers", {}).values():
                p["jwt_cache_config"] = {"jwt_cache_size": size}
                n += 1
    return n


def sidecar_bootstrap(
    boot: Mapping[str, Any],
    *,
    listeners: Mapping[str, tuple[str, int]],
    upstream: tuple[str, int],
    admin: tuple[str, int],
    bare: Iterable[str] = (),
    jwt_cache: Iterable[str] = (),
) -> dict[str, Any]:
    """The bench sidecar Envoy's bootstrap, from the harness's bootstrap of the app's sidecar
    (istiod's inbound config for the app: ``virtualInbound`` with its listener filters, jwt_authn,
    RBAC and the rest). Each entry of ``listeners`` is a copy on its own address (the chain istiod
    matches on the app's port matches the copy's port), whose inbound cluster goes to ``upstream``
    (the fast upstream plays the app). Copies in ``bare`` keep only the router (the whole-path
    baseline), copies in ``jwt_cache`` get Envoy's JWT cache (:func:`with_jwt_cache`)."""
    bare, jwt_cache = set(bare), set(jwt_cache)
    src = [lst for lst in boot["static_resources"]["listeners"] if lst.get("name") == "virtualInbound"]
    if not src:
        raise BenchError("the sidecar bootstrap has no virtualInbound listener")
    _, orig_port = src[0]["address"]["socket_address"]["address"], int(
        src[0]["address"]["socket_address"]["port_value"])
    out_listeners = []
    for name, addr in listeners.items():
        lst = copy.deepcopy(src[0])
        lst["name"] = f"side_{name}"
        lst["address"] = _addr(*addr)
        for chain in lst.get("filter_chains", []):
            m = chain.get("filter_chain_match") or {}
            if m.get("destination_port") == orig_port:
                m["destination_port"] = int(addr[1])
        for hcm in _hcms(lst):
            hcm.pop("access_log", None)
            hcm["stat_prefix"] = f"side_{name}"
            if name in bare:
                hcm["http_filters"] = [f for f in hcm["http_filters"] if f.get("name") == ROUTER]
            if name in jwt_cache and not with_jwt_cache(hcm):
                raise BenchError(f"sidecar listener {name}: no jwt_authn provider to cache for")
        out_listeners.append(lst)
    clusters = []
    for c in copy.deepcopy(boot["static_resources"]["clusters"]):
        if c["name"].startswith("inbound|"):
            c = _static_cluster(c["name"], upstream)
        clusters.append(c)
    return {
        "node": copy.deepcopy(dict(boot.get("node") or {"id": "authproxy-bench-sidecar"})),
        "admin": {"address": _addr(*admin)},
        "static_resources": {"listeners": out_listeners, "clusters": clusters},
    }


def set_flags(args: Sequence[str], changes: Mapping[str, str]) -> list[str]:
    """``--name=value`` args with ``changes`` applied: a flag present is replaced in place (every
    occurrence collapses to one), a flag absent is appended."""
    out: list[str] = []
    done: set[str] = set()
    for a in args:
        name = a[2:].split("=", 1)[0] if a.startswith("--") else ""
        if name in changes:
            if name not in done:
                out.append(f"--{name}={changes[name]}")
                done.add(name)
            continue
        out.append(a)
    out += [f"--{n}={v}" for n, v in changes.items() if n not in done]
    return out


