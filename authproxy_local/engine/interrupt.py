"""`make engine --interrupt`: kill `pulumi up` halfway (SIGKILL, its plugins with it), then do
what README's troubleshooting tells a user: `pulumi cancel` if the stack is still locked,
`pulumi refresh` importing the pending creates that exist (IDs found on the servers) and clearing
the rest; the next `pulumi up` must converge (the caller checks it).

The raw CLI throughout: the check needs the process itself (to kill it) and the flags the
Automation API has no call for (``--import-pending-creates``).

Imports: :mod:`authproxy_local.cluster`, :mod:`authproxy_local.keycloak`, :mod:`.checks`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

from authproxy_local.cluster.apiserver import Cluster
from authproxy_local.cluster.stacks import Project
from authproxy_local.keycloak.admin import AdminSession

from .checks import HELM_RELEASE, EngineError, log


def check_interrupted_up(p: Project, cluster: Cluster, kc: AdminSession, stack: str) -> dict[str, Any]:
    state = p.state_file(stack)
    logf = p.work / "logs" / f"interrupted-up-{stack}.log"
    cmd = [str(p.exe), "up", "--yes", "--skip-preview", "--non-interactive", "--stack", stack]
    with open(logf, "w") as logfh:
        proc = subprocess.Popen(cmd, env=p.env, cwd=p.dir, stdout=logfh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)

        def created() -> int:
            try:
                doc = json.loads(state.read_text())
            except (OSError, ValueError):
                return 0
            return len((doc.get("checkpoint", {}).get("latest") or {}).get("resources") or [])

        deadline = time.monotonic() + 600
        while proc.poll() is None and created() < 12 and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise EngineError(f"{stack}: `pulumi up` ended before it could be interrupted (log {logf})")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    export = json.loads(p.cli("stack", "export", stack=stack).stdout).get("deployment", {})
    pending = export.get("pending_operations") or []
    log(f"{stack}: killed `pulumi up` with {len(export.get('resources') or [])} resources in the state, "
        f"{len(pending)} pending operations ({sorted({op.get('type') for op in pending})})")
    report: dict[str, Any] = {"pending": len(pending)}
    again = p.cli("up", "--yes", "--skip-preview", stack=stack, check=False)
    out = again.stdout + again.stderr
    if again.returncode == 0:
        raise EngineError(f"{stack}: `pulumi up` after a killed `up` succeeded without a refresh: "
                          "pending operations were ignored")
    if "locked" in out:
        report["locked"] = True
        p.cli("cancel", "--yes", stack=stack)
    imports: list[str] = []
    for op in pending:
        if op.get("type") != "creating":
            continue
        found = find_live_id(cluster, kc, op["resource"])
        if found:
            imports += [op["resource"]["urn"], found]
    report["imported"] = len(imports) // 2
    args = ["refresh", "--yes", "--skip-preview"]
    if imports:
        p.cli(*args, *(f"--import-pending-creates={x}" for x in imports), stack=stack)
    p.cli(*args, "--clear-pending-creates", stack=stack)
    log(f"{stack}: interrupted up: {report}")
    return report


def find_live_id(cluster: Cluster, kc: AdminSession, res: dict[str, Any]) -> str | None:
    """The provider ID of an object a killed `up` may have created, if it exists: what a user
    looks up before `pulumi refresh --import-pending-creates`."""
    t = res.get("type", "")
    inputs = res.get("inputs") or {}
    if t.startswith("kubernetes:") and t != HELM_RELEASE:
        meta = inputs.get("metadata") or {}
        ns, name = meta.get("namespace"), meta.get("name")
        if not name or cluster.get(inputs["apiVersion"], inputs["kind"], ns, name) is None:
            return None
        return f"{ns}/{name}" if ns else str(name)
    if t == HELM_RELEASE:
        ns, name = inputs.get("namespace"), inputs.get("name")
        return f"{ns}/{name}" if cluster.helm_release_records(ns, name) else None
    realm = inputs.get("realmId") or inputs.get("realm")
    if t == "keycloak:index/realm:Realm":
        code, _ = kc.lookup(f"/realms/{realm}")
        return str(realm) if code == 200 else None
    lookups = {"keycloak:openid/client:Client": ("clients?clientId=", "clientId"),
               "keycloak:index/group:Group": ("groups?exact=true&search=", "name"),
               "keycloak:index/user:User": ("users?exact=true&username=", "username")}
    if t in lookups:
        path, key = lookups[t]
        code, found = kc.lookup(f"/realms/{realm}/{path}{inputs.get(key)}")
        return str(found[0]["id"]) if code == 200 and found else None
    return None  # mappers, memberships, random values: cleared; the next `up` makes them again
