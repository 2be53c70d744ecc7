"""oauth2-proxy: the flag set (pure, dev/prod/external/HA), the object specs, the program under
mocks, and the proxy's bad inputs."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from authproxy_local.render.mockrun import (
    DEFAULT_TEST_SECRETS,
    MOCK_SECRET_PREFIX,
    is_secret,
    project_config,
    run_program,
)
from components import config as C
from components.headers import CHECK_PATH_PREFIX
from components.oauth2_proxy import (
    KEYCLOAK_CA_DIR,
    KEYCLOAK_CA_FILE,
    PATCH_FORCE_ANNOTATION,
    ROLLING_UPDATE,
    OAuth2ProxyArgs,
    deployment_ignore_changes,
    deployment_spec,
    egress_policy_spec,
    hpa_spec,
    ingress_policy_spec,
    pdb_spec,
    pod_spec,
    proxy_labels,
    secrets_checksum,
    service_fqdn,
    service_monitor_spec,
    service_spec,
)
from components.proxy_settings import (
    SECRET_ENV,
    ProxySettings,
    backend_logout_url,
    check_path_regex,
    cookie_domain,
    proxy_args,
    proxy_command,
    proxy_env,
    whitelist_domain,
)
from components.session_store import redis_connection
from components.stack import (
    PROXY_NAME,
    REDIS_RELEASE,
    namespace_labels,
    oauth2_proxy_args,
    proxy_settings,
    session_store_args,
)
from components.versions import OAUTH2_PROXY_REPOSITORY, OAUTH2_PROXY_VERSION
from tests.unit.stacks import load_stack

# Every flag the settings may emit, as defined in oauth2-proxy v7.15.6 (pkg/apis/options).
OAUTH2_PROXY_V7_15_FLAGS = {
    "provider", "oidc-issuer-url", "client-id", "redirect-url", "code-challenge-method", "scope",
    "oidc-groups-claim", "email-domain", "cookie-name", "cookie-domain", "whitelist-domain",
    "cookie-secure", "cookie-httponly", "cookie-samesite", "cookie-expire", "cookie-refresh",
    "cookie-csrf-per-request", "cookie-csrf-per-request-limit", "cookie-csrf-expire",
    "session-store-type", "redis-connection-url", "redis-use-sentinel",
    "redis-sentinel-master-name", "redis-sentinel-connection-urls", "reverse-proxy", "upstream",
    "set-xauthrequest", "set-authorization-header", "request-logging", "skip-provider-button",
    "silence-ping-logging", "http-address", "metrics-address", "api-route", "backend-logout-url",
    "ping-path", "ready-path", "real-client-ip-header", "trusted-proxy-ip", "provider-ca-file",
}
EXTERNAL = {"mode": "external", "external": {"url": "rediss://redis.example.net:6380"}}
EXTERNAL_SENTINEL = {"mode": "external", "external": {
    "sentinelUrls": ["redis://s1.example.net:26379"], "sentinelMasterName": "sessions"}}


def plain(spec: Any) -> Any:
    """A spec builder's typed result (the SDK's *ArgsDict) as plain data for the assertions."""
    return spec


def raw(stack: str) -> dict[str, Any]:
    return project_config(stack)


load = load_stack


def problems(stack: str = "dev", **overrides: Any) -> tuple[list[tuple[str, str]], str]:
    data = raw(stack)
    for k, v in overrides.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    with pytest.raises(C.ConfigError) as e:
        C.load(data, secrets_set=DEFAULT_TEST_SECRETS.keys())
    return e.value.problems, str(e.value)


def settings(stack: str = "dev", **overrides: Any) -> ProxySettings:
    cfg = load(stack, **overrides)
    return proxy_settings(cfg, redis_connection(session_store_args(cfg, "pw")))


def proxy(stack: str = "dev", **overrides: Any) -> OAuth2ProxyArgs:
    cfg = load(stack, **overrides)
    return oauth2_proxy_args(cfg, session_store_args(cfg, "pw"), "c", "s", "r")


def flags(args: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a in args:
        m = re.match(r"^--([a-z0-9-]+)=(.*)$", a, re.S)
        assert m, f"not a --flag=value arg: {a!r}"
        out.setdefault(m.group(1), []).append(m.group(2))
    return out


# ---------------------------------------------------------------- the flag set (pure)
DEV_ARGS = [
    "--provider=oidc",
    "--oidc-issuer-url=https://keycloak.authproxy.test/realms/authproxy",
    "--client-id=oauth2-proxy",
    "--redirect-url=https://auth.authproxy.test/oauth2/callback",
    "--code-challenge-method=S256",
    "--scope=openid email profile",
    "--oidc-groups-claim=groups",
    "--email-domain=*",
    "--cookie-name=_authproxy",
    "--cookie-domain=.authproxy.test",
    "--whitelist-domain=.authproxy.test",
    "--cookie-secure=true",
    "--cookie-httponly=true",
    "--cookie-samesite=lax",
    "--cookie-expire=8h",
    "--cookie-refresh=4m",
    "--cookie-csrf-per-request=true",
    "--cookie-csrf-per-request-limit=10",
    "--cookie-csrf-expire=15m",
    "--session-store-type=redis",
    f"--redis-connection-url=redis://{REDIS_RELEASE}.authproxy.svc:6379",
    "--reverse-proxy=true",
    "--upstream=static://200",
    "--set-xauthrequest=true",
    "--set-authorization-header=true",
    "--skip-provider-button=true",
    "--ping-path=/oauth2/ping",
    "--ready-path=/oauth2/ready",
    "--silence-ping-logging=true",
    "--real-client-ip-header=X-Envoy-External-Address",
    *(f"--trusted-proxy-ip={c}" for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                          "100.64.0.0/10", "fc00::/7", "127.0.0.0/8", "::1/128")),
    "--request-logging=false",
    "--http-address=0.0.0.0:4180",
    "--metrics-address=0.0.0.0:44180",
    "--api-route=^/authproxy\\-check/api/",
    "--backend-logout-url=https://keycloak.authproxy.test/realms/authproxy/protocol/"
    "openid-connect/logout?id_token_hint={id_token}",
]


def test_dev_args_exactly():
    assert proxy_args(settings("dev")) == DEV_ARGS


def test_prod_args_use_sentinels_and_prod_identity():
    f = flags(proxy_args(settings("prod")))
    assert f["oidc-issuer-url"] == ["https://sso.example.com/realms/corp"]
    assert f["client-id"] == ["authproxy"]
    assert f["redirect-url"] == ["https://auth.example.com/oauth2/callback"]
    assert f["cookie-domain"] == [".example.com"] and f["whitelist-domain"] == [".example.com"]
    assert f["redis-use-sentinel"] == ["true"]
    assert f["redis-sentinel-master-name"] == ["authproxy"]
    assert f["redis-sentinel-connection-urls"] == [
        f"redis://{REDIS_RELEASE}-announce-{i}.authproxy.svc:26379" for i in range(3)]
    assert "redis-connection-url" not in f
    assert f["api-route"] == [r"^/authproxy\-check/api/"]
    assert f["backend-logout-url"] == [
        "https://sso.example.com/realms/corp/protocol/openid-connect/logout?id_token_hint={id_token}"]


def test_external_standalone_and_sentinel_args():
    f = flags(proxy_args(settings("prod", redis=EXTERNAL)))
    assert f["redis-connection-url"] == ["rediss://redis.example.net:6380"]
    assert "redis-use-sentinel" not in f
    s = flags(proxy_args(settings("dev", redis=EXTERNAL_SENTINEL)))
    assert s["redis-sentinel-master-name"] == ["sessions"]
    assert s["redis-sentinel-connection-urls"] == ["redis://s1.example.net:26379"]


@pytest.mark.parametrize("stack,redis", [("dev", None), ("prod", None), ("dev", EXTERNAL),
                                         ("prod", EXTERNAL_SENTINEL)])
def test_every_flag_exists_in_oauth2_proxy_v7_15(stack, redis):
    s = settings(stack, keycloak={"caCertificate": CA_PEM}, **({"redis": redis} if redis else {}))
    assert set(flags(proxy_args(s))) <= OAUTH2_PROXY_V7_15_FLAGS


@pytest.mark.parametrize("stack,redis", [("dev", None), ("prod", None), ("dev", EXTERNAL)])
def test_common_security_flags_in_every_mode(stack, redis):
    f = flags(proxy_args(settings(stack, **({"redis": redis} if redis else {}))))
    for name, value in {
        "provider": "oidc", "code-challenge-method": "S256", "cookie-secure": "true",
        "cookie-httponly": "true", "cookie-samesite": "lax", "cookie-csrf-per-request": "true",
        "session-store-type": "redis", "reverse-proxy": "true", "upstream": "static://200",
        "set-xauthrequest": "true", "set-authorization-header": "true",
        "skip-provider-button": "true", "request-logging": "false",
        "silence-ping-logging": "true", "oidc-groups-claim": "groups",
    }.items():
        assert f[name] == [value], name
    # The access token stays inside oauth2-proxy: the gateway never forwards it (headers.py).
    assert "pass-access-token" not in f
    # Bearer-token pass-through is the ingress's decision, never on by default.
    assert "skip-jwt-bearer-tokens" not in f
    # Endpoints come from discovery.
    assert not any(k in f for k in ("login-url", "redeem-url", "oidc-jwks-url",
                                    "skip-oidc-discovery"))


def test_cookie_lifetimes_follow_session_config():
    f = flags(proxy_args(settings("dev", session={"cookieExpire": "2h", "cookieRefresh": "1m"})))
    assert f["cookie-expire"] == ["2h"] and f["cookie-refresh"] == ["1m"]


def test_email_domains_and_api_routes_from_config():
    cfg_apps = raw("dev")["apps"]
    apps = [dict(cfg_apps[0], apiPaths=["^/api/", "^/v2/"]), dict(cfg_apps[1], apiPaths=["^/api/"])]
    f = flags(proxy_args(settings("dev", apps=apps, proxy={"emailDomains": ["a.com", "b.org"]})))
    assert f["email-domain"] == ["a.com", "b.org"]
    # deduplicated, in order, under the check's path prefix
    assert f["api-route"] == [r"^/authproxy\-check/api/", r"^/authproxy\-check/v2/"]


@pytest.mark.parametrize("route,path,hit", [
    ("^/api/", "/api/items", True), ("^/api/", "/apix", False), ("^/v[0-9]+/", "/v2/x", True),
    ("^/api/", "/other/api/", False), ("^/a.c/", "/abc/", True),
])
def test_api_routes_match_the_checked_path_exactly_where_they_matched_the_request(route, path, hit):
    """oauth2-proxy sees the request's path under the check prefix; each configured regex, moved
    under it, matches the checked path iff the original matched the request's path."""
    moved = check_path_regex(route)
    assert bool(re.match(route, path)) is hit
    assert bool(re.match(moved, CHECK_PATH_PREFIX + path)) is hit
    assert not re.match(moved, path)  # a bare path (never sent by the gateway) does not match


