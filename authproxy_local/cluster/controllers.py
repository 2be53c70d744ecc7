"""A control plane that acts: kube-controller-manager, kube-scheduler and kwok's simulated nodes
next to the local kube-apiserver, so `pulumi up` waits for rollouts as on a real cluster.

    plane = ControlPlane(cluster).start()   # controllers, scheduler, 3 nodes Ready, a default StorageClass
    with plane.kubelets_paused(): ...       # the nodes' kubelets stall: a rollout stays in progress
    plane.cordon(True)                      # no node takes new pods (a drain of every node)
    with plane.withheld(): ...              # nodes cordoned, no default StorageClass (preflight)
    plane.stop()

The real controllers create ReplicaSets and pods, roll Deployments and StatefulSets, keep
EndpointSlices, compute PodDisruptionBudget status, scale through HPAs, provision volumes, empty
and delete namespaces and collect garbage; the real scheduler binds pods to nodes. kwok
(sigs.k8s.io/kwok) plays the nodes' kubelets with its own stage files: a node becomes Ready and
keeps its Lease, a scheduled pod runs and becomes Ready with a pod IP, a deleted pod goes. One
stage of ours (``kwok-stages/``) is the fault a real node produces for an image it cannot pull:
every image of :data:`UNPULLABLE_REGISTRY`. Volumes come from kube-controller-manager's host-path
provisioner (its testing provisioner: directories under /tmp/hostpath_pv, deleted with their
claims) through a default StorageClass, as a cluster's default class provides them.

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.install`, :mod:`.apiserver`,
:mod:`preflight.checks` (what a schedulable node is), ``lightkube``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import Node, PersistentVolume
from lightkube.resources.storage_v1 import StorageClass

from authproxy_local import install
from authproxy_local.core.processes import Process, free_port, wait_for
from preflight.checks import schedulable

from .apiserver import Cluster

STAGES_DIR = Path(__file__).with_name("kwok-stages")
UNPULLABLE_REGISTRY = "registry.invalid"
"""Images from this host never start on the simulated nodes (the reserved `.invalid` TLD, RFC
2606, never resolves): the pod stays Pending and unready, each container waits in
ImagePullBackOff, and the node reports the kubelet's Warning event."""
ZONES = ("zone-a", "zone-b", "zone-c")
"""One node per zone: the prod stack's three Redis servers need three nodes (hard anti-affinity),
and oauth2-proxy spreads over zones and nodes."""
HOSTPATH_ROOT = Path("/tmp/hostpath_pv")
"""Where kube-controller-manager's host-path provisioner makes volumes (fixed in its code)."""
POD_CIDR = "10.244.0.0/16"
NODE_LEASE_SECONDS = 40
"""kwok renews each node's Lease every quarter of this. Without Leases kwok reports node status
about once a minute, kube-controller-manager's node lifecycle controller (50 s grace) marks the
nodes NotReady in between and their pods unready, and no pod of theirs becomes Ready again
(seen while trying this out: a Redis pod that never got Ready)."""
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
DEFAULT_STORAGE_CLASS: dict[str, Any] = {
    "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
    "metadata": {"name": "standard", "annotations": {DEFAULT_CLASS: "true"}},
    "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
}


def controller_manager_args(cluster: Cluster) -> list[str]:
    """Every controller; the admin kubeconfig as one identity (no per-controller service accounts
    to bootstrap); the service-account key and CA for the token controller; one instance, so no
    leader election; no serving port (nothing here reads it, and fixed ports would collide between
    runs on one machine); the host-path volume provisioner."""
    p = cluster.pki
    return [
        f"--kubeconfig={cluster.kubeconfig}", "--leader-elect=false", "--controllers=*",
        "--use-service-account-credentials=false",
        f"--service-account-private-key-file={p['sa_key']}", f"--root-ca-file={p['ca']}",
        "--secure-port=0", "--enable-hostpath-provisioner=true", "--cluster-name=authproxy-local",
    ]


def scheduler_args(cluster: Cluster) -> list[str]:
    return [f"--kubeconfig={cluster.kubeconfig}", "--leader-elect=false", "--secure-port=0"]


def kwok_args(cluster: Cluster, stages: list[Path], server_port: int) -> list[str]:
    """kwok plays every node (ours are the only ones), with the stage files given."""
    return [
        f"--kubeconfig={cluster.kubeconfig}", "--manage-all-nodes=true", f"--cidr={POD_CIDR}",
        f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
        f"--server-address=127.0.0.1:{server_port}", *(f"--config={s}" for s in stages),
    ]


