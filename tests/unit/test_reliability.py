"""What keeps sessions working while pods come and go (docs/reliability.md): oauth2-proxy's drain
on shutdown (preStop sleep, grace period, minReadySeconds), the gateway's retry of a check that
did not reach a replica and its ejection of unreachable replicas (both ext_authz modes), the
sentinels' failover speed; the config keys and their bad values. Under Pulumi's mocks and as
pure spec builders; the live effect is measured by `make soak` and asserted in `make e2e`."""

from __future__ import annotations

from typing import Any

import pytest

from authproxy_local.render.mockrun import Run, deep_merge, project_config, run_program
from components import config as C
from components.authz import EXT_AUTHZ_FILTER, EXT_AUTHZ_TYPE
from components.gateway_traffic import (
    MAX_EJECTION_PERCENT,
    MIN_HEALTH_PERCENT,
    PREVIOUS_HOSTS,
    RETRY_ON,
    destination_rule_spec,
    ext_authz_retry_patch,
    ext_authz_retry_policy,
)
from components.oauth2_proxy import container_lifecycle
from components.session_store import sentinel_config
from components.stack import session_store_args
from tests.unit.stacks import load_stack
from tests.unit.test_authz import plain

EF = "kubernetes:networking.istio.io/v1alpha3:EnvoyFilter"
DR = "kubernetes:networking.istio.io/v1:DestinationRule"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
RELEASE = "kubernetes:helm.sh/v3:Release"
SECRETS = {"keycloakAdminPassword", "keycloakAdminClientSecret", "externalRedisPassword"}


def of(run: Run, type_: str) -> list[dict[str, Any]]:
    return [plain(r.inputs) for r in run.of_type(type_)]


def proxy_rules(run: Run) -> list[dict[str, Any]]:
    """The DestinationRules for oauth2-proxy's Service (the apps have their own, for mTLS)."""
    return [d for d in of(run, DR) if d["spec"]["host"].startswith("oauth2-proxy.")]


def proxy_deployment(run: Run) -> dict[str, Any]:
    (d,) = [d for d in of(run, DEPLOYMENT) if d["metadata"]["name"] == "oauth2-proxy"]
    return d