def test_no_api_route_without_api_paths():
    apps = [{k: v for k, v in a.items() if k != "apiPaths"} for a in raw("dev")["apps"]]
    assert "api-route" not in flags(proxy_args(settings("dev", apps=apps)))


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_cookie_and_whitelist_domains_cover_every_host_and_nothing_foreign(stack):
    cfg = load(stack)
    f = flags(proxy_args(settings(stack)))
    hosts = [a.host for a in cfg.apps] + [cfg.auth_hostname]

    def cookie_matches(host: str) -> bool:  # oauth2-proxy: plain suffix match
        return any(host.endswith(d) for d in f["cookie-domain"])

    def whitelisted(host: str) -> bool:  # oauth2-proxy: exact or '.'-prefixed subdomain
        return any(host == d.lstrip(".") or (d.startswith(".") and host.endswith(d))
                   for d in f["whitelist-domain"])

    for h in hosts:
        assert cookie_matches(h) and whitelisted(h), h
    for foreign in (f"evil{cfg.domain}", "example.org", f"{cfg.domain}.evil.net"):
        assert not cookie_matches(foreign) and not whitelisted(foreign), foreign


def test_domain_helpers():
    assert cookie_domain("example.com") == ".example.com" == cookie_domain(".example.com")
    assert whitelist_domain("example.com") == ".example.com"
    assert backend_logout_url("https://k.example/realms/r/") == (
        "https://k.example/realms/r/protocol/openid-connect/logout?id_token_hint={id_token}")


