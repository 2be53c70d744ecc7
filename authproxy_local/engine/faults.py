"""Faults a real cluster produces, on the first stack of `make engine`: each makes `pulumi up` fail
the way a user meets it, is checked on the API server, is fixed through stack config only, and the
next `up` converges.

- Redis not ready in time (an image no node can pull), on the first install and on an upgrade:
  Helm's atomic wait fails within ``kubernetes.awaitTimeout``, the error says why and where to
  look, and nothing is left half-installed (the install uninstalled, the upgrade rolled back to
  the revision that runs).
- oauth2-proxy's pods never become ready (same image fault): `up` fails within the timeout with
  the provider's message naming the Deployment and the pod, while the old pods keep serving.
- `pulumi up` killed while a rollout is in progress (the kubelets stalled): README's
  troubleshooting (`pulumi cancel`, `pulumi up`) converges.

Imports: :mod:`authproxy_local.cluster`, ``components.config``, :mod:`.checks`, :mod:`.workloads`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any, Literal, Protocol

from pulumi import automation as auto

from authproxy_local.cluster.apiserver import Cluster
from authproxy_local.cluster.controllers import UNPULLABLE_REGISTRY, ControlPlane
from authproxy_local.cluster.stacks import Project, changes
from components.config import (
    StackConfig,
    await_timeout_values,
    cookie_secret_rotation_values,
    image_values,
)
from components.stack import PROXY_NAME, REDIS_RELEASE

from .checks import EngineError, log
from .workloads import Workloads, rollout_finished, rollout_sets

FAULT_TIMEOUT = 30
"""kubernetes.awaitTimeout while a fault runs (seconds): long enough for a healthy rollout here,
short enough that each failing `up` costs half a minute."""
MARGIN = 60
"""How much longer than the timeout a failing `up` may take (Helm's rollback, the engine's own
steps, a loaded machine)."""


class Host(Protocol):
    """What the faults need from the engine's scenario."""

    cluster: Cluster
    plane: ControlPlane

    @property
    def p(self) -> Project: ...

    def expect_failure(self, st: auto.Stack, what: str, op: str, must_say: list[str]) -> str: ...


def _fails_in_time(host: Host, st: auto.Stack, what: str, must_say: list[str]) -> tuple[str, float]:
    t0 = time.monotonic()
    out = host.expect_failure(st, what, "up", must_say)
    took = time.monotonic() - t0
    if not FAULT_TIMEOUT <= took <= FAULT_TIMEOUT + MARGIN:
        raise EngineError(f"{st.name}: {what}: `pulumi up` failed after {took:.0f}s, not after the configured "
                          f"{FAULT_TIMEOUT}s wait (kubernetes.awaitTimeout)")
    return out, took


def _bad_image(cfg: StackConfig, workload: Literal["proxy", "redis"]) -> dict[str, Any]:
    """The workload's image moved to a registry no node can pull from (same path and tag)."""
    image = cfg.redis.image if workload == "redis" else cfg.proxy.image
    repo = image.repository.split("/", 1)[-1]
    return image_values(workload, f"{UNPULLABLE_REGISTRY}/{repo}", image.tag)


def _fix(p: Project, st: auto.Stack, cfg: StackConfig, workload: Literal["proxy", "redis"]) -> None:
    """The fix a user makes: the image that exists, and the default wait again."""
    image = cfg.redis.image if workload == "redis" else cfg.proxy.image
    p.set_config(st, image_values(workload, image.repository, image.tag))
    p.remove_config(st, await_timeout_values(FAULT_TIMEOUT))


def _release_records(cluster: Cluster, namespace: str) -> list[tuple[str, str]]:
    return sorted((s["metadata"]["name"], s["metadata"]["labels"].get("status", ""))
                  for s in cluster.helm_release_records(namespace, REDIS_RELEASE))


def _why_events(w: Workloads) -> list[str]:
    """The namespace's Warning events that say why a pod did not start (what the error hook
    tells the user to read)."""
    return [e for e in w.warning_events() if "Failed to pull image" in e]


