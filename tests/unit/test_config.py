"""The config model: defaults, every validation rule (each names its key), and generated
app lists (hypothesis) for the domain-coverage rules."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.common import format_duration
from components.config import (
    ConfigError,
    host_matches,
    load,
    parse_duration,
    path_overlaps_oauth2,
)

ALL_SECRETS = {"keycloakAdminPassword", "keycloakAdminClientSecret", "externalRedisPassword"}


def base() -> dict:
    return {
        "domain": "example.test",
        "apps": [
            {"name": "one", "host": "one.example.test", "service": {"name": "one", "port": 80},
             "workloadLabels": {"app": "one"}},
        ],
        "keycloak": {"url": "https://sso.example.test"},
        "istio": {"gateway": {"serviceAccount": "istio-ingressgateway"}},
    }


def problems(raw: dict, secrets=frozenset({"keycloakAdminPassword"})) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as e:
        load(raw, secrets)
    return e.value.problems


def keys(raw: dict, **kw) -> list[str]:
    return [k for k, _ in problems(raw, **kw)]


def with_(path: str, value, raw: dict | None = None) -> dict:
    """Set a dotted path (list indices as numbers) in a copy of the base config."""
    out = copy.deepcopy(raw or base())
    node = out
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return out


def test_minimal_config_gets_safe_defaults():
    cfg = load(base(), {"keycloakAdminPassword"})
    assert cfg.auth_hostname == "auth.example.test"
    assert cfg.redirect_url == "https://auth.example.test/oauth2/callback"
    assert cfg.keycloak.realm_mode == "create"
    assert cfg.keycloak.issuer == "https://sso.example.test/realms/authproxy"
    assert cfg.session.cookie_refresh < cfg.session.access_token_lifespan < cfg.session.cookie_expire
    assert cfg.istio.ext_authz_mode == "extension-provider"
    assert cfg.redis.mode == "standalone"
    assert cfg.proxy.image.tag.startswith("v7.15.")
    assert cfg.pdb_min_available is None  # maxUnavailable 1: one replica never blocks a drain
    assert cfg.gateway_hosts == ("auth.example.test", "one.example.test")


def test_durations_round_trip():
    assert parse_duration("1h30m") == 5400
    assert parse_duration("45s") == 45
    assert parse_duration(0) == 0
    assert format_duration(5400) == "1h30m"
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        # malformed hostnames
        ("domain", "Example.TEST", "authproxy:domain"),
        ("apps.0.host", "one_example.test", "authproxy:apps[0].host"),
        ("apps.0.host", "https://one.example.test", "authproxy:apps[0].host"),
        ("authHost", "auth.example.test:443", "authproxy:authHost"),
        # unknown enum values
        ("keycloak.realmMode", "maybe", "authproxy:keycloak.realmMode"),
        ("redis.mode", "cluster", "authproxy:redis.mode"),
        ("istio.extAuthzMode", "lua", "authproxy:istio.extAuthzMode"),
        ("apps.0.authorizeAt", "edge", "authproxy:apps[0].authorizeAt"),
        ("keycloak.admin.auth", "token", "authproxy:keycloak.admin.auth"),
        # public paths that would cover /oauth2/
        ("apps.0.publicPaths", ["/*"], "authproxy:apps[0].publicPaths"),
        ("apps.0.publicPaths", ["/oauth2/*"], "authproxy:apps[0].publicPaths"),
        ("apps.0.publicPaths", ["/oa*"], "authproxy:apps[0].publicPaths"),
        ("apps.0.publicPaths", ["/oauth2"], "authproxy:apps[0].publicPaths"),
        ("apps.0.publicPaths", ["/OAuth2/sign_in"], "authproxy:apps[0].publicPaths"),
        ("apps.0.publicPaths", ["/static/../oauth2/*"], "authproxy:apps[0].publicPaths"),
        ("apps.0.publicPaths", ["/%6Fauth2/*"], "authproxy:apps[0].publicPaths"),
        ("apps.0.publicPaths", ["healthz"], "authproxy:apps[0].publicPaths"),
        # misc shape errors
        ("keycloak.url", "https://sso.example.test/auth", "authproxy:keycloak.url"),
        ("keycloak.url", "http://sso.example.test", "authproxy:keycloak.url"),
        ("apps.0.service.port", 70000, "authproxy:apps[0].service.port"),
        ("proxy.image.tag", "latest", "authproxy:proxy.image.tag"),
        ("redis.image.tag", "latest", "authproxy:redis.image.tag"),
        ("redis.chart.version", "latest", "authproxy:redis.chart.version"),
        ("session.cookieExpire", "soon", "authproxy:session.cookieExpire"),
        ("apps.0.apiPaths", ["api/"], "authproxy:apps[0].apiPaths"),
        ("apps.0.groups", ["admins", "admins"], "authproxy:apps[0].groups"),
        # oauth2-proxy's trusted callers: never everyone, only real ranges
        ("proxy.trustedProxyIps", ["0.0.0.0/0"], "authproxy:proxy.trustedProxyIps"),
        ("proxy.trustedProxyIps", ["::/0"], "authproxy:proxy.trustedProxyIps"),
        ("proxy.trustedProxyIps", [], "authproxy:proxy.trustedProxyIps"),
        ("proxy.trustedProxyIps", ["10.0.0.1/8"], "authproxy:proxy.trustedProxyIps"),
        ("proxy.trustedProxyIps", ["gateway"], "authproxy:proxy.trustedProxyIps"),
    ],
)
def test_field_rules_name_the_key(path, value, key):
    found = problems(with_(path, value))
    assert key in [k for k, _ in found], found
    assert all(msg for _, msg in found)


def test_error_message_says_nothing_was_created_and_lists_each_problem():
    raw = with_("domain", "BAD")
    raw["apps"][0]["host"] = "x"
    with pytest.raises(ConfigError) as e:
        load(raw, {"keycloakAdminPassword"})
    text = str(e.value)
    assert "nothing was created" in text
    assert "authproxy:domain" in text and "authproxy:apps[0].host" in text


def test_unknown_keys_are_rejected_by_name():
    raw = base()
    raw["sesion"] = {}
    raw["keycloak"]["relm"] = "x"
    ks = keys(raw)
    assert "authproxy:sesion" in ks
    assert "authproxy:keycloak.relm" in ks


def test_empty_app_list():
    assert keys(with_("apps", [])) == ["authproxy:apps"]


def test_missing_required_keys():
    raw = base()
    del raw["keycloak"]
    del raw["domain"]
    ks = keys(raw)
    assert "authproxy:keycloak" in ks and "authproxy:domain" in ks


def test_app_host_not_under_cookie_domain():
    found = problems(with_("apps.0.host", "one.other.test"))
    assert found[0][0] == "authproxy:apps[0].host"
    assert "cookie domain" in found[0][1]


def test_host_that_merely_ends_with_the_domain_text_is_not_under_it():
    assert keys(with_("apps.0.host", "evilexample.test")) == ["authproxy:apps[0].host"]


def test_auth_host_not_under_cookie_domain():
    assert "authproxy:authHost" in keys(with_("authHost", "auth.other.test"))


def test_duplicate_hosts():
    raw = base()
    raw["apps"].append({"name": "two", "host": "one.example.test", "service": {"name": "t", "port": 1},
                        "authorizeAt": "gateway"})
    found = problems(raw)
    assert found == [("authproxy:apps[1].host", found[0][1])]
    assert "apps[0]" in found[0][1]


def test_duplicate_app_names():
    raw = base()
    raw["apps"].append({"name": "one", "host": "two.example.test", "service": {"name": "t", "port": 1},
                        "authorizeAt": "gateway"})
    assert keys(raw) == ["authproxy:apps[1].name"]


def test_auth_host_reused_as_app_host():
    found = problems(with_("apps.0.host", "auth.example.test"))
    assert found[0][0] == "authproxy:apps[0].host" and "auth host" in found[0][1]


def test_missing_admin_password_secret():
    found = problems(base(), secrets=frozenset())
    assert found[0][0] == "authproxy:keycloakAdminPassword"
    assert "pulumi config set --secret authproxy:keycloakAdminPassword" in found[0][1]


def test_missing_admin_client_secret_for_client_credentials():
    raw = with_("keycloak.admin", {"auth": "client-credentials", "clientId": "svc"})
    assert keys(raw) == ["authproxy:keycloakAdminClientSecret"]
    load(raw, {"keycloakAdminClientSecret"})


def test_missing_external_redis_password():
    raw = with_("redis", {"mode": "external", "external": {"url": "rediss://redis.example.test:6380"}})
    assert keys(raw) == ["authproxy:externalRedisPassword"]
    load(raw, {"keycloakAdminPassword", "externalRedisPassword"})


def test_session_longer_than_token_without_refresh():
    raw = with_("session", {"cookieExpire": "8h", "cookieRefresh": 0, "accessTokenLifespan": "5m"})
    found = problems(raw)
    assert found[0][0] == "authproxy:session.cookieExpire"
    assert "cookieRefresh" in found[0][1]


def test_session_within_token_lifetime_needs_no_refresh():
    raw = with_("session", {"cookieExpire": "5m", "cookieRefresh": 0, "accessTokenLifespan": "5m"})
    assert load(raw, {"keycloakAdminPassword"}).session.cookie_refresh == 0


def test_refresh_must_come_before_token_expiry():
    raw = with_("session", {"cookieRefresh": "10m", "accessTokenLifespan": "5m"})
    assert "authproxy:session.cookieRefresh" in keys(raw)


def test_cookie_outliving_sso_session():
    raw = with_("session", {"cookieExpire": "24h", "ssoSessionMaxLifespan": "10h"})
    assert keys(raw) == ["authproxy:session.cookieExpire"]


@pytest.mark.parametrize("mode", ["extension-provider", "envoy-filter"])
@pytest.mark.parametrize("where", ["gateway", "both", "sidecar"])
def test_every_authorization_place_works_in_both_ext_authz_modes(mode, where):
    raw = with_("apps.0.authorizeAt", where)
    raw["istio"]["extAuthzMode"] = mode
    assert load(raw, {"keycloakAdminPassword"}).apps[0].authorize_at == where


def test_sidecar_checks_need_the_pods_labels_never_a_guess():
    raw = base()
    del raw["apps"][0]["workloadLabels"]
    found = problems(raw)
    assert [k for k, _ in found] == ["authproxy:apps[0].workloadLabels"]
    assert "kubectl get service -n default one -o jsonpath='{.spec.selector}'" in found[0][1]
    raw["apps"][0]["authorizeAt"] = "gateway"  # no policy selects the pods then
    assert load(raw, {"keycloakAdminPassword"}).apps[0].selector_labels == {}
    for bad in ({}, {"app": "bad value!"}, {"-x": "y"}):
        assert keys(with_("apps.0.workloadLabels", bad)) == ["authproxy:apps[0].workloadLabels"]


def test_the_gateway_identity_is_required_when_it_cannot_be_known():
    raw = base()
    del raw["istio"]["gateway"]["serviceAccount"]
    found = problems(raw)
    assert [k for k, _ in found] == ["authproxy:istio.gateway.serviceAccount"]
    assert "serviceAccountName" in found[0][1]
    raw["apps"][0]["authorizeAt"] = "gateway"
    assert load(raw, {"keycloakAdminPassword"}).gateway_principal is None
    raw = with_("istio.gateway.serviceAccount", "edge-gw")
    assert load(raw, {"keycloakAdminPassword"}).gateway_principal == (
        "cluster.local/ns/istio-ingress/sa/edge-gw")


def test_groups_match_by_full_path():
    cfg = load(with_("apps.0.groups", ["sre", "/platform/sre"]), {"keycloakAdminPassword"})
    assert cfg.apps[0].group_paths == ("/sre", "/platform/sre")
    assert cfg.groups == ("/platform/sre", "/sre")
    raw = with_("apps.0.groups", ["/platform/sre"])
    raw["keycloak"]["demoUsers"] = [{"username": "a", "groups": ["/platform/sre"]},
                                    {"username": "b", "groups": ["sre"]}]
    assert keys(raw) == ["authproxy:keycloak.demoUsers[1].groups"]  # /sre is another group


def test_app_host_outside_explicit_gateway_hosts():
    raw = with_("istio.gateway.hosts", ["auth.example.test", "*.apps.example.test"])
    assert keys(raw) == ["authproxy:apps[0].host"]
    raw["apps"][0]["host"] = "one.apps.example.test"
    load(raw, {"keycloakAdminPassword"})


def test_demo_user_in_unknown_group():
    raw = with_("keycloak.demoUsers", [{"username": "alice", "groups": ["nobody"]}])
    assert keys(raw) == ["authproxy:keycloak.demoUsers[0].groups"]


def test_pdb_that_blocks_every_eviction():
    raw = with_("proxy", {"replicas": 2, "pdbMinAvailable": 2})
    assert keys(raw) == ["authproxy:proxy.pdbMinAvailable"]


def test_path_matching_helpers():
    assert path_overlaps_oauth2("/*")
    assert path_overlaps_oauth2("/oauth2/start")
    assert not path_overlaps_oauth2("/static/*")
    assert not path_overlaps_oauth2("/oauth")  # exact path, does not cover /oauth2/
    assert host_matches("*.example.test", "a.b.example.test")
    assert not host_matches("*.example.test", "example.test")


# ---- property-based: the domain-coverage rules over generated app lists ---------------------

label = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
domains = st.sampled_from(["example.test", "corp.example.com", "a.b.c.test"])


@settings(max_examples=60, deadline=None)
@given(domain=domains, labels=st.lists(label, min_size=1, max_size=6), foreign=st.booleans(),
       dup=st.booleans(), data=st.data())
def test_domain_coverage_rules_over_generated_apps(domain, labels, foreign, dup, data):
    apps = [
        {"name": f"app{i}", "host": f"{lab}{i}.{domain}", "service": {"name": f"s{i}", "port": 80},
         "workloadLabels": {"app": f"s{i}"}}
        for i, lab in enumerate(labels)
    ]
    expected: set[str] = set()
    if foreign:
        i = data.draw(st.integers(0, len(apps) - 1))
        apps[i]["host"] = f"x{i}.elsewhere.test"
        expected.add(f"authproxy:apps[{i}].host")
    if dup and len(apps) > 1:
        j = data.draw(st.integers(1, len(apps) - 1))
        apps[j]["host"] = apps[0]["host"]
        expected.add(f"authproxy:apps[{j}].host")
    raw = {"domain": domain, "apps": apps, "keycloak": {"url": f"https://sso.{domain}"},
           "istio": {"gateway": {"serviceAccount": "gw"}}}
    if expected:
        got = set(keys(raw))
        assert expected <= got
        assert all(k.startswith("authproxy:apps[") for k in got)
    else:
        cfg = load(raw, {"keycloakAdminPassword"})
        assert all(a.host.endswith("." + domain) for a in cfg.apps)
        assert set(cfg.gateway_hosts) == {f"auth.{domain}", *(a["host"] for a in apps)}


@settings(max_examples=60, deadline=None)
@given(path=st.from_regex(r"/[a-zA-Z0-9/_.*-]{0,12}", fullmatch=True))
def test_no_accepted_public_path_covers_oauth2(path):
    raw = with_("apps.0.publicPaths", [path])
    try:
        cfg = load(raw, {"keycloakAdminPassword"})
    except ConfigError:
        return
    (accepted,) = cfg.apps[0].public_paths
    from components.config import public_path_covers

    for target in ("/oauth2/", "/oauth2/start", "/oauth2/callback", "/oauth2/sign_out", "/oauth2"):
        assert not public_path_covers(accepted, target)


def test_sso_lifetimes_only_for_a_created_realm():
    raw = with_("keycloak.realmMode", "existing")
    raw["keycloak"]["realm"] = "corp"
    load(raw, {"keycloakAdminPassword"})  # defaults are fine: nothing is set on the client
    raw["session"] = {"ssoSessionIdleTimeout": "1h"}
    found = problems(raw)
    assert [k for k, _ in found] == ["authproxy:session.ssoSessionIdleTimeout"]
    assert "realmMode=create" in found[0][1]


# ---------------------------------------------------------------- ingress API (issue 13)
def gateway_api(raw: dict | None = None) -> dict:
    return with_("istio.ingressApi", "gateway-api", raw)


def test_gateway_api_is_off_by_default_and_labels_the_pods_istiod_deploys():
    cfg = load(base(), {"keycloakAdminPassword"})
    assert cfg.istio.ingress_api == "istio"
    assert cfg.gateway_pod_labels == {"istio": "ingressgateway"}
    cfg = load(gateway_api(with_("istio.gateway.name", "edge")), {"keycloakAdminPassword"})
    assert cfg.gateway_pod_labels == {"gateway.networking.k8s.io/gateway-name": "edge"}
    assert (cfg.istio.gateway_api.class_name, cfg.istio.gateway_api.create) == ("istio", True)


@pytest.mark.parametrize(
    ("raw", "key", "says"),
    [
        (gateway_api(with_("istio.gateway.selector", {"istio": "ingressgateway"})),
         "authproxy:istio.gateway.selector", "gateway-name"),
        (gateway_api(with_("istio.install.enabled", True)),
         "authproxy:istio.install.enabled", "Gateway API CRDs"),
        (with_("istio.gatewayApi", {"className": "istio"}), "authproxy:istio.gatewayApi",
         "istio.ingressApi"),
        (gateway_api(with_("istio.gatewayApi", {"httpListener": "web", "httpsListener": "web"})),
         "authproxy:istio.gatewayApi.httpsListener", "two different listeners"),
        (gateway_api(with_("apps.0.publicPaths", ["/static*"])), "authproxy:apps[0].publicPaths",
         "'/static/*'"),
        (with_("istio.ingressApi", "ingress"), "authproxy:istio.ingressApi", ""),
        (gateway_api(with_("istio.gatewayApi", {"className": "Istio"})),
         "authproxy:istio.gatewayApi.className", ""),
    ],
)
def test_gateway_api_combinations_that_cannot_work_name_the_key(raw, key, says):
    found = dict(problems(raw))
    assert key in found, found
    assert says in found[key]


def test_gateway_api_accepts_both_ext_authz_modes_and_segment_prefixes():
    for mode in ("extension-provider", "envoy-filter"):
        raw = gateway_api(with_("istio.extAuthzMode", mode, with_("apps.0.publicPaths", ["/static/*", "/healthz"])))
        assert load(raw, {"keycloakAdminPassword"}).istio.ext_authz_mode == mode


# ---------------------------------------------------------------- values local runs set (authproxy_local)
def test_local_run_values_are_config_keys_the_model_reads() -> None:
    from authproxy_local.render import deep_merge, project_config
    from components import config as C

    local = C.local_server_values(keycloak_ca_pem="-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
                                  redis_chart_path="/charts/redis-ha.tgz", keycloak_url="https://127.0.0.1:8443",
                                  stack_values=project_config("dev"))
    over = deep_merge(C.ext_authz_mode_values("envoy-filter"), C.namespace_values("elsewhere"))
    cfg = C.load(deep_merge(deep_merge(project_config("dev"), local), over), secrets_set=ALL_SECRETS)
    assert cfg.keycloak.url == "https://127.0.0.1:8443" and cfg.keycloak.ca_certificate
    assert cfg.redis.chart_path == "/charts/redis-ha.tgz" and cfg.kubernetes.skip_await
    assert not cfg.istio.install.enabled
    # the identity the install would have given the gateway stays (the sidecars admit tokens from it)
    assert cfg.gateway_principal == "cluster.local/ns/istio-ingress/sa/istio-ingressgateway"
    assert "gateway" not in C.local_server_values(
        keycloak_ca_pem="x", redis_chart_path="y", stack_values=project_config("gateway-api"))["istio"]
    assert (cfg.istio.ext_authz_mode, cfg.namespace) == ("envoy-filter", "elsewhere")
    bumped = C.load(deep_merge(project_config("dev"), C.cookie_secret_rotation_values(cfg)), secrets_set=ALL_SECRETS)
    assert int(bumped.rotation.cookie_secret) == int(cfg.rotation.cookie_secret) + 1


def test_required_secret_keys_follow_admin_auth_and_redis_mode() -> None:
    from authproxy_local.render import project_config
    from components import config as C

    dev = C.load(project_config("dev"), secrets_set=ALL_SECRETS)
    prod = C.load(project_config("prod"), secrets_set=ALL_SECRETS)
    assert C.required_secret_keys(dev) == (C.KEYCLOAK_ADMIN_PASSWORD_KEY,)
    assert C.required_secret_keys(prod) == (C.KEYCLOAK_ADMIN_CLIENT_SECRET_KEY,)
    assert C.admin_client_secret_key(dev) is None
    assert C.admin_client_secret_key(prod) == C.KEYCLOAK_ADMIN_CLIENT_SECRET_KEY
    ext = C.load({**project_config("dev"), "redis": {"mode": "external", "external": {"url": "redis://r:6379"}}},
                 secrets_set=ALL_SECRETS)
    assert C.EXTERNAL_REDIS_PASSWORD_KEY in C.required_secret_keys(ext)
    assert set(C.required_secret_keys(ext)) <= set(C.SECRET_KEYS)


def test_flatten_values_gives_config_set_paths() -> None:
    from components.config import flatten_values

    assert flatten_values({"a": {"b": 1, "c": {"d": "x"}}, "e": [1], "f": {}}) == {
        "a.b": 1, "a.c.d": "x", "e": [1], "f": {}}