def test_no_secret_in_args_every_secret_through_secret_key_ref():
    s = settings("prod")
    args, env = proxy_command(s)
    assert not any("secret" in a.split("=", 1)[0] or "password" in a.split("=", 1)[0]
                   for a in args)
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert set(refs) == {"OAUTH2_PROXY_CLIENT_SECRET", "OAUTH2_PROXY_COOKIE_SECRET",
                         "OAUTH2_PROXY_REDIS_PASSWORD", "OAUTH2_PROXY_REDIS_SENTINEL_PASSWORD"}
    for name, ref in refs.items():
        assert ref == {"name": PROXY_NAME, "key": SECRET_ENV[name]}
    for e in env:
        if e["name"].startswith("OAUTH2_PROXY_"):
            assert "value" not in e


def test_sentinel_password_only_when_sentinels_need_it():
    names = lambda s: {e["name"] for e in proxy_env(s)}  # noqa: E731
    assert "OAUTH2_PROXY_REDIS_SENTINEL_PASSWORD" not in names(settings("dev"))
    assert "OAUTH2_PROXY_REDIS_SENTINEL_PASSWORD" in names(settings("prod"))
    assert "OAUTH2_PROXY_REDIS_SENTINEL_PASSWORD" not in names(
        settings("dev", redis=EXTERNAL_SENTINEL))


