"""The local Envoy's bootstrap, built from the render the way istiod would program the proxies.

:func:`build` (``build(render, endpoints) -> dict``) reads only the render's Istio objects and mesh
config (never the components' Python helpers, so a wrong translation there cannot hide itself
here) and produces one static Envoy bootstrap with:

**The ingress gateway** (the pods the rendered ``Gateway`` selects):

- one listener per Gateway server port on the run's loopback address: ``HTTPS`` servers get a
  filter chain per server (SNI = its hosts, the run's certificate, ``minProtocolVersion``), an
  ``HTTP`` server with ``tls.httpsRedirect`` answers every host with a 301 to https
  (``require_tls: ALL``, as istiod does);
- virtual hosts named ``<host>:<port>`` with domains ``host`` and ``host:*`` and the routes of the
  VirtualServices bound to the Gateway, named like the VirtualService routes (one Envoy route per
  match, uri exact/prefix/regex, header matches, ``headers.request`` remove/set/add, destination
  cluster ``outbound|<port>||<fqdn>``);
- the HTTP filters in Istio's order: the CUSTOM AuthorizationPolicies' shadow RBAC + ext_authz
  (extension-provider mode; built from the mesh config's ``envoyExtAuthzHttp`` entry like istiod's
  ``pilot/pkg/security/authz/builder/extauthz.go``, enabled only where the shadow rules match),
  then ``jwt_authn`` (RequestAuthentications), then the DENY and ALLOW RBAC filters, then the
  router;
- the EnvoyFilters selecting the gateway applied as istiod applies them (by priority):
  ``NETWORK_FILTER`` MERGE into the http_connection_manager, ``HTTP_FILTER``
  INSERT_BEFORE/INSERT_AFTER/INSERT_FIRST relative to a named filter, ``HTTP_ROUTE`` MERGE by
  virtual host and route name. A patch of any other shape fails the build with its name;
- the mesh config's ``pathNormalization`` on every HTTP connection manager.

**One listener per app playing its sidecar** (inbound): ``jwt_authn`` from the
RequestAuthentications selecting the app's pods, DENY and ALLOW RBAC from its
AuthorizationPolicies, then the echo app. The gateway's route to the app's Service goes to it.

**Harness additions** (:mod:`authproxy_local.local_map`): a separate TLS filter chain for the
Keycloak host (Keycloak is outside the cluster in the render, so none of the rendered filters
apply to it), the JWKS fetch of ``jwt_authn`` going to the local Keycloak directly, and the
clusters' endpoints.

Where Istio relies on its own filters, the plain-Envoy equivalent is used: the request principal
(``iss/sub``) and claims come from ``jwt_authn``'s ``payload_in_metadata`` instead of
``istio_authn``; JWKS are fetched by Envoy (``remote_jwks`` with ``async_fetch``, like
``PILOT_JWT_ENABLE_REMOTE_JWKS``) instead of being inlined by istiod.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from authproxy_local import local_map

HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "envoy.filters.http.router"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
JWT = "envoy.filters.http.jwt_authn"
JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
RBAC = "envoy.filters.http.rbac"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

JWT_PAYLOAD = "jwt_payload"
"""Dynamic metadata key (under envoy.filters.http.jwt_authn) holding the verified token's claims."""
EXT_AUTHZ_SHADOW_PREFIX = "istio_ext_authz_"
EXT_AUTHZ_POLICY_PREFIX = "istio-ext-authz"
ISTIO_ROOT_NAMESPACE = "istio-system"


class EnvoyConfigError(ValueError):
    """The render holds something this translation does not implement; the message names it."""


# --------------------------------------------------------------------------------------------
# Selecting the render's objects
# --------------------------------------------------------------------------------------------


def _objs(render: Any, kind: str) -> list[dict[str, Any]]:
    return [o for o in render.kubernetes if o["kind"] == kind]


def _selects(obj: Mapping[str, Any], namespace: str, labels: Mapping[str, str],
             root: str = ISTIO_ROOT_NAMESPACE) -> bool:
    """Istio workload selection: same namespace (or the root namespace) and matchLabels subset."""
    ns = obj["metadata"].get("namespace") or ""
    if ns not in (namespace, root):
        return False
    spec = obj.get("spec") or {}
    sel = (spec.get("selector") or {}).get("matchLabels") or (spec.get("workloadSelector") or {}).get("labels")
    return all(labels.get(k) == v for k, v in (sel or {}).items())


def fqdn(host: str, namespace: str) -> str:
    """Istio's host expansion: 'svc' -> svc.<ns>.svc.cluster.local, 'svc.ns' -> ..., FQDN kept."""
    if "." not in host:
        return f"{host}.{namespace}.svc.cluster.local"
    if host.count(".") == 1:
        return f"{host}.svc.cluster.local"
    if host.endswith(".svc"):
        return f"{host}.cluster.local"
    return host


def outbound_cluster(host: str, port: int) -> str:
    return f"outbound|{port}||{host}"


# --------------------------------------------------------------------------------------------
# Small builders
# --------------------------------------------------------------------------------------------


def _addr(ip: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": ip, "port_value": int(port)}}


def static_cluster(name: str, addr: tuple[str, int], timeout: str = "2s") -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": timeout,
        "load_assignment": {"cluster_name": name, "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": _addr(*addr)}}]}]},
    }


