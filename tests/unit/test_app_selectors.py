"""The preflight's selector checks (preflight/app_selectors.py) over plain cluster objects: the
sidecar policies' labels must cover every pod behind the app's Service and select a
sidecar-injected pod; the gateway must run as the identity the sidecars admit."""

from __future__ import annotations

from typing import Any

import pytest

from preflight.app_selectors import gateway_identity_problems, workload_label_problems
from preflight.checks import has_sidecar
from tests.unit.stacks import load_stack

CHART = {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": "grafana"}


def pod(name: str, labels: dict[str, str], sidecar: bool = True, native: bool = False,
        phase: str = "Running", sa: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app"}], "serviceAccountName": sa}
    if sidecar and native:
        spec["initContainers"] = [{"name": "istio-proxy", "restartPolicy": "Always"}]
    elif sidecar:
        spec["containers"].append({"name": "istio-proxy"})
    return {"metadata": {"name": name, "labels": labels}, "spec": spec, "status": {"phase": phase}}


def service(selector: dict[str, str] | None) -> dict[str, Any]:
    return {"metadata": {"name": "grafana"}, "spec": {"selector": selector} if selector else {}}


def grafana(**overrides: Any):
    cfg = load_stack("prod")
    app = cfg.apps[0]
    return app.model_copy(update=overrides) if overrides else app


def test_labels_that_cover_every_pod_behind_the_service_with_sidecars_pass():
    app = grafana()
    assert app.selector_labels == CHART
    pods = [pod("grafana-1", {**CHART, "pod-template-hash": "x"}), pod("grafana-2", CHART, native=True),
            pod("other", {"app": "other"}, sidecar=False)]
    assert workload_label_problems(0, app, service(CHART), pods) == []


def test_the_guess_of_old_selects_nothing_and_is_reported():
    """The chart's pods carry app.kubernetes.io/name; the old default {app: grafana} missed them."""
    app = grafana(workload_labels={"app": "grafana"})
    (p,) = workload_label_problems(0, app, service(CHART), [pod("grafana-1", CHART)])
    assert p.startswith("1 of 1 pods behind Service monitoring/grafana (e.g. grafana-1) "
                        "do not carry authproxy:apps[0].workloadLabels {'app': 'grafana'}")
    assert "they select no pod at all" in p
    assert "the Service's selector is {'app.kubernetes.io/name': 'grafana'" in p


def test_labels_that_select_only_pods_without_a_sidecar_say_so():
    app = grafana(workload_labels={"app": "grafana"})
    pods = [pod("grafana-1", CHART), pod("job-1", {"app": "grafana"}, sidecar=False)]
    (p,) = workload_label_problems(0, app, service(CHART), pods)
    assert "they select 1 pods, none of them sidecar-injected" in p


def test_a_pod_behind_the_service_with_other_labels_is_reported():
    app = grafana()
    pods = [pod("grafana-1", CHART), pod("grafana-canary", {"app.kubernetes.io/name": "grafana"})]
    sel = {"app.kubernetes.io/name": "grafana"}
    (p,) = workload_label_problems(0, app, service(sel), pods)
    assert "1 of 2 pods behind Service monitoring/grafana (e.g. grafana-canary)" in p
    assert "they select 1 pods." in p


@pytest.mark.parametrize("phase", ["Running", "Pending"])
def test_pods_without_a_sidecar_that_the_labels_cover_are_app_sidecars_to_report(phase):
    """Labels covering every pod behind the Service: a missing sidecar is the app-sidecar check's
    line (one line per problem)."""
    assert workload_label_problems(0, grafana(), service(CHART),
                                   [pod("g", CHART, sidecar=False, phase=phase)]) == []


def test_finished_pods_do_not_count():
    done = pod("old", CHART, phase="Succeeded")
    app = grafana(workload_labels={"app": "grafana"})
    assert workload_label_problems(0, app, service(CHART), [done]) == []  # no pods: app-sidecar's


def test_what_app_sidecar_reports_is_not_this_checks_business():
    assert workload_label_problems(0, grafana(authorize_at="gateway"), service(CHART), []) == []
    assert workload_label_problems(0, grafana(), None, []) == []  # app-service
    assert workload_label_problems(0, grafana(), service(None), [pod("g", CHART)]) == []


def test_has_sidecar():
    assert has_sidecar(pod("a", {})) and has_sidecar(pod("a", {}, native=True))
    assert not has_sidecar(pod("a", {}, sidecar=False))
    assert not has_sidecar({"spec": {"initContainers": [{"name": "istio-proxy"}]}})  # istio-init-like


def test_the_gateway_must_run_as_the_identity_the_sidecars_admit():
    cfg = load_stack("prod")
    ok = [pod("gw-1", {"istio": "ingressgateway"}, sidecar=False, sa="istio-ingressgateway")]
    assert gateway_identity_problems(cfg, ok) == []
    other = [pod("gw-1", {"istio": "ingressgateway"}, sidecar=False, sa="edge-gateway")]
    (p,) = gateway_identity_problems(cfg, other)
    assert "run as service account(s) ['edge-gateway'], not 'istio-ingressgateway'" in p
    assert "authproxy:istio.gateway.serviceAccount to 'edge-gateway'" in p
    assert gateway_identity_problems(cfg, []) == []