def test_gomaxprocs_from_config_or_cpu_limit():
    (derived,) = [e for e in proxy_env(settings("dev")) if e["name"] == "GOMAXPROCS"]
    assert derived == {"name": "GOMAXPROCS", "valueFrom": {
        "resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}}
    (fixed,) = [e for e in proxy_env(settings("dev", proxy={"goMaxProcs": 3}))
                if e["name"] == "GOMAXPROCS"]
    assert fixed == {"name": "GOMAXPROCS", "value": "3"}


def test_extra_args_are_appended_last():
    s = dataclasses.replace(settings("dev"), extra_args=("--skip-jwt-bearer-tokens=true",))
    assert proxy_args(s)[-1] == "--skip-jwt-bearer-tokens=true"


def test_metrics_address_can_be_turned_off():
    s = dataclasses.replace(settings("dev"), metrics_address=None)
    assert "metrics-address" not in flags(proxy_args(s))


def test_flag_builder_refuses_incomplete_input():
    s = settings("dev")
    with pytest.raises(ValueError):
        proxy_args(dataclasses.replace(s, redirect_url="http://auth.authproxy.test/oauth2/callback"))
    with pytest.raises(ValueError):
        proxy_args(dataclasses.replace(s, cookie_domains=()))
    with pytest.raises(ValueError):
        proxy_args(dataclasses.replace(s, redis={**s.redis, "url": ""}))
    with pytest.raises(ValueError):
        proxy_args(dataclasses.replace(s, redis={**s.redis, "mode": "sentinel",
                                                 "sentinel_urls": [], "master_name": "m"}))


# ---------------------------------------------------------------- object specs (pure)
def test_pod_is_hardened_with_probes_and_resources():
    p = pod_spec(proxy("prod"))
    assert p["securityContext"]["runAsNonRoot"] is True
    assert p["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert p["automountServiceAccountToken"] is False
    (c,) = p["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The health endpoints moved under /oauth2/ (--ping-path/--ready-path); the probes follow.
    assert c["readinessProbe"]["httpGet"] == {"path": "/oauth2/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/oauth2/ping", "port": "http"}
    f = flags(c["args"])
    assert f["ping-path"] == ["/oauth2/ping"] and f["ready-path"] == ["/oauth2/ready"]
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"},
                              "limits": {"cpu": "1", "memory": "256Mi"}}
    assert c["image"] == f"{OAUTH2_PROXY_REPOSITORY}:{OAUTH2_PROXY_VERSION}"
    assert c["image"] == "quay.io/oauth2-proxy/oauth2-proxy:v7.15.6"
    assert {(x["name"], x["containerPort"]) for x in c["ports"]} == {("http", 4180),
                                                                     ("metrics", 44180)}


def test_replicas_spread_over_zones_and_nodes():
    p = pod_spec(proxy("prod"))
    keys = {t["topologyKey"] for t in p["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for t in p["topologySpreadConstraints"]:
        assert t["labelSelector"]["matchLabels"] == proxy_labels(PROXY_NAME)
    anti = p["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_deployment_replicas_and_checksum_annotation():
    dev = plain(deployment_spec(proxy("dev"), "abc"))
    assert dev["replicas"] == 1
    assert dev["template"]["metadata"]["annotations"]["checksum/secret"] == "abc"
    assert dev["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert dev["strategy"]["rolling_update"] == {"max_unavailable": 0, "max_surge": 1}
    assert dev["selector"]["match_labels"] == proxy_labels(PROXY_NAME)
    assert deployment_ignore_changes(proxy("dev")) == []
    # With the HPA on, the Deployment starts at the HPA's minimum and the stack never sets the
    # count again (ignoreChanges), whatever proxy.replicas says.
    prod = proxy("prod", proxy={"replicas": 7})
    assert plain(deployment_spec(prod, "abc"))["replicas"] == 3
    assert deployment_ignore_changes(prod) == ["spec.replicas"]
    no_hpa = proxy("prod", proxy={"autoscaling": {"enabled": False}})
    assert plain(deployment_spec(no_hpa, "x"))["replicas"] == 3
    assert deployment_ignore_changes(no_hpa) == []


def test_rollouts_never_reduce_ready_pods_so_the_pdb_never_blocks_them():
    """A rolling update adds a pod before it removes one: with the PDB's budget of one, a drain
    during a rollout still gets its eviction, and the rollout needs none."""
    assert ROLLING_UPDATE == {"max_unavailable": 0, "max_surge": 1}
    for which in ("dev", "prod"):
        spec = plain(deployment_spec(proxy(which), "x"))
        assert spec["strategy"] == {"type": "RollingUpdate", "rolling_update": ROLLING_UPDATE}


def test_pdb_and_hpa_shapes():
    dev, prod = plain(pdb_spec(proxy("dev"))), plain(pdb_spec(proxy("prod")))
    # Unset: one pod at a time, whatever the count (one replica may go; under an HPA it follows
    # the current scale).
    assert dev["max_unavailable"] == 1 and "min_available" not in dev
    assert prod["max_unavailable"] == 1 and "min_available" not in prod
    assert prod["selector"]["match_labels"] == proxy_labels(PROXY_NAME)
    assert prod["unhealthy_pod_eviction_policy"] == "AlwaysAllow"
    explicit = plain(pdb_spec(proxy("prod", proxy={"pdbMinAvailable": 2})))
    assert explicit["min_available"] == 2 and "max_unavailable" not in explicit
    h = plain(hpa_spec(proxy("prod")))
    assert h["scale_target_ref"] == {"api_version": "apps/v1", "kind": "Deployment",
                                   "name": PROXY_NAME}
    assert (h["min_replicas"], h["max_replicas"]) == (3, 10)
    assert h["metrics"][0]["resource"]["target"] == {"type": "Utilization",
                                                     "average_utilization": 75}


def test_service_ports_and_fqdn():
    s = service_spec(proxy("dev"))
    assert s["type"] == "ClusterIP" and s["selector"] == proxy_labels(PROXY_NAME)
    assert [(p["name"], p["port"], p["targetPort"]) for p in s["ports"]] == [
        ("http", 4180, "http"), ("metrics", 44180, "metrics")]
    assert service_fqdn("oauth2-proxy", "authproxy") == "oauth2-proxy.authproxy.svc.cluster.local"


def test_ingress_policy_gateway_and_namespace_only():
    spec = plain(ingress_policy_spec(proxy("dev")))
    assert spec["policy_types"] == ["Ingress"]
    gw, same_ns = spec["ingress"]
    assert gw["from_"] == [{
        "namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": "istio-ingress"}},
        "pod_selector": {"match_labels": {"istio": "ingressgateway"}},
    }]
    assert gw["ports"] == [{"protocol": "TCP", "port": 4180}]
    assert same_ns["from_"] == [{"pod_selector": {}}]
    assert {p["port"] for p in same_ns["ports"]} == {4180, 44180}
    # With a ServiceMonitor, the metrics port (only) opens to Prometheus in any namespace.
    prod = plain(ingress_policy_spec(proxy("prod")))["ingress"]
    assert prod[-1] == {"from_": [{"namespace_selector": {}}],
                        "ports": [{"protocol": "TCP", "port": 44180}]}
    for rule in prod:
        if rule["from_"] == [{"namespace_selector": {}}]:
            assert all(p["port"] != 4180 for p in rule["ports"])


def test_ingress_policy_follows_gateway_config():
    spec = plain(ingress_policy_spec(proxy("dev", istio={"gateway": {
        "namespace": "gw", "selector": {"app": "edge"}, "tlsCredentialName": "t", "serviceAccount": "edge"}})))
    assert spec["ingress"][0]["from_"][0]["namespace_selector"]["match_labels"] == {
        "kubernetes.io/metadata.name": "gw"}
    assert spec["ingress"][0]["from_"][0]["pod_selector"]["match_labels"] == {"app": "edge"}


def _egress(args: OAuth2ProxyArgs) -> list[dict[str, Any]]:
    spec = plain(egress_policy_spec(args))
    assert spec["policy_types"] == ["Egress"]
    assert spec["pod_selector"]["match_labels"] == proxy_labels(PROXY_NAME)
    return spec["egress"]


def test_egress_dns_redis_keycloak_only_dev():
    dns, redis, keycloak = _egress(proxy("dev"))
    assert dns["to"][0] == {
        "namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": "kube-system"}},
        "pod_selector": {"match_labels": {"k8s-app": "kube-dns"}}}
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert redis["to"] == [{"pod_selector": {"match_labels": {"app": "redis-ha",
                                                            "release": REDIS_RELEASE}}}]
    assert [p["port"] for p in redis["ports"]] == [6379]
    assert keycloak["to"] == [{"ip_block": {"cidr": "0.0.0.0/0"}}, {"ip_block": {"cidr": "::/0"}}]
    assert keycloak["ports"] == [{"protocol": "TCP", "port": 443}]


def test_egress_ha_adds_sentinel_port_and_external_uses_url_ports():
    _, redis, _ = _egress(proxy("prod"))
    assert [p["port"] for p in redis["ports"]] == [6379, 26379]
    _, ext, _ = _egress(proxy("prod", redis=EXTERNAL))
    assert ext["to"] == [{"ip_block": {"cidr": "0.0.0.0/0"}}, {"ip_block": {"cidr": "::/0"}}]
    assert ext["ports"] == [{"protocol": "TCP", "port": 6380}]


def test_egress_keycloak_in_cluster_and_custom_port():
    kc = raw("dev")["keycloak"]
    _, _, peer = _egress(proxy("dev", keycloak={**kc, "inCluster": {
        "namespace": "keycloak", "podLabels": {"app": "keycloak"}, "port": 8443}}))
    assert peer == {"to": [{
        "namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": "keycloak"}},
        "pod_selector": {"match_labels": {"app": "keycloak"}}}],
        "ports": [{"protocol": "TCP", "port": 8443}]}
    _, _, anywhere = _egress(proxy("dev", keycloak={**kc, "url": "https://kc.authproxy.test:8443"}))
    assert anywhere["ports"] == [{"protocol": "TCP", "port": 8443}]


def test_service_monitor_spec():
    spec = service_monitor_spec(proxy("prod"))
    assert spec["selector"]["matchLabels"] == proxy_labels(PROXY_NAME)
    assert spec["endpoints"][0]["port"] == "metrics" and spec["endpoints"][0]["path"] == "/metrics"


def test_secrets_checksum_covers_every_value_and_needs_the_cookie_secret():
    base = {"cookie-secret": "c", "client-secret": "s", "redis-password": "r"}
    h = secrets_checksum(base)
    assert len(h) == 64 and all(v not in h for v in ("cookie", "client"))
    for key in base:
        assert secrets_checksum({**base, key: base[key] + "x"}) != h, key
    with pytest.raises(ValueError):
        secrets_checksum({"client-secret": "s"})


def test_namespace_has_no_sidecar_injection():
    assert namespace_labels()["istio-injection"] == "disabled"


# ---------------------------------------------------------------- program under mocks
@pytest.fixture(scope="module")
def runs():
    return {
        "dev": run_program("dev"),
        "prod": run_program("prod"),
        "external": run_program("dev", overrides={"redis": EXTERNAL}),
    }


def _by_name(run, kind: str) -> dict[str, Any]:
    return {r.name: r for r in run.kube(kind)}


def mine(run, kind: str) -> list[Any]:
    """Objects of a kind registered by the oauth2-proxy component (others add their own)."""
    return [r for r in run.kube(kind) if r.parent.endswith("OAuth2Proxy::authproxy-oauth2-proxy")]


def deployment(run) -> Any:
    (dep,) = mine(run, "Deployment")
    return dep


def namespace(run) -> Any:
    (ns,) = [r for r in run.kube("Namespace") if r.name == "authproxy-namespace"]
    return ns


@pytest.mark.parametrize("which", ["dev", "prod", "external"])
def test_objects_registered(runs, which):
    run = runs[which]
    assert set(_by_name(run, "NetworkPolicy")) >= {"authproxy-oauth2-proxy-ingress", "authproxy-oauth2-proxy-egress"}
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "ServiceAccount", "Secret"):
        assert len(mine(run, kind)) == 1, kind
    assert namespace(run).inputs["metadata"]["name"] == "authproxy"
    dep = deployment(run)
    assert dep.parent.endswith("OAuth2Proxy::authproxy-oauth2-proxy")
    assert dep.inputs["metadata"] == {
        "name": PROXY_NAME, "namespace": "authproxy",
        "labels": dep.inputs["metadata"]["labels"],
        # The stack's apply wins field conflicts (a removed HPA's `replicas`).
        "annotations": {PATCH_FORCE_ANNOTATION: "true"}}