def _string_match(pattern: str, ignore_case: bool = False) -> dict[str, Any]:
    """Istio's string forms: 'x*' prefix, '*x' suffix, '*' any (presence), else exact."""
    m: dict[str, Any]
    if pattern == "*":
        m = {"safe_regex": {"regex": ".+"}}
    elif pattern.endswith("*"):
        m = {"prefix": pattern[:-1]}
    elif pattern.startswith("*"):
        m = {"suffix": pattern[1:]}
    else:
        m = {"exact": pattern}
    if ignore_case and "safe_regex" not in m:
        m["ignore_case"] = True
    return m


def path_normalization(mesh: Mapping[str, Any] | None) -> dict[str, Any]:
    """HCM settings for the mesh config's pathNormalization (istiod's listener builder)."""
    mode = ((mesh or {}).get("pathNormalization") or {}).get("normalization", "BASE")
    out: dict[str, Any] = {}
    if mode == "NONE":
        return {"normalize_path": False}
    if mode not in ("BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES", "DEFAULT"):
        raise EnvoyConfigError(f"pathNormalization {mode!r} is not implemented")
    out["normalize_path"] = True
    if mode in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"):
        out["merge_slashes"] = True
    if mode == "DECODE_AND_MERGE_SLASHES":
        out["path_with_escaped_slashes_action"] = "UNESCAPE_AND_FORWARD"
    return out


def _access_log(name: str) -> list[dict[str, Any]]:
    # No query strings, cookies or tokens in the log.
    fmt = (f"[{name}] %START_TIME% %REQ(:METHOD)% %REQ(:AUTHORITY)%%PATH(WQ)% "
           "%RESPONSE_CODE% %RESPONSE_FLAGS% route=%ROUTE_NAME% %DURATION%ms\n")
    return [{
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"text_format_source": {"inline_string": fmt}},
        },
    }]


def _hcm(stat_prefix: str, route_config: dict[str, Any], http_filters: list[dict[str, Any]],
         mesh: Mapping[str, Any] | None, gateway: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "route_config": route_config,
        "http_filters": http_filters,
        "use_remote_address": gateway,
        "forward_client_cert_details": "SANITIZE_SET" if gateway else "APPEND_FORWARD",
        "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True},
        "server_name": "istio-envoy",
        "access_log": _access_log(stat_prefix),
        **path_normalization(mesh),
    }
    return cfg


def _router() -> dict[str, Any]:
    return {"name": ROUTER, "typed_config": {"@type": ROUTER_TYPE}}


# --------------------------------------------------------------------------------------------
# ext_authz from the mesh config's extension provider (istiod: authz/builder/extauthz.go)
# --------------------------------------------------------------------------------------------


def _header_list(headers: Iterable[str] | None) -> dict[str, Any] | None:
    """generateHeaders: exact / 'x*' prefix / '*x' suffix, all case-insensitive."""
    pats = []
    for h in headers or []:
        if h.startswith("*"):
            pats.append({"suffix": h[1:], "ignore_case": True})
        elif h.endswith("*"):
            pats.append({"prefix": h[:-1], "ignore_case": True})
        else:
            pats.append({"exact": h, "ignore_case": True})
    return {"patterns": pats} if pats else None


def _duration(value: Any) -> str:
    from authproxy_local.keycloak_apply import go_duration_seconds

    return f"{go_duration_seconds(str(value))}s"


