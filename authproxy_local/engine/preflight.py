"""`make engine`'s proof of the preflight: every stack's `pulumi preview`/`up` against the local API
server, once with what the stack needs absent (the preflight must stop it, naming the checks, with
nothing created) and once with it present (the preflight must pass).

"Present" is what a user's cluster holds when the stack can be deployed safely
(:func:`authproxy_local.cluster.ready.ready_cluster`: istiod with the merged mesh config, gateway
pods, the apps' Services and sidecar-injected pods, the TLS Secret or a Ready issuer, a default
StorageClass, nodes), created through the API server like any client would; "absent" is the
cluster without them. Checks that an earlier failure hides in the absent run (the mesh config needs
an istiod, the sidecar check a Service) are each broken alone afterwards. The count of checks that
failed and passed is the line ``preflight: <n> checks, each failed once and passed once``.

Imports: :mod:`authproxy_local.cluster`, :mod:`preflight` (the check names), :mod:`.checks`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from lightkube import ApiError
from lightkube.codecs import from_dict
from lightkube.types import PatchType

from authproxy_local.cluster.apiserver import Cluster
from components.authz import PATH_NORMALIZATION
from components.config import StackConfig
from preflight.core import CHECKS

from .checks import EngineError, log

FAILED_LINE = re.compile(r"^\s*- ([a-z][a-z0-9-]*)(?: \([^)]*\))?: ", re.M)
HEADER = re.compile(r"preflight: (\d+) problems? in ([^;]+); nothing was created or changed")


def failed_checks(output: str) -> list[str]:
    """The check names a PreflightError lists (one `  - <check> (<subject>): ...` line each)."""
    m = HEADER.search(output)
    if not m:
        return []
    return FAILED_LINE.findall(output[m.end():])


def _key(o: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = o["metadata"]
    return (o["apiVersion"], o["kind"], meta.get("namespace") or "", meta["name"])


@dataclass
class Staging:
    """The objects of :func:`ready_objects` created in the local API server (and removed again)."""

    cluster: Cluster
    made: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)

    def create(self, objects: Iterable[dict[str, Any]]) -> int:
        n = 0
        first = {"Namespace": 0, "ServiceAccount": 1}  # pods need their namespace's account
        for o in sorted(objects, key=lambda o: first.get(o["kind"], 2)):
            if _key(o) in self.made:
                continue
            status = o.get("status")
            if o["metadata"].get("namespace"):
                self.cluster.create_namespaces([o["metadata"]["namespace"]])  # an existing one is kept
            res = from_dict({k: v for k, v in o.items() if k != "status"})
            if self._exists(res, o):
                if o["kind"] == "Namespace":
                    self._relabel(res, o)
                continue  # the cluster has it already (the control plane's StorageClass, a
                # user's Gateway, a controller's ServiceAccount): kept as it is, and not deleted.
                # Looked up first: a create of an existing object is validated before the
                # conflict, so a thin stand-in (ready_cluster's Gateway has listener names only)
                # gets a 422 instead of the 409.
            try:
                self.cluster.client.create(res)
            except ApiError as e:
                if e.status.code != 409:
                    raise EngineError(f"staging {o['kind']} {o['metadata']['name']}: "
                                      f"{e.status.code} {e.status.message}") from e
                if o["kind"] == "Namespace":
                    self._relabel(res, o)
                continue  # made meanwhile by a controller: kept, as above
            if status:  # status is the controllers' to write: a subresource
                meta = o["metadata"]
                self.cluster.client.patch(
                    type(res).Status, meta["name"], {"status": status},
                    **({"namespace": meta["namespace"]} if meta.get("namespace") else {}),
                    patch_type=PatchType.MERGE)
            if o["kind"] == "Node":
                # The TaintNodesByCondition admission plugin taints a new node not-ready; the node
                # lifecycle controller lifts it once the node is Ready (no such controller here).
                self.cluster.client.patch(type(res), o["metadata"]["name"],
                                          {"spec": {"taints": []}}, patch_type=PatchType.MERGE)
            self.made[_key(o)] = o
            n += 1
        return n

    def _relabel(self, res: Any, o: dict[str, Any]) -> None:
        """A Namespace an earlier stack's staging left (Namespaces stay): this stack's cluster has
        it labelled as staged, e.g. ``demo`` enrolled in ambient instead of sidecar injection."""
        name = o["metadata"]["name"]
        have = dict(self.cluster.client.get(type(res), name).metadata.labels or {})
        want = dict(o["metadata"].get("labels") or {})
        drop = {k: None for k in have if k not in want and not k.startswith("kubernetes.io/")}
        if drop or any(have.get(k) != v for k, v in want.items()):
            self.cluster.client.patch(type(res), name, {"metadata": {"labels": {**drop, **want}}},
                                      patch_type=PatchType.MERGE)

    def _exists(self, res: Any, o: dict[str, Any]) -> bool:
        meta = o["metadata"]
        try:
            self.cluster.client.get(type(res), meta["name"],
                                    **({"namespace": meta["namespace"]} if meta.get("namespace") else {}))
        except ApiError as e:
            if e.status.code != 404:
                raise
            return False
        return True

    def delete(self, keys: Iterable[tuple[str, str, str, str]] | None = None) -> None:
        """Remove staged objects (Namespaces and ServiceAccounts stay: a deleted Namespace would
        stay Terminating without a namespace controller)."""
        for k in list(keys if keys is not None else self.made):
            o = self.made.pop(k)
            if o["kind"] in ("Namespace", "ServiceAccount"):
                continue
            res = type(from_dict(o))
            try:
                self.cluster.client.delete(res, o["metadata"]["name"],  # type: ignore[type-var]
                                           namespace=o["metadata"].get("namespace"),
                                           grace_period=0)
            except ApiError as e:
                if e.status.code != 404:
                    raise

    def replace(self, o: dict[str, Any]) -> None:
        """``o`` made, instead of the staged object of the same name if there is one."""
        if _key(o) in self.made:
            self.delete([_key(o)])
        self.create([o])

    def break_one(self, broken: dict[str, Any], ready: list[dict[str, Any]]) -> Callable[[], None]:
        """``broken`` made (instead of the ready object of its name, or beside the others);
        returns what puts the ready cluster back."""
        self.replace(broken)

        def restore() -> None:
            self.delete([_key(broken)])
            self.create([o for o in ready if _key(o) == _key(broken)])
        return restore


@dataclass
class PreflightProof:
    """What every stack's preflight runs showed: which checks failed once, which passed once."""

    failed: dict[str, list[str]] = field(default_factory=dict)
    """check -> the stacks where it failed"""
    passed: dict[str, list[str]] = field(default_factory=dict)

    def saw_failures(self, stack: str, output: str | None, must: Iterable[str] = ()) -> list[str]:
        if output is None:
            raise EngineError(f"{stack}: the preflight passed against a cluster without what the "
                              "stack needs")
        names = failed_checks(output)
        if not names:
            raise EngineError(f"{stack}: failed, but not in the preflight:\n{output[-1500:]}")
        missing = [m for m in must if m not in names]
        if missing:
            raise EngineError(f"{stack}: the preflight did not report {missing} (it said {names})")
        for n in names:
            self.failed.setdefault(n, []).append(stack)
        log(f"{stack}: preflight refuses, {len(names)} lines: {', '.join(sorted(set(names)))}")
        return names

    def saw_pass(self, stack: str, cfg: StackConfig) -> None:
        for name in selected_names(cfg):
            self.passed.setdefault(name, []).append(stack)

    def summary(self) -> str:
        both = [c for c in CHECKS if c in self.failed and c in self.passed]
        missing = sorted(set(CHECKS) - set(both))
        if missing:
            raise EngineError(f"preflight checks not shown both ways: {missing} "
                              f"(failed: {sorted(self.failed)}, passed: {sorted(self.passed)})")
        return f"preflight: {len(both)} checks, each failed once and passed once"