def test_namespace_object(runs):
    ns = namespace(runs["dev"])
    assert ns.inputs["metadata"]["labels"]["istio-injection"] == "disabled"


def test_hpa_and_service_monitor_only_when_enabled(runs):
    assert mine(runs["dev"], "HorizontalPodAutoscaler") == []
    assert mine(runs["dev"], "ServiceMonitor") == []
    (hpa,) = mine(runs["prod"], "HorizontalPodAutoscaler")
    assert hpa.inputs["spec"]["minReplicas"] == 3
    (sm,) = mine(runs["prod"], "ServiceMonitor")
    assert sm.type == "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"
    assert deployment(runs["prod"]).inputs["spec"]["replicas"] == 3  # minReplicas, then the HPA's


@pytest.mark.parametrize("which", ["dev", "prod", "external"])
def test_secret_values_only_in_the_secret_and_marked_secret(runs, which):
    run = runs[which]
    secret = _by_name(run, "Secret")["authproxy-oauth2-proxy-secret"]
    assert is_secret(secret.wire_inputs["stringData"])
    data = secret.inputs["stringData"]
    assert set(data) == {"cookie-secret", "client-secret", "redis-password"}
    assert data["client-secret"] == f"{MOCK_SECRET_PREFIX}authproxy-secrets-client-secret"
    for r in run.resources:
        if not r.type.startswith("kubernetes:"):
            continue
        if r.type == "kubernetes:core/v1:Secret":
            # A Kubernetes Secret may hold secrets, but only as secret inputs.
            for k in ("stringData", "data"):
                if k in r.wire_inputs:
                    assert is_secret(r.wire_inputs[k]), r.name
            continue
        assert MOCK_SECRET_PREFIX not in json.dumps(r.inputs), r.name
        assert data["cookie-secret"] not in json.dumps(r.inputs), r.name


