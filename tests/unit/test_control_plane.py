"""The control plane `make engine` runs (kube-controller-manager, kube-scheduler, kwok nodes) and the
readings of workloads its assertions rest on: pure functions, on objects shaped as the API server
returns them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from authproxy_local import install
from authproxy_local.cluster import controllers as cp
from authproxy_local.engine import workloads as wl
from authproxy_local.install.versions import GROUPS, KWOK_STAGES
from authproxy_local.render import deep_merge, project_config
from components import config as C
from tests.unit.test_config import ALL_SECRETS


class _Cluster:
    work = Path("/w")
    kubeconfig = Path("/w/kubeconfig")
    pki: ClassVar[dict[str, Path]] = {"sa_key": Path("/w/pki/sa.key"), "ca": Path("/w/pki/ca.pem")}


def test_control_plane_tools_are_pinned_built_from_the_apiservers_module_and_in_the_engine_group():
    for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
        assert name in install.COMPONENTS and name in GROUPS["engine"]
        assert name not in GROUPS["harness"]  # the harness keeps its API server alone (no awaits)
    assert install.VERSIONS["kwok"] == "v0.8.0"
    # kwok refuses to start without stages: nodes, heartbeats with leases, pods ready/complete/deleted
    assert {Path(s).name for s in KWOK_STAGES} == {
        "node-initialize.yaml", "node-heartbeat-with-lease.yaml", "pod-ready.yaml", "pod-complete.yaml",
        "pod-delete.yaml"}


def test_controller_manager_runs_every_controller_without_fixed_ports_and_provisions_volumes():
    args = cp.controller_manager_args(_Cluster())  # type: ignore[arg-type]
    assert "--controllers=*" in args and "--leader-elect=false" in args
    assert "--secure-port=0" in args  # fixed default ports would collide between runs on one machine
    assert "--enable-hostpath-provisioner=true" in args
    assert "--service-account-private-key-file=/w/pki/sa.key" in args and "--root-ca-file=/w/pki/ca.pem" in args
    assert "--secure-port=0" in cp.scheduler_args(_Cluster())  # type: ignore[arg-type]


def test_kwok_keeps_node_leases_so_the_node_lifecycle_controller_never_marks_nodes_not_ready():
    args = cp.kwok_args(_Cluster(), [Path("/s/a.yaml"), Path("/s/b.yaml")], 12345)  # type: ignore[arg-type]
    assert "--node-lease-duration-seconds=40" in args  # renewed every 10 s, under the 50 s grace
    assert "--manage-all-nodes=true" in args and "--server-address=127.0.0.1:12345" in args
    assert args[-2:] == ["--config=/s/a.yaml", "--config=/s/b.yaml"]


def test_nodes_span_three_zones_with_room_and_a_default_storage_class():
    nodes = [cp.node_object(f"n{i}", z) for i, z in enumerate(cp.ZONES)]
    assert {n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes} == {"zone-a", "zone-b", "zone-c"}
    assert all(n["status"]["allocatable"]["pods"] == "110" for n in nodes)
    sc = cp.DEFAULT_STORAGE_CLASS
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert sc["provisioner"] == "kubernetes.io/host-path"


def test_the_fault_stage_holds_pods_of_the_unpullable_registry_back_and_outweighs_pod_ready():
    (stage,) = [yaml.safe_load(p.read_text()) for p in sorted(cp.STAGES_DIR.glob("*.yaml"))]
    spec = stage["spec"]
    assert stage["kind"] == "Stage" and spec["resourceRef"] == {"apiGroup": "v1", "kind": "Pod"}
    assert spec["weight"] > 0  # kwok drops zero-weight stages (its pod-ready) when one weighs more
    cel = [e["cel"]["expression"] for e in spec["selector"]["matchExpressions"] if "cel" in e]
    assert cel and f"'{cp.UNPULLABLE_REGISTRY}/'" in cel[0]
    template = spec["next"]["statusTemplate"]
    assert "\nphase: Pending" in template and "reason: ImagePullBackOff" in template
    assert '- type: Ready\n  status: "False"' in template
    assert "Now" not in template  # no timestamps: applying it again changes nothing
    assert spec["next"]["event"]["type"] == "Warning" and "Failed to pull image" in spec["next"]["event"]["message"]


def test_awaited_local_values_leave_skip_await_off_and_the_fault_values_are_keys_the_model_reads():
    ca = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
    awaited = C.local_server_values(keycloak_ca_pem=ca, redis_chart_path="/c.tgz", awaited=True)
    plain = C.local_server_values(keycloak_ca_pem=ca, redis_chart_path="/c.tgz")
    base = project_config("dev")
    assert not C.load(deep_merge(base, awaited), secrets_set=ALL_SECRETS).kubernetes.skip_await
    assert C.load(deep_merge(base, plain), secrets_set=ALL_SECRETS).kubernetes.skip_await
    faulty: dict[str, Any] = {}
    for v in (C.await_timeout_values(30), C.image_values("proxy", "registry.invalid/o/p", "v7.15.3"),
              C.image_values("redis", "registry.invalid/library/redis", "8"), C.replica_values(2, 4)):
        faulty = deep_merge(faulty, v)
    cfg = C.load(deep_merge(deep_merge(project_config("prod"), awaited), faulty), secrets_set=ALL_SECRETS)
    assert cfg.kubernetes.await_timeout == 30
    assert cfg.proxy.image.ref == "registry.invalid/o/p:v7.15.3"
    assert cfg.redis.image.repository.startswith("registry.invalid/")
    assert (cfg.proxy.replicas, cfg.proxy.autoscaling.min_replicas) == (2, 4)
    gw = C.load(deep_merge(deep_merge(project_config("gateway-api"), awaited),
                           C.existing_gateway_values("shared", "web", "websecure")), secrets_set=ALL_SECRETS)
    ga = gw.istio.gateway_api
    assert (gw.istio.gateway.name, ga.create) == ("shared", False)
    assert (ga.http_listener, ga.https_listener) == ("web", "websecure")
    assert C.cookie_secret_rotation_values(cfg, to="x") == {"rotation": {"cookieSecret": "x"}}


# ---- readings of workloads (objects as the API server returns them) ----

def _dep(replicas: int = 2, **status: Any) -> dict[str, Any]:
    st = {"observedGeneration": 3, "updatedReplicas": replicas, "readyReplicas": replicas,
          "availableReplicas": replicas, "replicas": replicas, **status}
    return {"kind": "Deployment", "metadata": {"name": "d", "namespace": "n", "generation": 3, "uid": "u"},
            "spec": {"replicas": replicas}, "status": st}


def _rs(name: str, revision: int, replicas: int, ready: int, owner: str = "u") -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {wl.REVISION: str(revision)},
                         "ownerReferences": [{"uid": owner}]},
            "spec": {"replicas": replicas}, "status": {"replicas": ready, "readyReplicas": ready}}


def test_a_rollout_is_finished_only_with_the_new_replicaset_ready_and_the_old_at_zero():
    assert wl.not_rolled_out(_dep()) is None
    assert "not observed" in (wl.not_rolled_out(_dep(observedGeneration=2)) or "")
    assert "updated/ready/total" in (wl.not_rolled_out(_dep(updatedReplicas=1, replicas=3)) or "")
    sets = [_rs("old", 1, 0, 0), _rs("new", 2, 2, 2), _rs("other", 5, 9, 9, owner="x")]
    assert wl.rollout_sets(_dep(), sets)[0]["metadata"]["name"] == "new"
    assert wl.rollout_finished(_dep(), sets) is None
    assert "still have pods" in (wl.rollout_finished(_dep(), [_rs("old", 1, 1, 1), _rs("new", 2, 2, 2)]) or "")
    assert "ready replicas" in (wl.rollout_finished(_dep(), [_rs("new", 2, 2, 1)]) or "")


def test_a_statefulset_is_rolled_out_only_on_its_update_revision():
    sts: dict[str, Any] = {"kind": "StatefulSet", "metadata": {"name": "s", "namespace": "n", "generation": 1},
           "spec": {"replicas": 3}, "status": {"observedGeneration": 1, "updatedReplicas": 3, "readyReplicas": 3,
                                               "replicas": 3, "currentRevision": "a", "updateRevision": "a"}}
    assert wl.not_rolled_out(sts) is None
    sts["status"]["updateRevision"] = "b"
    assert "is not yet b" in (wl.not_rolled_out(sts) or "")


@pytest.mark.parametrize(("phase", "ready", "node", "ok"), [
    ("Running", "True", "n1", True), ("Pending", "False", "n1", False), ("Running", "False", "n1", False),
    ("Running", "True", None, False)])
def test_a_pod_runs_when_bound_running_and_ready(phase, ready, node, ok):
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": node},
           "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}}
    assert (wl.pod_not_running(pod) is None) is ok