def redis_install_not_ready(host: Host, st: auto.Stack, cfg: StackConfig, w: Workloads) -> str:
    """The first install of Redis cannot become ready: Helm uninstalls it (atomic). Returns the
    line for the summary; the caller's next `up`, with the fault undone, must converge."""
    p = host.p
    fault = {**_bad_image(cfg, "redis"), **await_timeout_values(FAULT_TIMEOUT)}
    p.set_config(st, fault)
    _, took = _fails_in_time(host, st, "Redis first install not ready", [
        f"release {REDIS_RELEASE} failed, and has been uninstalled due to atomic being set",
        f"Helm release {cfg.namespace}/{REDIS_RELEASE} was not ready within {FAULT_TIMEOUT}s",
        f"kubectl -n {cfg.namespace} get events --field-selector type=Warning"])
    left = _release_records(host.cluster, cfg.namespace)
    sts = [s["metadata"]["name"] for s in w.statefulsets()]
    if left or sts:
        raise EngineError(f"{st.name}: Redis first install: half-installed after the failure: release records "
                          f"{left}, StatefulSets {sts}")
    why = _why_events(w)
    if not why:
        raise EngineError(f"{st.name}: Redis first install: the events the error points to do not say why "
                          f"({w.warning_events()})")
    _fix(p, st, cfg, "redis")
    return (f"Redis first install not ready (image from {UNPULLABLE_REGISTRY}): `up` failed after {took:.0f}s "
            f"(awaitTimeout {FAULT_TIMEOUT}s): \"release {REDIS_RELEASE} failed, and has been uninstalled due "
            f"to atomic being set\" + why: the namespace's events (\"{why[0][:70]}\"); no release record, no "
            "StatefulSet left")


def redis_upgrade_not_ready(host: Host, st: auto.Stack, cfg: StackConfig, w: Workloads) -> tuple[str, int]:
    """An upgrade of a running Redis cannot become ready: Helm rolls it back (atomic) and Redis
    keeps running the previous revision; fixed, the next `up` converges."""
    p = host.p
    before = _release_records(host.cluster, cfg.namespace)
    fault = {**_bad_image(cfg, "redis"), **await_timeout_values(FAULT_TIMEOUT)}
    p.set_config(st, fault)
    _, took = _fails_in_time(host, st, "Redis upgrade not ready", [
        f"release {REDIS_RELEASE} failed, and has been rolled back due to atomic being set",
        f"Helm release {cfg.namespace}/{REDIS_RELEASE} was not ready within {FAULT_TIMEOUT}s"])
    records = _release_records(host.cluster, cfg.namespace)
    deployed = [r for r in records if r[1] == "deployed"]
    if len(deployed) != 1 or len(records) != len(before) + 2:
        raise EngineError(f"{st.name}: Redis upgrade: want the failed upgrade and its rollback recorded and one "
                          f"deployed revision, have {records} (before: {before})")
    t = w.wait(f"{st.name}: Redis back on the revision that works", lambda: next(
        (x for x in w.problems() if "redis" in x), None), 60)
    images = {c["image"] for s in w.statefulsets() for c in s["spec"]["template"]["spec"]["containers"]}
    if any(UNPULLABLE_REGISTRY in i for i in images):
        raise EngineError(f"{st.name}: Redis upgrade: the rolled-back StatefulSet still runs {images}")
    _fix(p, st, cfg, "redis")
    p.up(st)
    n = w.assert_rolled_out(st.name, "Redis upgrade fixed")
    return (f"Redis upgrade not ready: `up` failed after {took:.0f}s: \"release {REDIS_RELEASE} failed, and has "
            f"been rolled back due to atomic being set\"; revision {deployed[0][0].rsplit('.', 1)[-1]} deployed, "
            f"Redis ready on it {t:.0f}s later; fixed -> the next `up` converged ({n} workloads rolled out)", 1)