def selected_names(cfg: StackConfig) -> list[str]:
    return [c for c in CHECKS if c not in set(cfg.preflight.skip)]


def _one(objects: list[dict[str, Any]], kind: str, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and pred(o)]
    if not found:
        raise EngineError(f"no staged {kind} to break")
    return copy.deepcopy(found[0])


def _no_provider(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """istiod's mesh config as it was before the merge: no extension provider."""
    cm = _one(objects, "ConfigMap", lambda o: o["metadata"]["name"].startswith("istio"))
    cm["data"]["mesh"] = yaml.safe_dump({"pathNormalization": {"normalization": PATH_NORMALIZATION}})
    return cm


def _no_sidecar(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """An app pod created before its namespace was labelled for injection, beside an injected one.
    (Another name: kwok deletes a terminating pod by name, so a pod deleted and made again under
    the same name can be taken by kwok's late delete.)"""
    pod = _one(objects, "Pod", lambda o: "-app-" in o["metadata"]["name"])
    pod["metadata"]["name"] += "-unlabelled"
    pod["spec"]["containers"] = [c for c in pod["spec"]["containers"] if c["name"] != "istio-proxy"]
    return pod


def _other_labels(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """An app pod behind the Service without the labels the sidecar policies select (a canary
    deployed from another chart, or workloadLabels copied from the wrong app)."""
    pod = _one(objects, "Pod", lambda o: "-app-" in o["metadata"]["name"])
    pod["metadata"]["labels"] = {"app": pod["metadata"]["labels"]["app"]}
    return pod


def _gateway_as_default(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """Gateway pods running as another service account than istio.gateway.serviceAccount."""
    pod = _one(objects, "Pod", lambda o: bool(o["spec"].get("serviceAccountName")))
    pod["spec"]["serviceAccountName"] = "default"
    return pod


BREAKS: dict[str, tuple[str, Callable[[list[dict[str, Any]]], dict[str, Any]]]] = {
    # check -> (the operation that must refuse, the one object changed or added)
    "istio-mesh-config": ("up", _no_provider),  # a preview only warns: it shows what to merge
    "app-sidecar": ("preview", _no_sidecar),
    "app-workload-labels": ("preview", _other_labels),
    "gateway-identity": ("preview", _gateway_as_default),
}
"""The checks an earlier failure hides in the absent run (no istiod: no mesh config to read; no
Service: no pods to check; no gateway pods: no identity to compare), each broken alone on the
otherwise ready cluster."""