def problems(stack: str, overrides: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(C.ConfigError) as e:
        C.load(deep_merge(project_config(stack), overrides), SECRETS)
    return e.value.problems


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    return {
        "dev": run_program("dev"),
        "prod": run_program("prod"),
        "prod-envoy-filter": run_program("prod", overrides={"istio": {"extAuthzMode": "envoy-filter"}}),
        "levers-off": run_program("prod", overrides={"istio": {
            "extAuthzRetries": 0, "outlierDetection": {"consecutiveErrors": 0}}, "proxy": {
            "lifecycle": {"drainDelay": 0, "terminationGracePeriod": "10s", "minReady": 0}}}),
        "levers-off-envoy-filter": run_program("prod", overrides={"istio": {
            "extAuthzMode": "envoy-filter", "extAuthzRetries": 0}}),
    }


# ---------------------------------------------------------------- oauth2-proxy's drain


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_terminating_replica_keeps_serving_for_the_drain_delay(stack, runs):
    d = proxy_deployment(runs[stack])
    lc = load_stack(stack).proxy.lifecycle
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": lc.drain_delay}}}
    assert lc.drain_delay == 10
    # the drain plus time for requests in flight, within the kubelet's grace period
    assert pod["terminationGracePeriodSeconds"] == lc.termination_grace_period >= lc.drain_delay + 10
    # a new pod is available (and an old one may go) only after minReady
    assert d["spec"]["minReadySeconds"] == lc.min_ready == 5
    # never below capacity during a rollout
    assert d["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_levers_follow_their_config_keys_and_switch_off(runs):
    d = proxy_deployment(runs["levers-off"])
    pod = d["spec"]["template"]["spec"]
    assert "lifecycle" not in pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] == 10
    assert d["spec"]["minReadySeconds"] == 0
    assert container_lifecycle({"drain_seconds": 0, "grace_seconds": 30, "min_ready_seconds": 0}) is None
    assert container_lifecycle({"drain_seconds": 7, "grace_seconds": 30, "min_ready_seconds": 0}) == {
        "preStop": {"sleep": {"seconds": 7}}}
    assert proxy_rules(runs["levers-off"]) == []
    assert [e for e in of(runs["levers-off"], EF) if "retry" in e["metadata"]["name"]] == []
    typed = _envoy_filter_ext_authz(runs["levers-off-envoy-filter"])
    assert "retry_policy" not in typed["http_service"]


@pytest.mark.parametrize(("overrides", "key", "says"), [
    ({"proxy": {"lifecycle": {"drainDelay": "25s"}}}, "authproxy:proxy.lifecycle.terminationGracePeriod",
     "at least drainDelay + 10s"),
    ({"proxy": {"lifecycle": {"drainDelay": "10s", "terminationGracePeriod": "15s"}}},
     "authproxy:proxy.lifecycle.terminationGracePeriod", "kill oauth2-proxy mid-request"),
    ({"proxy": {"lifecycle": {"drainDelay": "3m"}}}, "authproxy:proxy.lifecycle.drainDelay", "at most 120s"),
    ({"proxy": {"lifecycle": {"terminationGracePeriod": "0s"}}},
     "authproxy:proxy.lifecycle.terminationGracePeriod", "between 1s and 600s"),
    ({"proxy": {"lifecycle": {"minReady": "soon"}}}, "authproxy:proxy.lifecycle.minReady", "not a duration"),
    ({"istio": {"extAuthzRetries": 9}}, "authproxy:istio.extAuthzRetries", "less than or equal to 5"),
    ({"istio": {"outlierDetection": {"consecutiveErrors": -1}}},
     "authproxy:istio.outlierDetection.consecutiveErrors", "greater than or equal to 0"),
    ({"istio": {"outlierDetection": {"baseEjectionTime": "10m"}}},
     "authproxy:istio.outlierDetection.baseEjectionTime", "between 1s and 300s"),
    ({"redis": {"sentinel": {"downAfter": "0s"}}}, "authproxy:redis.sentinel.downAfter", "between 1s and 60s"),
    ({"redis": {"sentinel": {"downAfter": "2m"}}}, "authproxy:redis.sentinel.downAfter", "between 1s and 60s"),
])
def test_bad_values_name_the_key_and_the_fix(overrides, key, says):
    found = problems("prod", overrides)
    assert any(k == key and says in msg for k, msg in found), found


# ---------------------------------------------------------------- the gateway's side


def test_retry_policy_retries_only_what_oauth2_proxy_cannot_have_answered():
    assert ext_authz_retry_policy(0, 2) is None
    p = ext_authz_retry_policy(2, 2)
    assert p is not None
    assert p["retry_on"] == RETRY_ON == "connect-failure,reset"
    for never in ("5xx", "gateway-error", "retriable-status-codes", "retriable-4xx"):
        assert never not in p["retry_on"]
    assert p["num_retries"] == 2
    assert [h["name"] for h in p["retry_host_predicate"]] == [PREVIOUS_HOSTS]  # another replica
    # a back-off far below the check's timeout (Envoy's default base is 1 s)
    assert p["retry_back_off"]["base_interval"] == "0.025s"
    # Envoy makes max_interval each attempt's timeout: the check's own, so a slow check (a token
    # refresh) is never cut off and repeated (tests/unit/test_check_retry_envoy.py, on Envoy)
    assert p["retry_back_off"]["max_interval"] == "2s"
    assert ext_authz_retry_policy(1, 4)["retry_back_off"]["max_interval"] == "4s"  # type: ignore[index]


def _envoy_filter_ext_authz(run: Run) -> dict[str, Any]:
    (ef,) = [e["spec"] for e in of(run, EF) if e["metadata"]["name"] == "authproxy-ext-authz"]
    (insert,) = [p for p in ef["configPatches"] if p["patch"]["operation"] in ("INSERT_BEFORE", "INSERT_FIRST")
                 and p["patch"]["value"]["name"] == EXT_AUTHZ_FILTER]
    return insert["patch"]["value"]["typed_config"]


def test_both_modes_retry_the_check_on_another_replica(runs):
    cfg = load_stack("prod")
    want = ext_authz_retry_policy(cfg.istio.ext_authz_retries, cfg.istio.ext_authz_timeout)
    # extension-provider: a MERGE into the ext_authz filter istiod makes for the CUSTOM policy
    (ef,) = [e for e in of(runs["prod"], EF) if e["metadata"]["name"] == "authproxy-check-retry"]
    assert ef["metadata"]["namespace"] == cfg.istio.gateway.namespace
    assert ef["spec"]["workloadSelector"] == {"labels": cfg.istio.gateway.selector}
    (patch,) = ef["spec"]["configPatches"]
    assert patch == ext_authz_retry_patch(cfg.istio.ext_authz_retries, cfg.istio.ext_authz_timeout)
    assert patch["applyTo"] == "HTTP_FILTER" and patch["patch"]["operation"] == "MERGE"
    assert patch["match"]["context"] == "GATEWAY"
    assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"] == {"name": EXT_AUTHZ_FILTER}
    typed = patch["patch"]["value"]["typed_config"]
    assert typed == {"@type": EXT_AUTHZ_TYPE, "http_service": {"retry_policy": want}}
    # envoy-filter: in the stack's own ext_authz filter, and no separate EnvoyFilter
    assert _envoy_filter_ext_authz(runs["prod-envoy-filter"])["http_service"]["retry_policy"] == want
    assert [e for e in of(runs["prod-envoy-filter"], EF) if e["metadata"]["name"] == "authproxy-check-retry"] == []


def test_gateway_api_attaches_the_retry_to_its_gateway():
    run = run_program("gateway-api")
    (ef,) = [e for e in of(run, EF) if e["metadata"]["name"] == "authproxy-check-retry"]
    assert "workloadSelector" not in ef["spec"]
    assert ef["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "authproxy"}]


@pytest.mark.parametrize("stack", ["prod", "prod-envoy-filter"])
def test_unreachable_replicas_are_ejected_but_never_for_oauth2_proxys_own_errors(stack, runs):
    cfg = load_stack("prod")
    (dr,) = proxy_rules(runs[stack])
    assert dr["metadata"]["namespace"] == cfg.istio.gateway.namespace
    spec = dr["spec"]
    assert spec["host"] == f"oauth2-proxy.{cfg.namespace}.svc.cluster.local"
    assert spec["exportTo"] == ["."]  # only the gateway's namespace sees it
    od = spec["trafficPolicy"]["outlierDetection"]
    assert od["consecutiveGatewayErrors"] == cfg.istio.outlier_detection.consecutive_errors == 3
    # Istio leaves Envoy's default (5 consecutive 5xx) on unless it is 0: a Redis outage makes
    # every replica answer 500, and would eject healthy replicas
    assert od["consecutive5xxErrors"] == 0
    assert od["baseEjectionTime"] == "15s"
    assert od["maxEjectionPercent"] == MAX_EJECTION_PERCENT == 50
    assert od["minHealthPercent"] == MIN_HEALTH_PERCENT == 50
    assert destination_rule_spec("x", {"consecutive_errors": 0, "base_ejection_seconds": 1}) is None


# ---------------------------------------------------------------- Redis sentinels


def test_sentinels_fail_over_after_down_after():
    for stack, overrides, ms in (("prod", {}, 5000),
                                 ("prod", {"redis": {"sentinel": {"downAfter": "12s"}}}, 12000)):
        cfg = C.load(deep_merge(project_config(stack), overrides), SECRETS)
        conf = sentinel_config(session_store_args(cfg, "pw"))
        assert conf == {"down-after-milliseconds": ms, "failover-timeout": 180000}


def test_the_chart_gets_the_sentinel_settings(runs):
    (rel,) = of(runs["prod"], RELEASE)
    assert rel["values"]["sentinel"]["config"] == {"down-after-milliseconds": 5000,
                                                   "failover-timeout": 180000}
    # writes still need a replica in sync (the chart's own guard against split brain)
    assert rel["values"]["redis"]["config"]["min-replicas-to-write"] == 1


def test_prod_rides_out_a_keycloak_restart_of_three_minutes():
    """oauth2-proxy refreshes a session older than cookieRefresh; when Keycloak cannot answer, the
    session lives on until its token expires (accessTokenLifespan after the last refresh), then
    oauth2-proxy deletes it. The difference is the Keycloak outage active users survive."""
    for cfg in (load_stack("prod"), C.load({"domain": "example.com", "apps": [
            {"name": "a", "host": "a.example.com", "service": {"name": "a", "namespace": "a", "port": 80},
             "workloadLabels": {"app": "a"}}],
            "istio": {"gateway": {"serviceAccount": "istio-ingressgateway"}},
            "keycloak": {"url": "https://sso.example.com"}}, SECRETS)):
        s = cfg.session
        assert s.access_token_lifespan - s.cookie_refresh >= 180


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_replicas_leave_the_service_while_redis_cannot_answer(stack, runs):
    """/ready pings Redis; the probe must take every replica out well within a sentinel failover
    (redis.sentinel.downAfter, 5 s) and let it back one probe after Redis answers."""
    (c,) = proxy_deployment(runs[stack])["spec"]["template"]["spec"]["containers"]
    probe = c["readinessProbe"]
    assert probe["httpGet"]["path"].endswith("/ready")
    out_after = probe["periodSeconds"] * probe["failureThreshold"]
    assert out_after <= 2 < load_stack("prod").redis.sentinel.down_after
    assert probe["successThreshold"] == 1 and probe["timeoutSeconds"] < probe["periodSeconds"]
    # liveness stays on the process alone (/ping): a Redis outage must not restart oauth2-proxy
    assert c["livenessProbe"]["httpGet"]["path"].endswith("/ping")