def proxy_never_ready(host: Host, st: auto.Stack, cfg: StackConfig, w: Workloads) -> tuple[str, int]:
    """oauth2-proxy's new pods never become ready: `up` fails within the timeout naming the
    Deployment and the pod; the old ReplicaSet keeps serving meanwhile (maxUnavailable 0)."""
    p = host.p
    dep = w.deployment(PROXY_NAME)
    want = dep["spec"]["replicas"]
    fault = {**_bad_image(cfg, "proxy"), **await_timeout_values(FAULT_TIMEOUT)}
    p.set_config(st, fault)
    out, took = _fails_in_time(host, st, "oauth2-proxy never ready", [
        f'"{cfg.namespace}/{PROXY_NAME}" failed to fully initialize or become live',
        "timed out waiting to be Ready", "ImagePullBackOff", f"[Pod {cfg.namespace}/{PROXY_NAME}-"])
    current, old = rollout_sets(w.deployment(PROXY_NAME), w.replicasets())
    serving = [rs for rs in old if (rs.get("status") or {}).get("readyReplicas") == want]
    if UNPULLABLE_REGISTRY not in json.dumps(current["spec"]["template"]) or not serving:
        raise EngineError(f"{st.name}: oauth2-proxy never ready: want the new ReplicaSet stuck and the old one "
                          f"still serving {want} ready pods; have {[r['status'] for r in [current, *old]]}")
    _fix(p, st, cfg, "proxy")
    p.up(st)
    wrong = rollout_finished(w.deployment(PROXY_NAME), w.replicasets())
    if wrong:
        raise EngineError(f"{st.name}: oauth2-proxy fixed: `pulumi up` returned before the rollout finished: {wrong}")
    said = [ln.strip().lstrip("* ") for ln in out.splitlines()
            if ln.strip().startswith("* ") and ("timed out waiting to be Ready" in ln or "[Pod " in ln)]
    return (f"oauth2-proxy never ready (image from {UNPULLABLE_REGISTRY}): `up` failed after {took:.0f}s "
            f"(awaitTimeout {FAULT_TIMEOUT}s): " + " / ".join(f'"{x[:140]}"' for x in said[:2])
            + f"; the old ReplicaSet kept {want} ready pods meanwhile; fixed -> the next `up` converged "
            "(rollout observed)", 1)


def interrupted_rollout(host: Host, st: auto.Stack, cfg: StackConfig, w: Workloads) -> tuple[str, int]:
    """`pulumi up` killed (SIGKILL, its plugins with it) while the rotation's rollout is in progress
    (the kubelets stalled, so the new pod stays Pending); then what README's troubleshooting says:
    `pulumi cancel` for the stale lock, `pulumi up` again."""
    p = host.p
    before = {rs["metadata"]["name"] for rs in w.replicasets()}
    p.set_config(st, cookie_secret_rotation_values(cfg, to="interrupted"))
    logf = p.work / "logs" / f"interrupted-rollout-{st.name}.log"
    with host.plane.kubelets_paused(), open(logf, "w") as fh:
        proc = subprocess.Popen([str(p.exe), "up", "--yes", "--skip-preview", "--non-interactive", "--stack",
                                 st.name], env=p.env, cwd=p.dir, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            w.wait(f"{st.name}: the rotation's rollout under way", lambda: None if _updating(p, st.name, w, before)
                   else "no new ReplicaSet and no pending update of the Deployment yet", 120)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    pending = p.export(st.name).get("pending_operations") or []
    again = p.cli("up", "--yes", "--skip-preview", stack=st.name, check=False)
    if again.returncode == 0 or "locked" not in again.stdout + again.stderr:
        raise EngineError(f"{st.name}: `pulumi up` after a killed `up` did not report the stale lock")
    p.cli("cancel", "--yes", stack=st.name)
    p.up(st)
    check_rotation_done(w, st.name, before)
    if p.export(st.name).get("pending_operations"):
        raise EngineError(f"{st.name}: pending operations left after the recovering `up`")
    if changes(p.preview(st)):
        raise EngineError(f"{st.name}: the stack does not converge after the interrupted rollout")
    ops = sorted({op.get("type", "?") for op in pending})
    return (f"`up` killed during a rollout ({len(pending)} pending operation(s): {ops}): `pulumi up` -> "
            "\"the stack is currently locked\"; `pulumi cancel`, `pulumi up` -> rollout finished, "
            "no pending operation, no diff", 1)


def _updating(p: Project, stack: str, w: Workloads, before: set[str]) -> bool:
    new_sets = {rs["metadata"]["name"] for rs in w.replicasets()} - before
    try:
        doc = json.loads(p.state_file(stack).read_text())
    except (OSError, ValueError):
        return False
    ops = (doc.get("checkpoint", {}).get("latest") or {}).get("pending_operations") or []
    return bool(new_sets) and any(op.get("type") == "updating"
                                  and op["resource"]["urn"].endswith(f"{PROXY_NAME}-deployment") for op in ops)


def check_rotation_done(w: Workloads, stack: str, before: set[str]) -> None:
    dep = w.deployment(PROXY_NAME)
    wrong = rollout_finished(dep, w.replicasets())
    current, _ = rollout_sets(dep, w.replicasets())
    if wrong or current["metadata"]["name"] in before:
        raise EngineError(f"{stack}: the rotation did not roll out: {wrong or 'no new ReplicaSet'}")
    log(f"{stack}: rollout to ReplicaSet {current['metadata']['name']} finished")
