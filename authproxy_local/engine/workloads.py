"""What `make engine` asserts about workloads on the API server now that controllers act: every
Deployment and StatefulSet rolled out when `pulumi up` returns, a rotation's new ReplicaSet ready
and the old one at zero, the HPA's count left alone by the stack, a drain-style eviction let
through once and refused for the last pod, nothing running after destroy.

The readings of one object are pure functions on the object as the API server returns it (a
dict), each returning what is wrong (a sentence) or None; the checks read the cluster through
lightkube.

Imports: :mod:`authproxy_local.cluster`, :mod:`.checks`, ``lightkube``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment, ReplicaSet, StatefulSet
from lightkube.resources.core_v1 import Event, Namespace, Pod
from lightkube.resources.policy_v1 import PodDisruptionBudget

from authproxy_local.cluster.apiserver import Cluster
from authproxy_local.cluster.controllers import ControlPlane

from .checks import EngineError, log

REVISION = "deployment.kubernetes.io/revision"
PDB_REFUSAL = "Cannot evict pod as it would violate the pod's disruption budget"
"""What the API server's eviction endpoint answers (HTTP 429) when the budget allows no eviction."""


def _n(value: Any) -> int:
    return int(value or 0)


def _name(obj: dict[str, Any]) -> str:
    return f"{obj['kind']} {obj['metadata'].get('namespace')}/{obj['metadata']['name']}"


def not_rolled_out(obj: dict[str, Any]) -> str | None:
    """None when a Deployment or StatefulSet has observed its current generation and every
    desired replica is updated and ready, and no pod of an older revision is left (what `kubectl
    rollout status` waits for)."""
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    want = _n(spec.get("replicas", 1))
    if _n(st.get("observedGeneration")) < _n(obj["metadata"].get("generation")):
        return f"{_name(obj)}: generation {obj['metadata'].get('generation')} not observed yet"
    if obj["kind"] == "StatefulSet" and st.get("currentRevision") != st.get("updateRevision"):
        return f"{_name(obj)}: revision {st.get('currentRevision')} is not yet {st.get('updateRevision')}"
    got = (_n(st.get("updatedReplicas")), _n(st.get("readyReplicas")), _n(st.get("replicas")))
    if got != (want, want, want):
        return f"{_name(obj)}: want {want} replicas updated/ready/total, has {got}"
    return None