def test_redis_password_in_secret_matches_mode(runs):
    dev = _by_name(runs["dev"], "Secret")["authproxy-oauth2-proxy-secret"].inputs["stringData"]
    assert dev["redis-password"] == f"{MOCK_SECRET_PREFIX}authproxy-secrets-redis-password"
    ext = _by_name(runs["external"], "Secret")["authproxy-oauth2-proxy-secret"].inputs["stringData"]
    assert ext["redis-password"] == DEFAULT_TEST_SECRETS["externalRedisPassword"]


def test_deployment_env_references_the_secret_and_checksum_is_a_plain_hash(runs):
    dep = deployment(runs["prod"])
    tmpl = dep.wire_inputs["spec"]["template"]
    checksum = tmpl["metadata"]["annotations"]["checksum/secret"]
    assert isinstance(checksum, str) and re.fullmatch(r"[0-9a-f]{64}", checksum)
    (c,) = dep.inputs["spec"]["template"]["spec"]["containers"]
    for e in c["env"]:
        if e["name"].startswith("OAUTH2_PROXY_"):
            assert e["valueFrom"]["secretKeyRef"]["name"] == PROXY_NAME
    assert c["args"] == proxy_args(settings("prod"))


def test_checksum_changes_when_a_secret_changes():
    def checksum(pw: str) -> str:
        secrets = {**DEFAULT_TEST_SECRETS, "externalRedisPassword": pw}
        run = run_program("dev", overrides={"redis": EXTERNAL}, secrets=secrets)
        return deployment(run).inputs["spec"]["template"]["metadata"]["annotations"][
            "checksum/secret"]

    assert checksum("one") != checksum("two")


