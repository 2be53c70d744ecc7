"""ztunnel's part of Istio's translation: what istiod pushes to a ztunnel (tools/istio-xds's
``ztunnel`` entry: the ``istio.workload.Address`` and ``istio.security.Authorization`` resources of
istiod's own generators, as proto JSON) written as ztunnel's local configuration file
(``LOCAL_XDS_PATH``: its ``LocalConfig``, src/xds.rs of the pinned snapshot), field by field as
ztunnel converts the same protos (src/state/workload.rs ``TryFrom<XdsWorkload>``,
src/state/service.rs, src/rbac.rs). Nothing here decides a policy: istiod did.

Three details of ztunnel's format the conversion keeps (each found as a start-up or handshake
error): a waypoint's ``NamespacedHostname`` is the string ``namespace/hostname``; string matches
are YAML tags (``!Suffix '/ns/x/sa/y'``, serde_yaml's form of a Rust enum); an empty trust domain
in the push means ``cluster.local`` (else the workload certificate's SAN is ``spiffe:///ns/...``).

Imports: the standard library and PyYAML.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import yaml

DEFAULT_TRUST_DOMAIN = "cluster.local"


class Tagged:
    """A Rust enum variant as serde_yaml reads it: a YAML tag (``!Suffix value``)."""

    def __init__(self, tag: str, value: Any) -> None:
        self.tag, self.value = tag, value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tagged) and (self.tag, self.value) == (other.tag, other.value)

    def __repr__(self) -> str:
        return f"!{self.tag} {self.value!r}"


class _Dumper(yaml.SafeDumper):
    pass


def _tagged(dumper: yaml.SafeDumper, t: Tagged) -> yaml.Node:
    return dumper.represent_scalar("!" + t.tag, "" if t.value is None else str(t.value))


_Dumper.add_representer(Tagged, _tagged)


def _ip(b64: str) -> str:
    return str(ipaddress.ip_address(base64.b64decode(b64)))


def _net_addr(a: dict[str, Any]) -> str:
    return f"{a.get('network', '')}/{_ip(a['address'])}"


def _gateway(g: dict[str, Any] | None) -> dict[str, Any] | None:
    if not g:
        return None
    if "hostname" in g:
        dest: Any = f"{g['hostname']['namespace']}/{g['hostname']['hostname']}"
    else:
        dest = _net_addr(g["address"])
    return {"destination": dest, "hboneMtlsPort": int(g.get("hbone_mtls_port", 0))}


_MATCH_FIELDS = {
    "namespaces": "namespaces", "not_namespaces": "notNamespaces",
    "principals": "principals", "not_principals": "notPrincipals",
    "source_ips": "sourceIps", "not_source_ips": "notSourceIps",
    "destination_ips": "destinationIps", "not_destination_ips": "notDestinationIps",
    "destination_ports": "destinationPorts", "not_destination_ports": "notDestinationPorts",
    "service_accounts": "serviceAccounts", "not_service_accounts": "notServiceAccounts",
}


def _string_match(m: dict[str, Any]) -> Tagged:
    for k, v in (("exact", "Exact"), ("prefix", "Prefix"), ("suffix", "Suffix")):
        if k in m:
            return Tagged(v, m[k])
    if "presence" in m:
        return Tagged("Presence", None)
    raise ValueError(f"unknown string match {m}")


def _match(m: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in m.items():
        key = _MATCH_FIELDS[k]
        if "ports" in k:
            out[key] = [int(p) for p in v]
        elif "ips" in k:
            out[key] = [f"{_ip(a['address'])}/{a['length']}" for a in v]
        elif "service_accounts" in k:
            out[key] = [{"namespace": a["namespace"], "serviceAccount": a["service_account"]} for a in v]
        else:
            out[key] = [_string_match(s) for s in v]
    return out


def authorization(a: dict[str, Any]) -> dict[str, Any]:
    """An ``istio.security.Authorization`` as ztunnel's ``Authorization`` (groups -> rules ->
    matches; proto JSON leaves out the defaults ALLOW and GLOBAL)."""
    scope = {"GLOBAL": "Global", "NAMESPACE": "Namespace", "WORKLOAD_SELECTOR": "WorkloadSelector"}[
        a.get("scope", "GLOBAL")]
    action = {"ALLOW": "Allow", "DENY": "Deny"}[a.get("action", "ALLOW")]
    rules = [[[_match(m) for m in rule.get("matches", [])] for rule in group.get("rules", [])]
             for group in a.get("groups", [])]
    return {"name": a["name"], "namespace": a["namespace"], "scope": scope, "action": action,
            "rules": rules, "dryRun": bool(a.get("dry_run", False))}


def _service(s: dict[str, Any]) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "name": s["name"], "namespace": s["namespace"], "hostname": s["hostname"],
        "vips": [_net_addr(v) for v in s.get("addresses", [])],
        "ports": {int(p["service_port"]): int(p.get("target_port", 0)) for p in s.get("ports", [])},
        "subjectAltNames": s.get("subject_alt_names", []), "canonical": bool(s.get("canonical")),
    }
    wp = _gateway(s.get("waypoint"))
    if wp:
        svc["waypoint"] = wp
    return svc


def _workload(w: dict[str, Any], services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    svcs = {}
    for key, pl in (w.get("services") or {}).items():
        svc_ports = services.get(key, {}).get("ports", {})
        svcs[key] = {int(p["service_port"]): int(p.get("target_port") or svc_ports.get(int(p["service_port"]), 0))
                     for p in pl.get("ports", [])}
    out: dict[str, Any] = {
        "uid": w["uid"], "name": w["name"], "namespace": w["namespace"],
        "serviceAccount": w.get("service_account", "default"),
        "trustDomain": w.get("trust_domain") or DEFAULT_TRUST_DOMAIN,
        "workloadIps": [_ip(x) for x in w.get("addresses", [])],
        "protocol": "HBONE" if w.get("tunnel_protocol") == "HBONE" else "TCP",
        "node": w.get("node", ""), "network": w.get("network", ""),
        "canonicalName": w.get("canonical_name", ""), "canonicalRevision": w.get("canonical_revision", ""),
        "workloadName": w.get("workload_name", ""), "workloadType": w.get("workload_type", "pod").lower(),
        "clusterId": w.get("cluster_id", ""),
        "authorizationPolicies": w.get("authorization_policies", []),
        "services": svcs,
    }
    wp = _gateway(w.get("waypoint"))
    if wp:
        out["waypoint"] = wp
    return out


def local_config(push: dict[str, Any]) -> dict[str, Any]:
    """ztunnel's ``LocalConfig`` (workloads, policies, services) from istiod's push."""
    services = {f"{a['service']['namespace']}/{a['service']['hostname']}": _service(a["service"])
                for a in push["addresses"] if a.get("service")}
    workloads = [_workload(a["workload"], services) for a in push["addresses"] if a.get("workload")]
    return {"workloads": workloads, "services": list(services.values()),
            "policies": [authorization(p) for p in push["authorizations"]]}


def local_config_yaml(push: dict[str, Any]) -> str:
    return yaml.dump(local_config(push), Dumper=_Dumper, sort_keys=False)
