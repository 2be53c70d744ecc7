"""What `make engine` checks on the real servers after each `pulumi up`, rotation and destroy:
Keycloak holds the realm, client (one redirect URI, PKCE S256), mappers, groups and users; every
Kubernetes object of the state is live with the state's uid and the program's labels; the Helm
release is deployed; no secret is in the state in plain text; a cookie-secret rotation changes
exactly the secret and the rollout; nothing is left after destroy.

Imports: :mod:`authproxy_local.cluster`, :mod:`authproxy_local.keycloak`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from authproxy_local.cluster.apiserver import Cluster
from authproxy_local.keycloak.admin import AdminSession

SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270"
"""How Pulumi's state marks a secret value (github.com/pulumi/pulumi sdk/go/common/resource/sig)."""

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


class EngineError(RuntimeError):
    """A step failed; the message says which and where its log is."""


def log(msg: str) -> None:
    print(f"[engine] {msg}", flush=True)


def verify_keycloak(kc: AdminSession, stack: str, resources: list[dict[str, Any]], existing_realm: str | None) -> None:
    realm = next((r["outputs"] for r in resources if r["type"] == "keycloak:index/realm:Realm"), None)
    name = realm["realm"] if realm else existing_realm
    code, _ = kc.lookup(f"/realms/{name}")
    if code != 200:
        raise EngineError(f"{stack}: realm {name} not in Keycloak (HTTP {code})")
    client_state = next(r["outputs"] for r in resources if r["type"] == "keycloak:openid/client:Client")
    code, clients = kc.lookup(f"/realms/{name}/clients?clientId={client_state['clientId']}")
    if code != 200 or len(clients) != 1:
        raise EngineError(f"{stack}: client {client_state['clientId']} not found once in {name}")
    c = clients[0]
    if len(c.get("redirectUris", [])) != 1:
        raise EngineError(f"{stack}: client has redirect URIs {c.get('redirectUris')}, expected one")
    if c.get("attributes", {}).get("pkce.code.challenge.method") != "S256":
        raise EngineError(f"{stack}: client PKCE is {c.get('attributes', {}).get('pkce.code.challenge.method')}")
    mappers = {m["name"] for m in c.get("protocolMappers", [])}
    want_mappers = {r["outputs"]["name"] for r in resources if "ProtocolMapper" in r["type"]}
    if not want_mappers <= mappers:
        raise EngineError(f"{stack}: mappers {sorted(want_mappers - mappers)} missing on the client")
    _, groups = kc.lookup(f"/realms/{name}/groups")
    want_groups = {r["outputs"]["name"] for r in resources if r["type"] == "keycloak:index/group:Group"}
    if not want_groups <= {g["name"] for g in groups}:
        raise EngineError(f"{stack}: groups {want_groups} not all in Keycloak ({groups})")
    _, users = kc.lookup(f"/realms/{name}/users")
    want_users = {r["outputs"]["username"] for r in resources if r["type"] == "keycloak:index/user:User"}
    if not want_users <= {u["username"] for u in users}:
        raise EngineError(f"{stack}: users {want_users} not all in Keycloak")
    log(f"{stack}: Keycloak has realm {name}, client {c['clientId']} (1 redirect URI, PKCE S256), "
        f"{len(want_mappers)} mappers, groups {sorted(want_groups)}, users {sorted(want_users)}")


def k8s_objects(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in resources if r["type"].startswith("kubernetes:") and r.get("custom")
            and r["type"] != HELM_RELEASE and not r["type"].startswith("pulumi:providers")]


def _live(cluster: Cluster, out: dict[str, Any]) -> dict[str, Any] | None:
    meta = out["metadata"]
    return cluster.get(out["apiVersion"], out["kind"], meta.get("namespace"), meta["name"])