def test_stack_exports_proxy_service(runs):
    svc = runs["dev"].plain_output("proxyService")
    assert svc == {"name": PROXY_NAME, "namespace": "authproxy",
                   "host": "oauth2-proxy.authproxy.svc.cluster.local", "port": 4180,
                   "metrics_port": 44180}
    assert runs["dev"].plain_output("namespace") == "authproxy"


def test_prod_image_override_reaches_the_deployment():
    run = run_program("prod", overrides={"proxy": {"image": {
        "repository": "registry.corp/oauth2-proxy", "tag": "v7.15.2"}}})
    (c,) = deployment(run).inputs["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "registry.corp/oauth2-proxy:v7.15.2"


# ---------------------------------------------------------------- bad input
def test_image_tag_latest_is_rejected_naming_the_key():
    probs, text = problems(proxy={"image": {"repository": "quay.io/oauth2-proxy/oauth2-proxy",
                                            "tag": "latest"}})
    assert [k for k, _ in probs] == ["authproxy:proxy.image.tag"]
    assert "pinned" in text


def test_pdb_that_blocks_every_eviction_is_rejected():
    probs, text = problems(proxy={"replicas": 2, "pdbMinAvailable": 2})
    assert [k for k, _ in probs] == ["authproxy:proxy.pdbMinAvailable"]
    assert "proxy.replicas" in text
    probs, text = problems("prod", proxy={"pdbMinAvailable": 3})  # autoscaling.minReplicas 3
    assert [k for k, _ in probs] == ["authproxy:proxy.pdbMinAvailable"]
    assert "proxy.autoscaling.minReplicas" in text


def test_pdb_failure_stops_the_program_before_resources():
    with pytest.raises(C.ConfigError, match=r"authproxy:proxy\.pdbMinAvailable"):
        run_program("dev", overrides={"proxy": {"pdbMinAvailable": 1}})


def test_hpa_max_below_min_is_rejected():
    probs, _ = problems("prod", proxy={"autoscaling": {"enabled": True, "min_replicas": 4,
                                                       "max_replicas": 3}})
    assert "authproxy:proxy.autoscaling.maxReplicas" in [k for k, _ in probs]


def test_bad_quantities_and_requests_above_limits_are_rejected():
    probs, _ = problems(proxy={"resources": {"limits": {"cpu": "lots", "memory": "256Mi"}}})
    assert [k for k, _ in probs] == ["authproxy:proxy.resources.limits.cpu"]
    probs, text = problems(proxy={"resources": {"requests": {"cpu": "2", "memory": "1Gi"},
                                                "limits": {"cpu": "1", "memory": "256Mi"}}})
    assert sorted(k for k, _ in probs) == ["authproxy:proxy.resources.requests.cpu",
                                           "authproxy:proxy.resources.requests.memory"]
    assert "proxy.resources.limits.cpu" in text


def test_quantity_parser():
    assert C.parse_quantity("100m") == pytest.approx(0.1)
    assert C.parse_quantity("64Mi") == 64 * 2**20
    assert C.parse_quantity("1.5") == 1.5
    assert C.load({**raw("dev"), "proxy": {"resources": {
        "requests": {"cpu": 0.5, "memory": "64Mi"}, "limits": {"cpu": 1, "memory": "1G"}}}},
        secrets_set=DEFAULT_TEST_SECRETS.keys()).proxy.resources.limits.cpu == "1"


@pytest.mark.parametrize("domains", [[], ["not a domain"], ["@example.com"]])
def test_bad_email_domains_are_rejected(domains):
    probs, _ = problems(proxy={"emailDomains": domains})
    assert [k for k, _ in probs] == ["authproxy:proxy.emailDomains"]


def test_go_max_procs_bounds():
    probs, _ = problems(proxy={"goMaxProcs": 0})
    assert [k for k, _ in probs] == ["authproxy:proxy.goMaxProcs"]



# ---------------------------------------------------------------- a private Keycloak CA
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBprivate\n-----END CERTIFICATE-----\n"


def test_without_a_keycloak_ca_nothing_is_mounted_and_the_system_store_is_used(runs):
    assert "provider-ca-file" not in flags(proxy_args(settings("dev")))
    p = pod_spec(proxy("dev"))
    assert "volumes" not in p and "volumeMounts" not in p["containers"][0]
    assert mine(runs["dev"], "ConfigMap") == []
    assert set(deployment(runs["dev"]).inputs["spec"]["template"]["metadata"]["annotations"]) == {
        "checksum/secret"}


def test_a_keycloak_ca_is_mounted_from_a_configmap_and_named_by_provider_ca_file():
    """keycloak.caCertificate reaches oauth2-proxy: the ConfigMap holds it, the pod mounts it
    read-only, --provider-ca-file names the mounted file, and a changed CA rolls the pods."""
    args = proxy("dev", keycloak={"caCertificate": CA_PEM})
    assert flags(proxy_args(args["settings"]))["provider-ca-file"] == [KEYCLOAK_CA_FILE]
    p = pod_spec(args)
    (vol,) = p["volumes"]
    (mount,) = p["containers"][0]["volumeMounts"]
    assert vol["configMap"]["name"] == "oauth2-proxy-keycloak-ca"
    assert mount == {"name": vol["name"], "mountPath": KEYCLOAK_CA_DIR, "readOnly": True}
    (item,) = vol["configMap"]["items"]
    assert f"{mount['mountPath']}/{item['path']}" == KEYCLOAK_CA_FILE

    run = run_program("dev", overrides={"keycloak": {"caCertificate": CA_PEM}})
    (cm,) = mine(run, "ConfigMap")
    assert cm.inputs["metadata"]["name"] == vol["configMap"]["name"]
    assert cm.inputs["metadata"]["namespace"] == "authproxy"
    assert cm.inputs["data"] == {item["key"]: CA_PEM}
    dep = deployment(run)
    assert dep.inputs["spec"]["template"]["spec"]["volumes"] == p["volumes"]
    (c,) = dep.inputs["spec"]["template"]["spec"]["containers"]
    assert c["volumeMounts"] == [mount] and f"--provider-ca-file={KEYCLOAK_CA_FILE}" in c["args"]

    def ca_checksum(pem: str) -> str:
        spec = plain(deployment_spec(proxy("dev", keycloak={"caCertificate": pem}), "abc"))
        return spec["template"]["metadata"]["annotations"]["checksum/keycloak-ca"]

    assert ca_checksum(CA_PEM) != ca_checksum(CA_PEM.replace("private", "rotated"))


def test_the_ca_mount_and_the_flag_cannot_disagree():
    args = proxy("dev", keycloak={"caCertificate": CA_PEM})
    with pytest.raises(ValueError, match="provider_ca_file"):
        pod_spec({**args, "settings": dataclasses.replace(args["settings"], provider_ca_file=None)})
    plain_args = proxy("dev")
    with pytest.raises(ValueError, match="provider_ca_file"):
        pod_spec({**plain_args, "settings": dataclasses.replace(plain_args["settings"],
                                                                 provider_ca_file="/etc/ssl/other.pem")})