def ext_authz_from_provider(provider: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The ext_authz filter istiod builds for an ``envoyExtAuthzHttp`` extension provider used by
    a CUSTOM AuthorizationPolicy (enabled only where that policy's shadow rules matched)."""
    p = provider.get("envoyExtAuthzHttp")
    if not p:
        raise EnvoyConfigError(f"extension provider {provider.get('name')!r} is not envoyExtAuthzHttp")
    host = fqdn(p["service"].split("/")[-1], namespace)
    service: dict[str, Any] = {
        "server_uri": {
            "uri": f"http://{host}",
            "cluster": outbound_cluster(host, int(p["port"])),
            "timeout": _duration(p["timeout"]) if p.get("timeout") else "600s",
        },
    }
    if p.get("pathPrefix"):
        service["path_prefix"] = p["pathPrefix"]
    allowed = _header_list(p.get("includeRequestHeadersInCheck")) or _header_list(p.get("includeHeadersInCheck"))
    add = [{"key": k, "value": v} for k, v in sorted((p.get("includeAdditionalHeadersInCheck") or {}).items())]
    if allowed or add:
        req: dict[str, Any] = {}
        if allowed:
            req["allowed_headers"] = allowed
        if add:
            req["headers_to_add"] = add
        service["authorization_request"] = req
    resp = {k: v for k, v in {
        "allowed_upstream_headers": _header_list(p.get("headersToUpstreamOnAllow")),
        "allowed_client_headers": _header_list(p.get("headersToDownstreamOnDeny")),
        "allowed_client_headers_on_success": _header_list(p.get("headersToDownstreamOnAllow")),
    }.items() if v}
    if resp:
        service["authorization_response"] = resp
    cfg: dict[str, Any] = {
        "@type": EXT_AUTHZ_TYPE,
        "transport_api_version": "V3",
        "failure_mode_allow": bool(p.get("failOpen", False)),
        "http_service": service,
        "filter_enabled_metadata": {
            "filter": RBAC,
            "path": [{"key": EXT_AUTHZ_SHADOW_PREFIX + "shadow_effective_policy_id"}],
            "value": {"string_match": {"prefix": EXT_AUTHZ_POLICY_PREFIX}},
        },
    }
    if p.get("statusOnError"):
        cfg["status_on_error"] = {"code": int(p["statusOnError"])}
    if p.get("includeRequestBodyInCheck"):
        raise EnvoyConfigError("includeRequestBodyInCheck is not implemented")
    return {"name": EXT_AUTHZ, "typed_config": cfg}


# --------------------------------------------------------------------------------------------
# AuthorizationPolicy -> RBAC (istiod: authz/builder, authz/model)
# --------------------------------------------------------------------------------------------


def _meta(path: list[str], value: dict[str, Any]) -> dict[str, Any]:
    """A principal matching the request's dynamic metadata (``sourced_metadata``; the plain
    ``metadata`` principal is deprecated in Envoy 1.40)."""
    return {"sourced_metadata": {"metadata_matcher": {
        "filter": JWT, "path": [{"key": k} for k in path], "value": value}}}


def _principal_ids(pattern: str) -> dict[str, Any]:
    """A requestPrincipals entry ('ISS/SUB', 'ISS/*', '*') as Envoy principal ids on the verified
    token's claims."""
    present = {"present_match": True}
    if pattern == "*":
        return _meta([JWT_PAYLOAD, "iss"], present)
    iss, sep, sub = pattern.rpartition("/")
    if not sep or "*" in iss:
        raise EnvoyConfigError(f"requestPrincipals {pattern!r} is not implemented (use ISS/SUB or ISS/*)")
    ids = [_meta([JWT_PAYLOAD, "iss"], {"string_match": {"exact": iss}})]
    ids.append(_meta([JWT_PAYLOAD, "sub"], present if sub == "*" else {"string_match": _string_match(sub)}))
    return {"and_ids": {"ids": ids}}


def _or_ids(ids: list[dict[str, Any]]) -> dict[str, Any]:
    return ids[0] if len(ids) == 1 else {"or_ids": {"ids": ids}}


def _or_rules(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return rules[0] if len(rules) == 1 else {"or_rules": {"rules": rules}}


def _source_ids(src: Mapping[str, Any]) -> list[dict[str, Any]]:
    ids: list[dict[str, Any]] = []
    for key, value in src.items():
        if key == "requestPrincipals":
            ids.append(_or_ids([_principal_ids(p) for p in value]))
        elif key == "notRequestPrincipals":
            ids.append({"not_id": _or_ids([_principal_ids(p) for p in value])})
        else:
            raise EnvoyConfigError(f"AuthorizationPolicy source field {key!r} is not implemented")
    return ids or [{"any": True}]


def _url_path(pattern: str) -> dict[str, Any]:
    return {"url_path": {"path": _string_match(pattern)}}


def _operation_rules(op: Mapping[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for key, value in op.items():
        if key == "hosts":
            rules.append(_or_rules([{"header": {"name": ":authority", "string_match": _string_match(h, True)}}
                                    for h in value]))
        elif key == "notHosts":
            rules.append({"not_rule": _or_rules([
                {"header": {"name": ":authority", "string_match": _string_match(h, True)}} for h in value])})
        elif key == "paths":
            rules.append(_or_rules([_url_path(p) for p in value]))
        elif key == "notPaths":
            rules.append({"not_rule": _or_rules([_url_path(p) for p in value])})
        elif key == "methods":
            rules.append(_or_rules([{"header": {"name": ":method", "string_match": {"exact": m}}} for m in value]))
        elif key == "notMethods":
            rules.append({"not_rule": _or_rules([{"header": {"name": ":method", "string_match": {"exact": m}}}
                                                 for m in value])})
        elif key == "ports":
            rules.append(_or_rules([{"destination_port": int(p)} for p in value]))
        elif key == "notPorts":
            rules.append({"not_rule": _or_rules([{"destination_port": int(p)} for p in value])})
        else:
            raise EnvoyConfigError(f"AuthorizationPolicy operation field {key!r} is not implemented")
    return rules or [{"any": True}]


def _condition_id(cond: Mapping[str, Any]) -> dict[str, Any]:
    """A `when` condition as a principal id (Istio puts request.* conditions on principals)."""
    key = cond["key"]

    def one(v: str) -> dict[str, Any]:
        if key.startswith("request.headers[") and key.endswith("]"):
            name = key[len("request.headers["):-1]
            if v == "*":
                return {"header": {"name": name, "present_match": True}}
            return {"header": {"name": name, "string_match": _string_match(v)}}
        if key.startswith("request.auth.claims[") and key.endswith("]"):
            path = [JWT_PAYLOAD, *key[len("request.auth.claims["):-1].split("][")]
            m = _string_match(v)
            return {"or_ids": {"ids": [_meta(path, {"list_match": {"one_of": {"string_match": m}}}),
                                       _meta(path, {"string_match": m})]}}
        if key == "request.auth.principal":
            return _principal_ids(v)
        if key == "request.auth.audiences":
            m = _string_match(v)
            return {"or_ids": {"ids": [_meta([JWT_PAYLOAD, "aud"], {"list_match": {"one_of": {"string_match": m}}}),
                                       _meta([JWT_PAYLOAD, "aud"], {"string_match": m})]}}
        if key == "request.auth.presenter":
            return _meta([JWT_PAYLOAD, "azp"], {"string_match": _string_match(v)})
        raise EnvoyConfigError(f"AuthorizationPolicy condition key {key!r} is not implemented")

    ids = []
    if cond.get("values"):
        ids.append(_or_ids([one(v) for v in cond["values"]]))
    if cond.get("notValues"):
        ids.append({"not_id": _or_ids([one(v) for v in cond["notValues"]])})
    return ids[0] if len(ids) == 1 else {"and_ids": {"ids": ids}}


def _condition_rules(cond: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A `when` condition on the destination (``destination.port``) as permission rules: istiod's
    authz model puts destination.* conditions on permissions, the rest on principals."""
    if cond["key"] != "destination.port":
        raise EnvoyConfigError(f"AuthorizationPolicy condition key {cond['key']!r} is not implemented")
    rules: list[dict[str, Any]] = []
    if cond.get("values"):
        rules.append(_or_rules([{"destination_port": int(p)} for p in cond["values"]]))
    if cond.get("notValues"):
        rules.append({"not_rule": _or_rules([{"destination_port": int(p)} for p in cond["notValues"]])})
    return rules


def rbac_policy(rule: Mapping[str, Any]) -> dict[str, Any]:
    """One AuthorizationPolicy rule -> one Envoy RBAC policy: permissions = OR over `to`
    operations (each an AND of its fields), principals = OR over `from` sources (each an AND),
    with every `when` condition ANDed onto each principal (destination.* ones onto each
    permission)."""
    ops = [t.get("operation") or {} for t in rule.get("to") or []] or [{}]
    srcs = [f.get("source") or {} for f in rule.get("from") or []] or [{}]
    conds = rule.get("when") or []
    on_dest = [r for c in conds if c["key"].startswith("destination.") for r in _condition_rules(c)]
    when = [_condition_id(c) for c in conds if not c["key"].startswith("destination.")]
    return {
        "permissions": [{"and_rules": {"rules": _operation_rules(op) + on_dest}} for op in ops],
        "principals": [{"and_ids": {"ids": _source_ids(s) + when}} for s in srcs],
    }


def rbac_filters(policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """DENY then ALLOW RBAC filters for the AuthorizationPolicies of a workload (CUSTOM excluded).
    A policy without rules: ALLOW matches nothing (deny all), DENY matches nothing."""
    out = []
    for action in ("DENY", "ALLOW"):
        chosen = [p for p in policies if (p["spec"].get("action") or "ALLOW") == action]
        if not chosen:
            continue
        rules: dict[str, Any] = {}
        for p in sorted(chosen, key=lambda p: (p["metadata"].get("namespace") or "", p["metadata"]["name"])):
            for i, rule in enumerate(p["spec"].get("rules") or []):
                name = f"ns[{p['metadata'].get('namespace')}]-policy[{p['metadata']['name']}]-rule[{i}]"
                rules[name] = rbac_policy(rule)
        out.append({"name": RBAC, "typed_config": {"@type": RBAC_TYPE,
                                                   "rules": {"action": action, "policies": rules}}})
    return out


def custom_filters(policies: list[dict[str, Any]], mesh: Mapping[str, Any] | None,
                   namespace: str) -> list[dict[str, Any]]:
    """The shadow RBAC filter marking requests the CUSTOM policies match, and the ext_authz
    filter of their provider (one provider per workload, as istiod requires)."""
    custom = [p for p in policies if p["spec"].get("action") == "CUSTOM"]
    if not custom:
        return []
    names = {p["spec"]["provider"]["name"] for p in custom}
    if len(names) != 1:
        raise EnvoyConfigError(f"CUSTOM policies name several providers {sorted(names)}; istiod rejects that")
    (name,) = names
    providers = {p["name"]: p for p in (mesh or {}).get("extensionProviders") or []}
    if name not in providers:
        raise EnvoyConfigError(f"CUSTOM policy names provider {name!r}, which the mesh config does not define "
                               "(istiod would deny every request on the workload)")
    shadow: dict[str, Any] = {}
    for p in sorted(custom, key=lambda p: p["metadata"]["name"]):
        for i, rule in enumerate(p["spec"].get("rules") or []):
            md = p["metadata"]
            key = f"{EXT_AUTHZ_POLICY_PREFIX}-ns[{md.get('namespace')}]-policy[{md['name']}]-rule[{i}]"
            shadow[key] = rbac_policy(rule)
    rbac = {"name": RBAC, "typed_config": {
        "@type": RBAC_TYPE,
        "shadow_rules": {"action": "DENY", "policies": shadow},
        "shadow_rules_stat_prefix": EXT_AUTHZ_SHADOW_PREFIX,
    }}
    return [rbac, ext_authz_from_provider(providers[name], namespace)]


# --------------------------------------------------------------------------------------------
# RequestAuthentication -> jwt_authn
# --------------------------------------------------------------------------------------------


def jwks_cluster_name(jwks_uri: str) -> str:
    u = urlsplit(jwks_uri)
    return f"jwks|{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"


def jwt_filter(request_authns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """jwt_authn for the RequestAuthentications of a workload: one provider per jwtRule, and a
    requirement of any provider *or none* (a missing token passes, an invalid one is 401)."""
    providers: dict[str, Any] = {}
    for ra in sorted(request_authns, key=lambda r: r["metadata"]["name"]):
        for i, rule in enumerate(ra["spec"].get("jwtRules") or []):
            known = {"issuer", "audiences", "jwksUri", "forwardOriginalToken", "fromHeaders", "fromParams",
                     "outputClaimToHeaders"}
            extra = set(rule) - known
            if extra:
                raise EnvoyConfigError(f"jwtRule fields {sorted(extra)} are not implemented")
            if not rule.get("jwksUri"):
                raise EnvoyConfigError("jwtRules without jwksUri (OIDC discovery) are not implemented")
            p: dict[str, Any] = {
                "issuer": rule["issuer"],
                "remote_jwks": {
                    "http_uri": {"uri": rule["jwksUri"], "cluster": jwks_cluster_name(rule["jwksUri"]),
                                 "timeout": "5s"},
                    "cache_duration": "600s",
                    "async_fetch": {},
                    "retry_policy": {"num_retries": 3},
                },
                "forward": bool(rule.get("forwardOriginalToken", False)),
                "payload_in_metadata": JWT_PAYLOAD,
            }
            if rule.get("audiences"):
                p["audiences"] = list(rule["audiences"])
            if rule.get("fromHeaders"):
                p["from_headers"] = [{"name": h["name"], **({"value_prefix": h["prefix"]} if h.get("prefix") else {})}
                                     for h in rule["fromHeaders"]]
            if rule.get("fromParams"):
                p["from_params"] = list(rule["fromParams"])
            if rule.get("outputClaimToHeaders"):
                p["claim_to_headers"] = [{"header_name": c["header"], "claim_name": c["claim"]}
                                         for c in rule["outputClaimToHeaders"]]
            providers[f"origins-{ra['metadata']['name']}-{i}"] = p
    if not providers:
        return None
    reqs: list[dict[str, Any]] = [{"provider_name": n} for n in providers]
    reqs.append({"allow_missing": {}})
    return {"name": JWT, "typed_config": {
        "@type": JWT_TYPE,
        "providers": providers,
        "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": reqs}}}],
        "bypass_cors_preflight": True,
    }}


# --------------------------------------------------------------------------------------------
# VirtualServices -> routes
# --------------------------------------------------------------------------------------------


def _route_match(m: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    extra = set(m) - {"uri", "headers", "name", "ignoreUriCase"}
    if extra:
        raise EnvoyConfigError(f"VirtualService match fields {sorted(extra)} are not implemented")
    uri = m.get("uri")
    if not uri:
        out["prefix"] = "/"
    elif "exact" in uri:
        out["path"] = uri["exact"]
    elif "prefix" in uri:
        out["prefix"] = uri["prefix"]
    elif "regex" in uri:
        out["safe_regex"] = {"regex": uri["regex"]}
    if m.get("ignoreUriCase"):
        out["case_sensitive"] = False
    headers = []
    for name, hm in (m.get("headers") or {}).items():
        (kind, value), = hm.items()
        sm = {"exact": {"exact": value}, "prefix": {"prefix": value},
              "regex": {"safe_regex": {"regex": value}}}.get(kind)
        if sm is None:
            raise EnvoyConfigError(f"header match {kind!r} is not implemented")
        headers.append({"name": name, "string_match": sm})
    if headers:
        out["headers"] = headers
    return out


def _routes(vs: Mapping[str, Any], gateway_ns: str) -> list[dict[str, Any]]:
    ns = vs["metadata"].get("namespace") or gateway_ns
    routes = []
    for http in vs["spec"].get("http") or []:
        extra = set(http) - {"name", "match", "route", "headers", "timeout"}
        if extra:
            raise EnvoyConfigError(f"VirtualService http fields {sorted(extra)} are not implemented")
        dests = http.get("route") or []
        if len(dests) != 1:
            raise EnvoyConfigError("only single-destination routes are implemented")
        d = dests[0]["destination"]
        host = fqdn(d["host"], ns)
        action = {"cluster": outbound_cluster(host, int(d["port"]["number"])),
                  "timeout": _duration(http["timeout"]) if http.get("timeout") else "0s"}
        req = (http.get("headers") or {}).get("request") or {}
        for m in http.get("match") or [{}]:
            r: dict[str, Any] = {"match": _route_match(m), "route": dict(action)}
            if http.get("name"):
                r["name"] = http["name"]
            if req.get("remove"):
                r["request_headers_to_remove"] = list(req["remove"])
            add = [{"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
                   for k, v in (req.get("set") or {}).items()]
            add += [{"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
                    for k, v in (req.get("add") or {}).items()]
            if add:
                r["request_headers_to_add"] = add
            routes.append(r)
    return routes


# --------------------------------------------------------------------------------------------
# EnvoyFilter patches
# --------------------------------------------------------------------------------------------


def proto_merge(base: Any, patch: Any) -> Any:
    """Protobuf merge semantics for JSON: messages merge, repeated fields append, scalars replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = proto_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        return base + copy.deepcopy(patch)
    return copy.deepcopy(patch)


def _check_match(match: Mapping[str, Any], allowed: set[str], what: str) -> None:
    extra = set(match) - allowed
    if extra:
        raise EnvoyConfigError(f"EnvoyFilter {what} match fields {sorted(extra)} are not implemented")


def apply_envoy_filters(filters: list[dict[str, Any]], listeners: list[dict[str, Any]]) -> list[str]:
    """Apply EnvoyFilter configPatches (context GATEWAY) to the gateway listeners, in istiod's
    order (priority, then creation = name here). Returns a line per applied patch."""
    applied = []
    patches = []
    for ef in filters:
        for i, cp in enumerate(ef["spec"].get("configPatches") or []):
            patches.append((int(ef["spec"].get("priority", 0)), ef["metadata"]["name"], i, cp))
    for _, name, i, cp in sorted(patches, key=lambda t: (t[0], t[1], t[2])):
        match = cp.get("match") or {}
        if match.get("context") not in ("GATEWAY", "ANY", None):
            continue
        _check_match(match, {"context", "listener", "routeConfiguration", "proxy"}, name)
        apply_to, op, value = cp["applyTo"], cp["patch"]["operation"], cp["patch"].get("value")
        count = 0
        for lst in listeners:
            lm = match.get("listener") or {}
            _check_match(lm, {"filterChain", "portNumber", "name"}, name)
            if lm.get("portNumber") and lm["portNumber"] != lst["_port"]:
                continue
            for chain in lst["filter_chains"]:
                fcm = lm.get("filterChain") or {}
                _check_match(fcm, {"filter", "sni", "name"}, name)
                if fcm.get("sni") and fcm["sni"] not in (chain.get("filter_chain_match") or {}).get("server_names", []):
                    continue
                for f in chain["filters"]:
                    fm = fcm.get("filter") or {}
                    if fm.get("name") not in (None, f["name"]) or f["name"] != HCM:
                        continue
                    hcm = f["typed_config"]
                    if apply_to == "NETWORK_FILTER" and op == "MERGE":
                        f["typed_config"] = proto_merge(hcm, value["typed_config"])
                        count += 1
                    elif apply_to == "HTTP_FILTER":
                        sub = (fm.get("subFilter") or {}).get("name")
                        count += _patch_http_filters(hcm["http_filters"], op, sub, value, name)
                    elif apply_to == "HTTP_ROUTE" and op == "MERGE":
                        count += _patch_routes(hcm["route_config"], match.get("routeConfiguration") or {},
                                               value, name)
                    else:
                        raise EnvoyConfigError(f"EnvoyFilter {name}: {apply_to} {op} is not implemented")
        applied.append(f"{name}[{i}] {apply_to} {op}: {count} place(s)")
    return applied


def _patch_http_filters(chain: list[dict[str, Any]], op: str, sub: str | None, value: Any, name: str) -> int:
    if op == "INSERT_FIRST":
        chain.insert(0, copy.deepcopy(value))
        return 1
    idx = next((i for i, f in enumerate(chain) if f["name"] == sub), None)
    if idx is None:
        return 0
    if op == "INSERT_BEFORE":
        chain.insert(idx, copy.deepcopy(value))
    elif op == "INSERT_AFTER":
        chain.insert(idx + 1, copy.deepcopy(value))
    elif op == "MERGE":
        chain[idx] = proto_merge(chain[idx], value)
    elif op == "REMOVE":
        del chain[idx]
    else:
        raise EnvoyConfigError(f"EnvoyFilter {name}: HTTP_FILTER {op} is not implemented")
    return 1


def _patch_routes(route_config: dict[str, Any], rcm: Mapping[str, Any], value: Any, name: str) -> int:
    _check_match(rcm, {"vhost", "portNumber", "name"}, name)
    vm = rcm.get("vhost") or {}
    n = 0
    for vh in route_config.get("virtual_hosts", []):
        if vm.get("name") and vm["name"] != vh["name"]:
            continue
        rname = (vm.get("route") or {}).get("name")
        for i, r in enumerate(vh["routes"]):
            if rname and r.get("name") != rname:
                continue
            vh["routes"][i] = proto_merge(r, value)
            n += 1
    return n


# --------------------------------------------------------------------------------------------
# The bootstrap
# --------------------------------------------------------------------------------------------


def _strip_ns(h: str) -> str:
    return h.split("/", 1)[1] if "/" in h else h


def _gateway_listeners(render: Any, ep: local_map.LocalEndpoints, mesh: Mapping[str, Any] | None,
                       http_filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    gateways = _objs(render, "Gateway")
    if len(gateways) != 1:
        raise EnvoyConfigError(f"expected one Gateway in the render, found {len(gateways)}")
    gw = gateways[0]
    gw_ns, gw_name = gw["metadata"].get("namespace") or "", gw["metadata"]["name"]
    vss = [v for v in _objs(render, "VirtualService")
           if any(g in (f"{gw_ns}/{gw_name}", gw_name if (v["metadata"].get("namespace") == gw_ns) else None)
                  for g in v["spec"].get("gateways") or [])]
    tls = {"common_tls_context": {
        "tls_certificates": [{"certificate_chain": {"filename": ep.cert_file},
                              "private_key": {"filename": ep.key_file}}],
        "alpn_protocols": ["h2", "http/1.1"],
    }}
    by_port: dict[int, list[dict[str, Any]]] = {}
    for s in gw["spec"]["servers"]:
        by_port.setdefault(int(s["port"]["number"]), []).append(s)
    listeners = []
    local_port = {443: ep.https_port, 80: ep.http_port}
    for port, servers in sorted(by_port.items()):
        chains = []
        for s in servers:
            hosts = [_strip_ns(h) for h in s["hosts"]]
            proto = s["port"]["protocol"].upper()
            vhosts = []
            for h in vhost_names(hosts, vss):
                vh: dict[str, Any] = {"name": f"{h}:{port}", "domains": [h, f"{h}:*"], "routes": []}
                for vs in vss:
                    if any(local_map_host_matches(vs_host, h) for vs_host in vs["spec"]["hosts"]):
                        vh["routes"] += _routes(vs, gw_ns)
                if proto == "HTTP" and (s.get("tls") or {}).get("httpsRedirect"):
                    vh["require_tls"] = "ALL"
                    vh["routes"] = vh["routes"] or [{"match": {"prefix": "/"}, "direct_response": {"status": 404}}]
                vhosts.append(vh)
            route_config = {"name": f"{proto.lower()}.{port}.{s['port']['name']}.{gw_name}.{gw_ns}",
                            "virtual_hosts": vhosts}
            hcm = _hcm(f"gateway_{proto.lower()}_{port}", route_config, copy.deepcopy(http_filters), mesh, True)
            chain: dict[str, Any] = {"filters": [{"name": HCM, "typed_config": hcm}]}
            if proto == "HTTPS":
                t = s.get("tls") or {}
                if t.get("mode", "SIMPLE") != "SIMPLE":
                    raise EnvoyConfigError(f"Gateway TLS mode {t.get('mode')!r} is not implemented")
                ctx = copy.deepcopy(tls)
                if t.get("minProtocolVersion"):
                    ctx["common_tls_context"]["tls_params"] = {
                        "tls_minimum_protocol_version": t["minProtocolVersion"].replace("TLSV", "TLSv")}
                chain["filter_chain_match"] = {"server_names": hosts}
                chain["transport_socket"] = {"name": "envoy.transport_sockets.tls",
                                             "typed_config": {"@type": TLS_TYPE, **ctx}}
            elif proto != "HTTP":
                raise EnvoyConfigError(f"Gateway server protocol {proto!r} is not implemented")
            chains.append(chain)
        lst: dict[str, Any] = {"name": f"gateway_{port}", "_port": port,
                               "address": _addr(ep.gateway_ip, local_port.get(port, port)),
                               "filter_chains": chains}
        if any("transport_socket" in c for c in chains):
            # SNI picks the filter chain, as on an Istio gateway.
            lst["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]
        listeners.append(lst)
    return listeners


def vhost_names(server_hosts: list[str], vss: list[dict[str, Any]]) -> list[str]:
    """The virtual hosts istiod builds for a server: each VirtualService host the server's hosts
    admit, the more specific of the two names (a VirtualService for ``grafana.example.com`` on a
    ``*.example.com`` server gets its own ``grafana.example.com`` virtual host); server hosts no
    VirtualService names get none."""
    names: list[str] = []
    for vs in vss:
        for vs_host in vs["spec"]["hosts"]:
            for h in server_hosts:
                if local_map_host_matches(vs_host, h):
                    vs_specific = not vs_host.startswith("*.") or (h.startswith("*.") and len(vs_host) > len(h))
                    name = vs_host if vs_specific else h
                    if name not in names:
                        names.append(name)
    return names


def local_map_host_matches(pattern: str, host: str) -> bool:
    if pattern == host:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host.startswith("*.") and pattern.endswith(host[1:])


def build(render: Any, endpoints: local_map.LocalEndpoints) -> dict[str, Any]:
    """The Envoy bootstrap for a render and the run's local endpoints."""
    cfg = render.config
    mesh = render.mesh_config
    ep = endpoints
    gateways = _objs(render, "Gateway")
    if not gateways:
        raise EnvoyConfigError("the render has no Gateway")
    gw = gateways[0]
    gw_ns = gw["metadata"].get("namespace") or ""
    gw_labels = dict(gw["spec"].get("selector") or {})

    def policies_for(ns: str, labels: Mapping[str, str]) -> tuple[list, list]:
        ap = [p for p in _objs(render, "AuthorizationPolicy") if _selects(p, ns, labels)]
        ra = [r for r in _objs(render, "RequestAuthentication") if _selects(r, ns, labels)]
        return ap, ra

    # --- gateway HTTP filters, in Istio's order: CUSTOM, authn, DENY, ALLOW, router
    ap, ra = policies_for(gw_ns, gw_labels)
    filters = custom_filters(ap, mesh, gw_ns)
    jwt = jwt_filter(ra)
    if jwt:
        filters.append(jwt)
    filters += rbac_filters([p for p in ap if p["spec"].get("action") != "CUSTOM"])
    filters.append(_router())
    listeners = _gateway_listeners(render, ep, mesh, filters)

    efs = [e for e in _objs(render, "EnvoyFilter") if _selects(e, gw_ns, gw_labels)]
    applied = apply_envoy_filters(efs, listeners)

    # --- harness addition: the Keycloak host on its own chain (no rendered filters)
    kc_host = cfg.keycloak.host
    kc_chain = {
        "filter_chain_match": {"server_names": [kc_host]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": TLS_TYPE, "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": ep.keycloak_cert_file or ep.cert_file},
                                      "private_key": {"filename": ep.keycloak_key_file or ep.key_file}}]}}},
        "filters": [{"name": HCM, "typed_config": _hcm(
            "keycloak", {"virtual_hosts": [{"name": "keycloak", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "harness|keycloak", "timeout": "30s"}}]}]},
            [_router()], None, True)}],
    }
    https = next((lst for lst in listeners if lst["_port"] == 443), None)
    if https is None:
        raise EnvoyConfigError("the Gateway has no port 443 server")
    https["filter_chains"].append(kc_chain)

    # --- sidecars
    clusters: dict[str, dict[str, Any]] = {"harness|keycloak": static_cluster("harness|keycloak", ep.keycloak)}
    sidecars = []
    jwks_uris: set[str] = set()
    for app in cfg.apps:
        labels, ns = app.selector_labels, app.service.namespace
        ap, ra = policies_for(ns, labels)
        if any(p["spec"].get("action") == "CUSTOM" for p in ap):
            raise EnvoyConfigError(f"CUSTOM policies on app {app.name}'s sidecar are not implemented")
        f = []
        j = jwt_filter(ra)
        if j:
            f.append(j)
        f += rbac_filters(ap)
        f.append(_router())
        inbound = f"inbound|{app.service.port}||"
        clusters[f"{inbound}{app.name}"] = static_cluster(f"{inbound}{app.name}", ep.apps[app.name])
        rc = {"name": f"inbound|{app.service.port}|http|{app.name}", "virtual_hosts": [
            {"name": f"inbound|http|{app.service.port}", "domains": ["*"],
             "routes": [{"name": "default", "match": {"prefix": "/"},
                         "route": {"cluster": f"{inbound}{app.name}", "timeout": "0s"}}]}]}
        sidecars.append({
            "name": f"sidecar_{app.name}",
            "address": _addr(*ep.sidecars[app.name]),
            "filter_chains": [{"filters": [{"name": HCM, "typed_config": _hcm(
                f"sidecar_{app.name}", rc, f, mesh, False)}]}],
        })

    # --- clusters for every cluster name the listeners use
    proxy_svc = _oauth2_proxy_service(render)
    smap = local_map.service_map(
        proxy_svc, [(a.name, a.service.name, a.service.namespace, a.service.port) for a in cfg.apps], ep)
    for name in sorted(_cluster_refs(listeners)):
        if name in clusters:
            continue
        if name.startswith("outbound|"):
            _, port, _, host = name.split("|")
            clusters[name] = static_cluster(name, smap.resolve(host, int(port)))
        elif name.startswith("jwks|"):
            continue
        else:
            raise EnvoyConfigError(f"no local endpoint for cluster {name!r}")
    for lst in listeners + sidecars:
        for ref in _jwks_refs(lst):
            jwks_uris.add(ref)
    for cname in sorted(jwks_uris):
        host = cname.split("|", 1)[1].rsplit(":", 1)[0]
        if host != kc_host:
            raise EnvoyConfigError(f"JWKS host {host!r} is not the Keycloak host; no local counterpart")
        # local_map: the jwksUri's host is the (external) Keycloak -> the local Keycloak directly
        clusters[cname] = static_cluster(cname, ep.keycloak)

    for lst in listeners:
        lst.pop("_port", None)
    return {
        "node": {"id": "authproxy-harness", "cluster": "authproxy-harness",
                 "metadata": {"applied_envoy_filters": applied}},
        "admin": {"address": _addr(*ep.envoy_admin)},
        "static_resources": {"listeners": listeners + sidecars, "clusters": list(clusters.values())},
    }


def _walk(value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def _cluster_refs(listeners: list[dict[str, Any]]) -> set[str]:
    return {v for k, v in _walk(listeners) if k == "cluster" and isinstance(v, str)}


def _jwks_refs(listener: dict[str, Any]) -> set[str]:
    return {v["cluster"] for k, v in _walk(listener) if k == "http_uri" and isinstance(v, dict)}


def _oauth2_proxy_service(render: Any) -> tuple[str, str, list[int]]:
    """The Service in front of the oauth2-proxy pods: (name, namespace, [http port, others...])."""
    pod_labels = None
    for d in _objs(render, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            if any(str(a).startswith("--provider=") for a in c.get("args", [])):
                pod_labels = d["spec"]["template"]["metadata"].get("labels") or {}
                ns = d["metadata"].get("namespace") or ""
    if pod_labels is None:
        raise EnvoyConfigError("no oauth2-proxy Deployment in the render")
    for s in _objs(render, "Service"):
        sel = s["spec"].get("selector") or {}
        if (s["metadata"].get("namespace") or "") == ns and sel and all(pod_labels.get(k) == v for k, v in sel.items()):
            ports = s["spec"]["ports"]
            http = [p["port"] for p in ports if p.get("name") == "http"] or [ports[0]["port"]]
            return s["metadata"]["name"], ns, http + [p["port"] for p in ports if p["port"] not in http]
    raise EnvoyConfigError("no Service selects the oauth2-proxy pods")