def verify_kubernetes(cluster: Cluster, stack: str, resources: list[dict[str, Any]]) -> None:
    objs = k8s_objects(resources)
    for r in objs:
        out = r["outputs"]
        meta = out["metadata"]
        live = _live(cluster, out)
        if live is None:
            raise EngineError(f"{stack}: {out['kind']} {meta.get('namespace')}/{meta['name']} is not in the API server")
        if live["metadata"]["uid"] != meta["uid"]:
            raise EngineError(f"{stack}: {out['kind']} {meta['name']}: live uid differs from the state's")
        want_labels = (r.get("inputs", {}).get("metadata") or {}).get("labels") or {}
        live_labels = live["metadata"].get("labels") or {}
        if isinstance(want_labels, dict) and not set(want_labels.items()) <= set(live_labels.items()):
            raise EngineError(f"{stack}: {out['kind']} {meta['name']}: labels differ from the program's")
    releases = [r for r in resources if r["type"] == HELM_RELEASE]
    for r in releases:
        st = r["outputs"].get("status") or {}
        if st.get("status") != "deployed":
            raise EngineError(f"{stack}: Helm release {r['outputs'].get('name')} is {st.get('status')!r}")
        ns = st.get("namespace") or r["outputs"].get("namespace")
        records = cluster.helm_release_records(ns, st.get("name"))
        if len([s for s in records if s["metadata"]["labels"].get("status") == "deployed"]) != 1:
            raise EngineError(f"{stack}: Helm release {st.get('name')}: no deployed release record in {ns}")
    log(f"{stack}: {len(objs)} Kubernetes objects live as in the state; {len(releases)} Helm release(s) deployed")


def verify_state_secrets(stack: str, shown: dict[str, Any], state: str) -> None:
    """No secret the state keeps encrypted is also in it in plain text (a resource ID is never
    encrypted: pulumi-random's RandomBytes uses its value as ID). ``shown`` is the deployment with
    secrets shown; the secrets looked for are every secret that is a single string (the random
    values, secret stack outputs, ...) and every value of a Kubernetes Secret's data, decoded and
    base64 (whole secret objects such as Helm values hold ordinary strings too). ``state`` is the
    state as the backend stores it."""
    values: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get(SECRET_SIG) == SECRET_SIG_VALUE and "plaintext" in node:
                value = json.loads(node["plaintext"])
                if isinstance(value, str):
                    values.add(value)
                else:
                    walk(value)
                return
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for r in shown.get("resources") or []:
        walk(r.get("outputs"))
        if r["type"] == "kubernetes:core/v1:Secret":
            for fld, field_value in (r.get("outputs") or {}).items():
                if fld in ("data", "stringData") and isinstance(field_value, dict):
                    plain = json.loads(field_value["plaintext"]) if "plaintext" in field_value else field_value
                    for v in plain.values():
                        values.add(v)
                        if fld == "data":
                            values.add(base64.b64decode(v).decode("utf-8", "replace"))
    values = {v for v in values if len(v) >= 8}
    if not values:
        raise EngineError(f"{stack}: the deployment with secrets shown holds no secret value")
    leaked = [v for v in values if v in state]
    if leaked:  # counted, never printed
        raise EngineError(f"{stack}: {len(leaked)} of the state's {len(values)} secret values are also in "
                          "plain text in the stored state (e.g. as a resource ID)")
    log(f"{stack}: none of the state's {len(values)} secret values is in plain text in it")


def check_rotation(stack: str, rot: list[tuple[str, str]]) -> None:
    names = {n for _, n in rot}
    if not any("cookie" in n for op, n in rot if op in ("replace", "create-replacement", "delete-replaced")):
        raise EngineError(f"{stack}: bumping rotation.cookieSecret does not replace the cookie secret: {rot}")
    expected = ("oauth2-proxy-secret", "oauth2-proxy-deployment")
    missing = [n for n in expected if not any(x.endswith(n) for x in names)]
    if missing:
        raise EngineError(f"{stack}: bumping rotation.cookieSecret does not change {missing} "
                          f"(the new secret would not reach the pods): {rot}")
    unexpected = {n for n in names if "cookie" not in n and not n.endswith(expected)}
    if unexpected:
        raise EngineError(f"{stack}: bumping rotation.cookieSecret also changes {sorted(unexpected)}: {rot}")