def rollout_sets(dep: dict[str, Any], replicasets: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A Deployment's current ReplicaSet (its highest revision) and its older ones."""
    uid = dep["metadata"]["uid"]
    mine = [rs for rs in replicasets
            if any(o.get("uid") == uid for o in rs["metadata"].get("ownerReferences") or [])]
    if not mine:
        raise EngineError(f"{_name(dep)} owns no ReplicaSet")
    mine.sort(key=lambda rs: _n((rs["metadata"].get("annotations") or {}).get(REVISION)))
    return mine[-1], mine[:-1]


def rollout_finished(dep: dict[str, Any], replicasets: list[dict[str, Any]]) -> str | None:
    """None when the Deployment is rolled out, its current ReplicaSet has every replica ready and
    every older ReplicaSet is scaled to zero."""
    wrong = not_rolled_out(dep)
    if wrong:
        return wrong
    current, old = rollout_sets(dep, replicasets)
    want = _n(dep["spec"].get("replicas", 1))
    if _n((current.get("status") or {}).get("readyReplicas")) != want:
        return f"{_name(dep)}: ReplicaSet {current['metadata']['name']} has not {want} ready replicas"
    left = [rs["metadata"]["name"] for rs in old
            if _n(rs["spec"].get("replicas")) or _n((rs.get("status") or {}).get("replicas"))]
    if left:
        return f"{_name(dep)}: older ReplicaSets {left} still have pods"
    return None


def pod_not_running(pod: dict[str, Any]) -> str | None:
    st = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
    if st.get("phase") != "Running" or not ready or not pod["spec"].get("nodeName"):
        return f"pod {pod['metadata']['name']}: {st.get('phase')}, ready={ready}, node={pod['spec'].get('nodeName')}"
    return None


@dataclass
class Workloads:
    """The workloads of one namespace on the local cluster."""

    cluster: Cluster
    namespace: str

    def _list(self, res: Any, **kw: Any) -> list[dict[str, Any]]:
        found = self.cluster.client.list(res, namespace=self.namespace, **kw)
        return [{**o.to_dict(), "kind": res.__name__} for o in found]

    def deployments(self) -> list[dict[str, Any]]:
        return self._list(Deployment)

    def statefulsets(self) -> list[dict[str, Any]]:
        return self._list(StatefulSet)

    def replicasets(self) -> list[dict[str, Any]]:
        return self._list(ReplicaSet)

    def pods(self, **kw: Any) -> list[dict[str, Any]]:
        return [p for p in self._list(Pod, **kw) if not p["metadata"].get("deletionTimestamp")]

    def deployment(self, name: str) -> dict[str, Any]:
        return next(d for d in self.deployments() if d["metadata"]["name"] == name)

    def problems(self) -> list[str]:
        """What is not rolled out or not running in the namespace, now."""
        rss = self.replicasets()
        found = [rollout_finished(d, rss) for d in self.deployments()]
        found += [not_rolled_out(s) for s in self.statefulsets()]
        found += [pod_not_running(p) for p in self.pods()]
        return [f for f in found if f]

    def assert_rolled_out(self, stack: str, when: str) -> int:
        """Every Deployment and StatefulSet of the namespace is rolled out and every pod runs,
        read right when `pulumi up` returned (so `up` waited for it); returns how many workloads."""
        wrong = self.problems()
        if wrong:
            raise EngineError(f"{stack}: {when}: `pulumi up` returned before the rollout finished: {wrong}")
        n = len(self.deployments()) + len(self.statefulsets())
        if not n:
            raise EngineError(f"{stack}: {when}: no Deployment or StatefulSet in {self.namespace}")
        return n

    def wait(self, what: str, check: Callable[[], str | None], timeout: float = 120) -> float:
        t0 = time.monotonic()
        while True:
            wrong = check()
            if wrong is None:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise EngineError(f"{what}: not within {timeout:.0f}s: {wrong}")
            time.sleep(0.5)

    def warning_events(self) -> list[str]:
        return [f"{e.reason}: {e.message}" for e in self.cluster.client.list(Event, namespace=self.namespace)
                if e.type == "Warning"]

    def evict(self, pod: str) -> tuple[int, str]:
        """A drain's request for one pod (the Eviction API): (201, "") or the refusal's code and
        message."""
        body = Pod.Eviction(metadata=ObjectMeta(name=pod, namespace=self.namespace))
        try:
            self.cluster.client.create(body, name=pod, namespace=self.namespace)
        except ApiError as e:
            return e.status.code or 0, e.status.message or ""
        return 201, ""


def check_rotation_rolled(w: Workloads, stack: str, deployment: str, before: set[str]) -> str:
    """After the rotation's `up`: one new ReplicaSet with every replica ready, the older ones at
    zero, and the pod template's secret checksum changed. Returns the new ReplicaSet's name."""
    dep = w.deployment(deployment)
    rss = w.replicasets()
    wrong = rollout_finished(dep, rss)
    if wrong:
        raise EngineError(f"{stack}: rotation: `pulumi up` returned before the rollout finished: {wrong}")
    current, old = rollout_sets(dep, rss)
    if current["metadata"]["name"] in before:
        raise EngineError(f"{stack}: rotation: no new ReplicaSet (still {current['metadata']['name']})")
    sums = {rs["spec"]["template"]["metadata"]["annotations"].get("checksum/secret") for rs in [current, *old]}
    if len(sums) < 2:
        raise EngineError(f"{stack}: rotation: the new ReplicaSet's checksum/secret equals the old one's")
    log(f"{stack}: rotation rolled oauth2-proxy: ReplicaSet {current['metadata']['name']} "
        f"{current['status'].get('readyReplicas')}/{dep['spec']['replicas']} ready, "
        f"{len(old)} older at 0, when `up` returned")
    return str(current["metadata"]["name"])


def check_drain(w: Workloads, plane: ControlPlane, stack: str, name: str, selector: dict[str, str]) -> str:
    """A drain-style eviction with every node cordoned (nowhere for a replacement to go): the
    PodDisruptionBudget ``name`` lets one pod of Deployment ``name`` go and refuses the next;
    uncordoned, the Deployment is back at full strength."""

    def budget() -> str | None:
        pdb = w.cluster.client.get(PodDisruptionBudget, name, namespace=w.namespace).to_dict()
        st = pdb.get("status") or {}
        seen = _n(st.get("observedGeneration")) >= _n(pdb["metadata"].get("generation"))
        if not seen or _n(st.get("disruptionsAllowed")) < 1:
            return f"PodDisruptionBudget {name}: {st}"
        return None

    w.wait(f"{stack}: the PodDisruptionBudget allows an eviction", budget)
    pods = sorted(p["metadata"]["name"] for p in w.pods(labels=selector))
    if len(pods) < 2:
        raise EngineError(f"{stack}: the drain check needs two oauth2-proxy pods, has {pods}")
    plane.cordon(True)
    try:
        first = w.evict(pods[0])
        second = w.evict(pods[1])
    finally:
        plane.cordon(False)
    if first[0] != 201:
        raise EngineError(f"{stack}: the PodDisruptionBudget refused the first eviction: {first}")
    if second[0] != 429 or PDB_REFUSAL not in second[1]:
        raise EngineError(f"{stack}: a second eviction with no replacement ready was not refused by the "
                          f"PodDisruptionBudget: {second}")
    t = w.wait(f"{stack}: {name} back at full strength after the drain",
               lambda: rollout_finished(w.deployment(name), w.replicasets()))
    line = (f"{stack}: drain with every node cordoned: evicting {pods[0]} -> 201, then {pods[1]} -> "
            f"{second[0]} \"{PDB_REFUSAL}\"; uncordoned, back to full strength in {t:.0f}s")
    log(line)
    return line


def check_nothing_runs(cluster: Cluster, stack: str, namespaces: list[str]) -> None:
    """After destroy: the stack's namespaces are gone (the namespace controller emptied and
    removed them) and no pod of theirs is left."""
    left = []
    for ns in namespaces:
        left += [f"pod {ns}/{p.to_dict()['metadata']['name']}" for p in cluster.client.list(Pod, namespace=ns)]
        try:
            cluster.client.get(Namespace, ns)
            left.append(f"namespace {ns}")
        except ApiError as e:
            if e.status.code != 404:
                raise
    if left:
        raise EngineError(f"{stack}: left after destroy: {left}")