def node_object(name: str, zone: str) -> dict[str, Any]:
    """A node for kwok to play: room for every stack's pods, labelled as a cloud provider labels
    its nodes."""
    room = {"cpu": "16", "memory": "64Gi", "pods": "110"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": zone,
                                "type": "kwok"}},
        "status": {"allocatable": room, "capacity": room},
    }


def node_ready(node: dict[str, Any]) -> bool:
    conds = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


@dataclass
class ControlPlane:
    cluster: Cluster
    procs: list[Process] = field(default_factory=list)
    kwok: Process | None = None

    @property
    def nodes(self) -> list[str]:
        return [f"kwok-node-{i}" for i in range(len(ZONES))]

    def start(self) -> ControlPlane:
        c = self.cluster
        env = {"PATH": "/usr/bin:/bin", "HOME": str(c.work)}  # kwok reads ~/.kwok/kwok.yaml otherwise
        tools = {name: install.ensure(name) for name in ("kube-controller-manager", "kube-scheduler", "kwok")}
        t0 = time.monotonic()
        self.procs.append(Process("kube-controller-manager", [str(tools["kube-controller-manager"]),
                                  *controller_manager_args(c)], env, c.work / "kube-controller-manager.log").start())
        self.procs.append(Process("kube-scheduler", [str(tools["kube-scheduler"]), *scheduler_args(c)],
                                  env, c.work / "kube-scheduler.log").start())
        for name, zone in zip(self.nodes, ZONES, strict=True):
            c.client.create(from_dict(node_object(name, zone)))
        stages = [*install.kwok_stage_files(tools["kwok"]), *sorted(STAGES_DIR.glob("*.yaml"))]
        self.kwok = Process("kwok", [str(tools["kwok"]), *kwok_args(c, stages, free_port())], env,
                            c.work / "kwok.log").start()
        self.procs.append(self.kwok)
        wait_for("kwok's nodes Ready", self.nodes_ready, 120, self.kwok, interval=0.5)
        c.client.create(from_dict(DEFAULT_STORAGE_CLASS))
        print(f"[cluster] kube-controller-manager, kube-scheduler and {len(self.nodes)} kwok nodes ready in "
              f"{time.monotonic() - t0:.1f}s", flush=True)
        return self

    def nodes_ready(self) -> bool:
        nodes = [n.to_dict() for n in self.cluster.client.list(Node)]
        return len(nodes) == len(self.nodes) and all(node_ready(n) for n in nodes)

    @contextlib.contextmanager
    def kubelets_paused(self) -> Iterator[None]:
        """The simulated kubelets stall (SIGSTOP to kwok) and resume: new pods stay Pending, so a
        rollout started meanwhile is in progress. Keep it short: after 50 s without Lease renewals
        the node lifecycle controller would mark the nodes NotReady."""
        assert self.kwok is not None and self.kwok.pid is not None
        os.kill(self.kwok.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.kwok.pid, signal.SIGCONT)

    def cordon(self, unschedulable: bool) -> None:
        """Mark every node unschedulable (or schedulable again), as `kubectl cordon` does.
        Uncordoned, it returns once the node lifecycle controller has lifted its
        `node.kubernetes.io/unschedulable` taint too (what the scheduler and the preflight read)."""
        for n in self.nodes:
            self.cluster.client.patch(Node, n, {"spec": {"unschedulable": unschedulable}})
        if not unschedulable:
            wait_for("the nodes schedulable again", self.nodes_schedulable, 60, interval=0.2)

    def nodes_schedulable(self) -> bool:
        return all(schedulable(n.to_dict()) for n in self.cluster.client.list(Node))

    @contextlib.contextmanager
    def withheld(self) -> Iterator[None]:
        """The cluster as before its nodes joined and its default StorageClass was marked: every
        node cordoned, the class not default (what the preflight's redis-nodes and storage-class
        checks must refuse); both restored afterwards."""
        name = DEFAULT_STORAGE_CLASS["metadata"]["name"]
        self.cordon(True)
        self.cluster.client.patch(StorageClass, name, {"metadata": {"annotations": {DEFAULT_CLASS: None}}})
        try:
            yield
        finally:
            self.cluster.client.patch(StorageClass, name, {"metadata": {"annotations": {DEFAULT_CLASS: "true"}}})
            self.cordon(False)

    def stop(self) -> None:
        """Stop the processes; the volumes the provisioner made under /tmp and not yet deleted
        (the run ended with claims) go too."""
        paths = []
        with contextlib.suppress(Exception):
            for pv in self.cluster.client.list(PersistentVolume):
                host = pv.spec.hostPath.path if pv.spec and pv.spec.hostPath else ""
                if host.startswith(f"{HOSTPATH_ROOT}/"):
                    paths.append(Path(host))
        for proc in reversed(self.procs):
            proc.stop(timeout=10)
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)