HelmObjects = dict[str, list[tuple[str, str, str, str]]]


def helm_objects(cluster: Cluster, resources: list[dict[str, Any]]) -> HelmObjects:
    """Per Helm release of the state (``namespace/name``): the objects its manifest made."""
    out: HelmObjects = {}
    for r in resources:
        if r["type"] == HELM_RELEASE:
            st = r["outputs"].get("status") or {}
            ns = st.get("namespace") or r["outputs"].get("namespace")
            name = str(st.get("name") or r["outputs"].get("name"))
            out[f"{ns}/{name}"] = cluster.helm_release_objects(str(ns), name)
    return out


def verify_helm_objects_gone(cluster: Cluster, stack: str, made: HelmObjects) -> None:
    """After destroy: each Helm release's own objects (not in Pulumi's state: Helm made them) and
    its release records are gone too."""
    left = []
    for key, objs in made.items():
        ns, release = key.split("/", 1)
        if not objs:
            raise EngineError(f"{stack}: Helm release {key} made no objects: nothing to check")
        for api, kind, ons, name in objs:
            if cluster.get(api, kind, ons, name) is not None:
                left.append(f"{kind} {ons}/{name} (release {key})")
        if cluster.helm_release_records(ns, release):
            left.append(f"Helm release records of {key}")
    if left:
        raise EngineError(f"{stack}: Helm left after destroy: {left}")
    log(f"{stack}: the Helm releases' {sum(map(len, made.values()))} objects are gone")


def verify_gone(cluster: Cluster, kc: AdminSession, stack: str, resources: list[dict[str, Any]],
                existing_realm: str | None) -> None:
    left = []
    for r in k8s_objects(resources):
        out = r["outputs"]
        meta = out["metadata"]
        live = _live(cluster, out)
        if r["type"].endswith("Patch"):
            # The object is the user's: destroy takes back the stack's fields, never the object.
            ident = f"{out['kind']} {meta.get('namespace', '')}/{meta['name']}"
            if live is None:
                left.append(f"{ident} was deleted, though the stack only patched it")
                continue
            mine = (r.get("inputs", {}).get("metadata") or {}).get("labels") or {}
            kept = {k for k in mine if k in (live["metadata"].get("labels") or {})}
            if kept:
                left.append(f"{ident} still has the stack's labels {sorted(kept)}")
            continue
        # The namespace controller empties and removes a deleted Namespace, and pulumi-kubernetes
        # waits for that: nothing may be left, not even a Terminating namespace.
        if live is not None:
            left.append(f"{out['kind']} {meta.get('namespace', '')}/{meta['name']}")
    realm = next((r["outputs"]["realm"] for r in resources if r["type"] == "keycloak:index/realm:Realm"), None)
    if realm:
        code, _ = kc.lookup(f"/realms/{realm}")
        if code != 404:
            left.append(f"Keycloak realm {realm} (HTTP {code})")
    elif existing_realm:  # the realm stays (it is the user's); the stack's objects go
        for r in resources:
            if r["type"] == "keycloak:openid/client:Client":
                _, found = kc.lookup(f"/realms/{existing_realm}/clients?clientId={r['outputs']['clientId']}")
                if found:
                    left.append(f"Keycloak client {r['outputs']['clientId']} in {existing_realm}")
            if r["type"] == "keycloak:index/group:Group":
                _, groups = kc.lookup(f"/realms/{existing_realm}/groups")
                if any(g["name"] == r["outputs"]["name"] for g in groups):
                    left.append(f"Keycloak group {r['outputs']['name']} in {existing_realm}")
    if left:
        raise EngineError(f"{stack}: left after destroy: {left}")
