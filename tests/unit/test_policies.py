"""The policy pack (policy/policies.py): each policy with passing and failing resources, every
resource of the dev and prod stacks (both ext_authz modes) through every policy, and the pack's
entry point answering the engine's gRPC calls.

Properties are handed to the policies the way the analyzer does: deserialized from the wire form
(secrets unwrapped) and wrapped in pulumi-policy's unknown-checking proxies, which are Mappings and
Sequences but not dicts and lists.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from authproxy_local.render import mockrun
from components.cookies import SessionCookies, lua_disabled_per_route, lua_filter
from policy import policies as P

ROOT = mockrun.ROOT
OPTS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
BY_NAME = {p.name: p for p in P.POLICIES}

Props = dict[str, Any]
Mutation = Callable[[Props], object]


def engine_props(wire: Mapping[str, Any]) -> Any:
    """Properties as the analyzer passes them to a policy."""
    return unknown_checking_proxy(deserialize_properties(copy.deepcopy(dict(wire))))


def urn(type_: str, name: str) -> str:
    return f"urn:pulumi:test::authproxy::{type_}::{name}"


def check(policy: str, type_: str, props: Mapping[str, Any], name: str = "res") -> list[str]:
    """Run one resource policy on one resource; the violation messages."""
    pol = BY_NAME[policy]
    assert isinstance(pol, ResourceValidationPolicy)
    out: list[str] = []
    args = ResourceValidationArgs(type_, engine_props(props), urn(type_, name), name, OPTS, None)
    def report(message: str, _urn: str | None = None) -> None:
        out.append(message)

    pol.validate(args, report)
    return out


def policy_resource(type_: str, props: Mapping[str, Any], name: str) -> PolicyResource:
    return PolicyResource(type_, engine_props(props), urn(type_, name), name, OPTS, None, None,
                          [], {})


def check_stack(
    policy: str,
    resources: Sequence[tuple[str, Mapping[str, Any], str]],
    config: Mapping[str, Any] | None = None,
) -> list[tuple[str, str | None]]:
    """Run one stack policy over (type, props, name) resources; (message, urn) violations."""
    pol = BY_NAME[policy]
    assert isinstance(pol, StackValidationPolicy)
    out: list[tuple[str, str | None]] = []
    args = StackValidationArgs([policy_resource(*r) for r in resources], config)
    def report(message: str, violation_urn: str | None = None) -> None:
        out.append((message, violation_urn))

    pol.validate(args, report)
    return out


# --------------------------------------------------------------------------------------------
# Good resources (shaped like the stack's), mutated into bad ones below
# --------------------------------------------------------------------------------------------

CLIENT = "keycloak:openid/client:Client"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CRONJOB = "kubernetes:batch/v1:CronJob"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
RELEASE = "kubernetes:helm.sh/v3:Release"
ENVOYFILTER = "kubernetes:networking.istio.io/v1alpha3:EnvoyFilter"
AUTHZ = "kubernetes:security.istio.io/v1:AuthorizationPolicy"
GATEWAY = "kubernetes:networking.istio.io/v1:Gateway"
VS = "kubernetes:networking.istio.io/v1:VirtualService"
K8S_GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
HTTPROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
SERVICE = "kubernetes:core/v1:Service"
ISTIO_OPERATOR = "kubernetes:install.istio.io/v1alpha1:IstioOperator"


def good_client() -> Props:
    return {
        "clientId": "oauth2-proxy",
        "accessType": "CONFIDENTIAL",
        "standardFlowEnabled": True,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "pkceCodeChallengeMethod": "S256",
        "validRedirectUris": ["https://auth.example.com/oauth2/callback"],
        "validPostLogoutRedirectUris": ["https://echo.example.com/", "+"],
        "clientSecret": {mockrun.SECRET_SIG_KEY: mockrun.SECRET_SIG, "value": "s3cr3t"},
    }


def _secret_env(name: str, key: str) -> Props:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": "oauth2-proxy", "key": key}}}


def good_deployment() -> Props:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "oauth2-proxy", "namespace": "authproxy"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "oauth2-proxy"}},
            "template": {
                "metadata": {
                    "labels": {"app.kubernetes.io/name": "oauth2-proxy"},
                    # computed during a preview: must not stop any check
                    "annotations": {"checksum/secret": UNKNOWN_STRING_VALUE},
                },
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532.0},
                    "containers": [{
                        "name": "oauth2-proxy",
                        "image": "quay.io/oauth2-proxy/oauth2-proxy:v7.15.2",
                        "args": [
                            "--provider=oidc",
                            "--cookie-secure=true",
                            "--session-store-type=redis",
                            "--redis-connection-url=redis://authproxy-redis.authproxy.svc:6379",
                            "--client-secret-file=/etc/ignored-but-a-path-is-fine",
                        ],
                        "env": [
                            _secret_env("OAUTH2_PROXY_CLIENT_SECRET", "client-secret"),
                            _secret_env("OAUTH2_PROXY_COOKIE_SECRET", "cookie-secret"),
                            _secret_env("OAUTH2_PROXY_REDIS_PASSWORD", "redis-password"),
                            {"name": "GOMAXPROCS", "value": "1"},
                        ],
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                      "limits": {"cpu": "1", "memory": "256Mi"}},
                        "securityContext": {
                            "runAsNonRoot": True,
                            "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False,
                            "privileged": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }],
                },
            },
        },
    }


def container(props: Props) -> Props:
    c: Props = props["spec"]["template"]["spec"]["containers"][0]
    return c


def good_cronjob() -> Props:
    """A different workload kind: the pod spec sits at spec.jobTemplate.spec.template.spec."""
    pod = good_deployment()["spec"]["template"]
    pod["spec"]["containers"][0]["args"] = []
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "job", "namespace": "demo"},
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": pod}}}}


def good_redis_release() -> Props:
    return {
        "name": "authproxy-redis",
        "chart": "redis-ha",
        "version": "4.39.0",
        "repositoryOpts": {"repo": "https://dandydeveloper.github.io/charts"},
        "values": {
            "image": {"repository": "docker.io/library/redis", "tag": "8.2.3-alpine"},
            "auth": True,
            "existingSecret": "authproxy-redis-auth",
            "sentinel": {"auth": True, "existingSecret": "authproxy-redis-auth"},
            "exporter": {"image": "quay.io/oliver006/redis_exporter", "tag": "v1.86.0"},
            "redis": {"podAnnotations": {"checksum/auth": UNKNOWN_STRING_VALUE}},
        },
    }


def _mesh(fail_open: bool) -> Props:
    return {"extensionProviders": [{
        "name": "authproxy-oauth2-proxy",
        "envoyExtAuthzHttp": {"service": "oauth2-proxy.authproxy.svc.cluster.local",
                              "port": 4180.0, "failOpen": fail_open},
    }]}


def good_istiod_release() -> Props:
    return {"name": "istiod", "chart": "istiod", "version": "1.28.3",
            "repositoryOpts": {"repo": "https://istio-release.storage.googleapis.com/charts"},
            "values": {"meshConfig": _mesh(False)}}


def good_ext_authz_filter() -> Props:
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "authproxy-ext-authz", "namespace": "istio-ingress"},
        "spec": {
            "workloadSelector": {"labels": {"istio": "ingressgateway"}},
            "configPatches": [{
                "applyTo": "HTTP_FILTER",
                "match": {"context": "GATEWAY", "listener": {"filterChain": {"filter": {
                    "name": "envoy.filters.network.http_connection_manager",
                    "subFilter": {"name": "envoy.filters.http.router"}}}}},
                "patch": {"operation": "INSERT_BEFORE", "value": {
                    "name": "envoy.filters.http.ext_authz",
                    "typed_config": {
                        "@type": "type.googleapis.com/" + P.EXT_AUTHZ_TYPE,
                        "failure_mode_allow": False,
                        "http_service": {"server_uri": {"uri": "http://oauth2-proxy",
                                                        "cluster": "outbound|4180||x",
                                                        "timeout": "2s"}},
                    },
                }},
            }],
        },
    }


def good_configmap() -> Props:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "oauth2-proxy-config", "namespace": "authproxy"},
            "data": {"oauth2_proxy.cfg": 'provider = "oidc"\ncookie_secure = true\n',
                     "mesh": "extensionProviders:\n- name: p\n  envoyExtAuthzHttp:\n"
                             "    service: s\n    port: 4180\n    failOpen: false\n"}}


def _set(path: str, value: Any) -> Mutation:
    """A mutation setting a dotted path ("a.b.0.c"); value DELETE removes the key."""
    def mutate(props: Props) -> None:
        node: Any = props
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


DELETE = object()
C = "spec.template.spec.containers.0"


def _container(mutate: Callable[[Props], None]) -> Mutation:
    return lambda props: mutate(container(props))


def _add_arg(*args: str) -> Mutation:
    return _container(lambda c: c["args"].extend(args))


def _add_env(entry: Props) -> Mutation:
    return _container(lambda c: c["env"].append(entry))


def _replace_env(name: str, entry: Props) -> Mutation:
    def mutate(c: Props) -> None:
        c["env"] = [entry if e["name"] == name else e for e in c["env"]]
    return _container(mutate)


# (policy, type, good props factory, mutation, expected message fragment)
FAILING: list[tuple[str, str, Callable[[], Props], Mutation, str]] = [
    ("oidc-client-exact-https-redirect-uris", CLIENT, good_client,
     _set("validRedirectUris", ["https://auth.example.com/*"]), "wildcard"),
    ("oidc-client-exact-https-redirect-uris", CLIENT, good_client,
     _set("validRedirectUris", ["*"]), "wildcard"),
    ("oidc-client-exact-https-redirect-uris", CLIENT, good_client,
     _set("validRedirectUris", ["http://auth.example.com/oauth2/callback"]), "https"),
    ("oidc-client-exact-https-redirect-uris", CLIENT, good_client,
     _set("validRedirectUris", ["/oauth2/callback"]), "https"),
    ("oidc-client-exact-https-redirect-uris", CLIENT, good_client,
     _set("validRedirectUris", []), "no valid redirect URI"),
    ("oidc-client-exact-https-redirect-uris", CLIENT, good_client,
     _set("validPostLogoutRedirectUris", ["https://*.example.com/*"]), "post-logout"),
    ("oidc-client-pkce-s256", CLIENT, good_client, _set("pkceCodeChallengeMethod", DELETE), "S256"),
    ("oidc-client-pkce-s256", CLIENT, good_client, _set("pkceCodeChallengeMethod", "plain"), "S256"),
    ("oidc-client-no-implicit-or-password-grant", CLIENT, good_client,
     _set("implicitFlowEnabled", True), "implicitFlowEnabled"),
    ("oidc-client-no-implicit-or-password-grant", CLIENT, good_client,
     _set("directAccessGrantsEnabled", True), "password grant"),
    ("oauth2-proxy-secrets-from-secret-refs", DEPLOYMENT, good_deployment,
     _add_arg("--client-secret=abc"), "--client-secret"),
    ("oauth2-proxy-secrets-from-secret-refs", DEPLOYMENT, good_deployment,
     _add_arg("--cookie-secret", "abc"), "--cookie-secret"),
    ("oauth2-proxy-secrets-from-secret-refs", DEPLOYMENT, good_deployment,
     _add_arg("--redis-password=abc"), "--redis-password"),
    ("oauth2-proxy-secrets-from-secret-refs", DEPLOYMENT, good_deployment,
     _add_arg("--redis-connection-url=redis://:hunter2@redis:6379"), "URL with a password"),
    ("oauth2-proxy-secrets-from-secret-refs", DEPLOYMENT, good_deployment,
     _replace_env("OAUTH2_PROXY_CLIENT_SECRET", {"name": "OAUTH2_PROXY_CLIENT_SECRET",
                                                 "value": "abc"}), "literal value"),
    ("oauth2-proxy-secrets-from-secret-refs", DEPLOYMENT, good_deployment,
     _replace_env("OAUTH2_PROXY_COOKIE_SECRET", {"name": "OAUTH2_PROXY_COOKIE_SECRET", "value":
                                                 UNKNOWN_STRING_VALUE}), "literal value"),
    ("oauth2-proxy-secrets-from-secret-refs", DEPLOYMENT, good_deployment,
     _replace_env("OAUTH2_PROXY_REDIS_PASSWORD", {
         "name": "OAUTH2_PROXY_REDIS_PASSWORD",
         "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "redis-password"}}}),
     "other than a Secret key"),
    ("oauth2-proxy-secrets-from-secret-refs", CONFIGMAP, good_configmap,
     _set("data.client-secret", "abc"), "ConfigMaps are not secret"),
    ("oauth2-proxy-secrets-from-secret-refs", CONFIGMAP, good_configmap,
     lambda p: p["data"].update({"oauth2_proxy.cfg": 'cookie_secret = "abc"\n'}),
     "config file with a secret"),
    ("oauth2-proxy-cookie-secure", DEPLOYMENT, good_deployment,
     _container(lambda c: c.update(args=["--cookie-secure=false"])), "--cookie-secure=false"),
    ("oauth2-proxy-cookie-secure", DEPLOYMENT, good_deployment,
     _add_env({"name": "OAUTH2_PROXY_COOKIE_SECURE", "value": "false"}), "COOKIE_SECURE=false"),
    ("oauth2-proxy-cookie-secure", CONFIGMAP, good_configmap,
     lambda p: p["data"].update({"oauth2_proxy.cfg": "cookie_secure = false\n"}),
     "cookie_secure = false"),
    ("containers-run-as-non-root", DEPLOYMENT, good_deployment,
     lambda p: (p["spec"]["template"]["spec"].pop("securityContext"),
                container(p)["securityContext"].pop("runAsNonRoot")), "may run as root"),
    ("containers-run-as-non-root", DEPLOYMENT, good_deployment,
     _set(C + ".securityContext.runAsNonRoot", False), "may run as root"),
    ("containers-run-as-non-root", DEPLOYMENT, good_deployment,
     _set(C + ".securityContext.runAsUser", 0.0), "runAsUser: 0"),
    ("containers-run-as-non-root", CRONJOB, good_cronjob,
     _set("spec.jobTemplate.spec.template.spec.containers.0.securityContext.runAsNonRoot", False),
     "container 'oauth2-proxy' of CronJob demo/job"),
    ("containers-read-only-root-filesystem", DEPLOYMENT, good_deployment,
     _set(C + ".securityContext.readOnlyRootFilesystem", DELETE), "writable root"),
    ("containers-read-only-root-filesystem", DEPLOYMENT, good_deployment,
     lambda p: p["spec"]["template"]["spec"].update(initContainers=[
         {"name": "init", "image": "busybox:1.37.0", "securityContext": {}}]),
     "init container 'init'"),
    ("containers-no-privilege-escalation", DEPLOYMENT, good_deployment,
     _set(C + ".securityContext.allowPrivilegeEscalation", DELETE), "allowPrivilegeEscalation"),
    ("containers-no-privilege-escalation", DEPLOYMENT, good_deployment,
     _set(C + ".securityContext.privileged", True), "privileged"),
    ("containers-no-privilege-escalation", DEPLOYMENT, good_deployment,
     _set(C + ".securityContext.capabilities", {"add": ["SYS_ADMIN"]}), "SYS_ADMIN"),
    ("containers-resource-limits", DEPLOYMENT, good_deployment,
     _set(C + ".resources.limits", DELETE), "cpu or memory limit"),
    ("containers-resource-limits", DEPLOYMENT, good_deployment,
     _set(C + ".resources.limits.memory", DELETE), "memory limit"),
    ("images-pinned", DEPLOYMENT, good_deployment,
     _set(C + ".image", "quay.io/oauth2-proxy/oauth2-proxy:latest"), "'latest'"),
    ("images-pinned", DEPLOYMENT, good_deployment,
     _set(C + ".image", "localhost:5000/oauth2-proxy"), "no tag"),
    ("images-pinned", DEPLOYMENT, good_deployment,
     _set(C + ".image", "redis:alpine"), "floating tag"),
    ("images-pinned", RELEASE, good_redis_release, _set("version", DELETE), "exact chart version"),
    ("images-pinned", RELEASE, good_redis_release, _set("version", "4.x"), "exact chart version"),
    ("images-pinned", RELEASE, good_redis_release, _set("values.image.tag", "latest"),
     "values.image.tag"),
    ("images-pinned", RELEASE, good_redis_release, _set("values.exporter.tag", "latest"),
     "values.exporter.tag"),
    ("ext-authz-fails-closed", ENVOYFILTER, good_ext_authz_filter,
     _set("spec.configPatches.0.patch.value.typed_config.failure_mode_allow", True),
     "failure_mode_allow is true"),
    ("ext-authz-fails-closed", ENVOYFILTER, good_ext_authz_filter,
     lambda p: p["spec"]["configPatches"][0]["patch"]["value"].update(typedConfig={
         "@type": "type.googleapis.com/" + P.EXT_AUTHZ_TYPE, "failureModeAllow": True}),
     "failure_mode_allow is true"),
    ("ext-authz-fails-closed", RELEASE, good_istiod_release, _set("values.meshConfig", _mesh(True)),
     "failOpen: true"),
    ("ext-authz-fails-closed", CONFIGMAP, good_configmap,
     _set("data.mesh", "extensionProviders:\n- name: p\n  envoyExtAuthzGrpc:\n    failOpen: true\n"),
     "'p' has failOpen: true"),
    ("oauth2-proxy-cookie-and-redirect-scope", DEPLOYMENT, good_deployment,
     _add_arg("--cookie-domain=.com"), "public suffix"),
    ("oauth2-proxy-cookie-and-redirect-scope", DEPLOYMENT, good_deployment,
     _add_arg("--whitelist-domain=*"), "to any site"),
    ("oauth2-proxy-cookie-and-redirect-scope", DEPLOYMENT, good_deployment,
     _add_env({"name": "OAUTH2_PROXY_WHITELIST_DOMAINS", "value": ".example.com, *.com"}), "to any site"),
    ("oauth2-proxy-cookie-and-redirect-scope", DEPLOYMENT, good_deployment,
     _add_arg("--cookie-domain=.example.com", "--whitelist-domain=.evil.example.org"),
     "outside the session cookie's domain"),
    ("oauth2-proxy-cookie-and-redirect-scope", DEPLOYMENT, good_deployment,
     _add_arg("--whitelist-domain=.example.com:*"), "any port"),
    ("oauth2-proxy-cookie-and-redirect-scope", DEPLOYMENT, good_deployment,
     _add_arg("--cookie-samesite=none"), "every cross-site request"),
    ("oauth2-proxy-cookie-and-redirect-scope", DEPLOYMENT, good_deployment,
     _add_arg("--trusted-ip=10.0.0.0/8"), "authentication bypass"),
    ("oauth2-proxy-cookie-and-redirect-scope", DEPLOYMENT, good_deployment,
     _add_arg("--reverse-proxy=true"), "without --trusted-proxy-ip"),
    ("oauth2-proxy-cookie-and-redirect-scope", DEPLOYMENT, good_deployment,
     _add_arg("--reverse-proxy=true", "--trusted-proxy-ip=10.0.0.0/8", "--trusted-proxy-ip=0.0.0.0/0"),
     "trusts every caller"),
    ("redis-auth-enabled", RELEASE, good_redis_release, _set("values.auth", False), "auth is not true"),
    ("redis-auth-enabled", RELEASE, good_redis_release, _set("values.existingSecret", DELETE),
     "neither existingSecret"),
    ("redis-auth-enabled", RELEASE, good_redis_release, _set("values.sentinel.auth", False),
     "sentinel.auth"),
    ("redis-auth-enabled", RELEASE, good_redis_release,
     lambda p: p.update(chart="oci://registry-1.docker.io/bitnamicharts/redis",
                        values={"auth": {"enabled": False}}), "auth.enabled"),
    ("redis-auth-enabled", RELEASE, good_redis_release,
     lambda p: p.update(chart="valkey", values={}), "auth.enabled"),
    ("redis-auth-enabled", DEPLOYMENT, good_deployment,
     _container(lambda c: c.update(env=[e for e in c["env"]
                                        if e["name"] != "OAUTH2_PROXY_REDIS_PASSWORD"])),
     "without a password"),
]


def _case_id(case: tuple[str, str, Callable[[], Props], Mutation, str]) -> str:
    return f"{case[0]}:{case[4]}"


@pytest.mark.parametrize("case", FAILING, ids=[_case_id(c) for c in FAILING])
def test_policy_fails_the_bad_resource_and_passes_the_good_one(
    case: tuple[str, str, Callable[[], Props], Mutation, str],
) -> None:
    policy, type_, good, mutate, expected = case
    assert check(policy, type_, good()) == []
    bad = good()
    mutate(bad)
    found = check(policy, type_, bad)
    assert found, f"{policy} accepted the bad resource"
    assert any(expected in m for m in found), found


def test_every_resource_policy_has_a_failing_case() -> None:
    resource_policies = {p.name for p in P.POLICIES if isinstance(p, ResourceValidationPolicy)}
    assert resource_policies == {c[0] for c in FAILING}


def test_policies_are_mandatory_and_named_uniquely() -> None:
    assert len(BY_NAME) == len(P.POLICIES)
    assert all(p.enforcement_level is EnforcementLevel.MANDATORY for p in P.POLICIES)


def test_good_variants_pass() -> None:
    """Accepted spellings that are not weaker: a digest, an untagged Helm image value (the
    chart's appVersion), a Valkey chart with auth on, a client without a browser flow."""
    d = good_deployment()
    container(d)["image"] = "quay.io/oauth2-proxy/oauth2-proxy@sha256:" + "a" * 64
    assert check("images-pinned", DEPLOYMENT, d) == []
    r = good_redis_release()
    r["values"]["image"]["tag"] = ""
    assert check("images-pinned", RELEASE, r) == []
    valkey = {"chart": "valkey", "version": "0.9.3", "values": {"auth": {"enabled": True}}}
    assert check("redis-auth-enabled", RELEASE, valkey) == []
    service_client = {"standardFlowEnabled": False, "serviceAccountsEnabled": True}
    assert check("oidc-client-pkce-s256", CLIENT, service_client) == []
    assert check("oidc-client-exact-https-redirect-uris", CLIENT, service_client) == []
    # The non-oauth2-proxy ConfigMap key `mesh` with failOpen false and a Secret are fine.
    assert check("ext-authz-fails-closed", CONFIGMAP, good_configmap()) == []
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "oauth2-proxy"},
              "stringData": {"client-secret": "abc", "cookie-secret": "def"}}
    assert check("oauth2-proxy-secrets-from-secret-refs", "kubernetes:core/v1:Secret", secret) == []


def test_istio_operator_mesh_config_fails_closed() -> None:
    op: Props = {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
          "metadata": {"name": "istio", "namespace": "istio-system"},
          "spec": {"meshConfig": _mesh(False)}}
    assert check("ext-authz-fails-closed", ISTIO_OPERATOR, op) == []
    op["spec"]["meshConfig"] = _mesh(True)
    assert check("ext-authz-fails-closed", ISTIO_OPERATOR, op)


def test_unknown_values_a_policy_must_read_are_not_passed_silently() -> None:
    """During a preview a value the decision depends on may be unknown: the policy raises and the
    engine reports that it could not run, rather than reporting compliance."""
    client = good_client()
    client["validRedirectUris"] = UNKNOWN_STRING_VALUE
    with pytest.raises(UnknownValueError):
        check("oidc-client-exact-https-redirect-uris", CLIENT, client)


def test_unknown_values_that_only_name_things_do_not_stop_a_check() -> None:
    """An object name computed during a preview: the checks still run, the message falls back to
    the Pulumi resource name."""
    d = good_deployment()
    d["metadata"]["name"] = UNKNOWN_STRING_VALUE
    for policy in BY_NAME:
        if isinstance(BY_NAME[policy], ResourceValidationPolicy):
            assert check(policy, DEPLOYMENT, d, name="proxy") == [], policy
    container(d)["securityContext"]["readOnlyRootFilesystem"] = False
    assert check("containers-read-only-root-filesystem", DEPLOYMENT, d, name="proxy") == [
        "container 'oauth2-proxy' of Deployment authproxy/proxy has a writable root filesystem; "
        "set securityContext.readOnlyRootFilesystem: true (mount an emptyDir where it must write)"
    ]


# --------------------------------------------------------------------------------------------
# Host coverage (stack policy)
# --------------------------------------------------------------------------------------------

Res = tuple[str, Props, str]


def gateway_stack() -> list[Res]:
    """A gateway with an auth host, two app hosts and a CUSTOM policy that covers both apps."""
    proxy = good_deployment()
    return [
        (GATEWAY, {"kind": "Gateway", "metadata": {"name": "authproxy", "namespace": "istio-ingress"},
                   "spec": {"selector": {"istio": "ingressgateway"}}}, "gw"),
        (DEPLOYMENT, proxy, "proxy"),
        (SERVICE, {"kind": "Service", "metadata": {"name": "oauth2-proxy", "namespace": "authproxy"},
                   "spec": {"selector": {"app.kubernetes.io/name": "oauth2-proxy"}}}, "svc"),
        (VS, _vs("auth", "auth.example.com", "oauth2-proxy.authproxy.svc.cluster.local"), "vs-auth"),
        (VS, _vs("echo", "echo.example.com", "echo.demo.svc.cluster.local"), "vs-echo"),
        (VS, _vs("admin", "admin.example.com", "admin.demo.svc.cluster.local"), "vs-admin"),
        (AUTHZ, _custom(["echo.example.com", "echo.example.com:*"],
                        ["admin.example.com", "admin.example.com:*"]), "ap"),
    ]


def _vs(name: str, host: str, backend: str, gateways: list[str] | None = None) -> Props:
    return {"kind": "VirtualService", "metadata": {"name": name, "namespace": "istio-ingress"},
            "spec": {"hosts": [host], "gateways": gateways or ["istio-ingress/authproxy"],
                     "http": [{"name": f"{name}-default",
                               "route": [{"destination": {"host": backend}}]}]}}


def _custom(*host_groups: list[str], ns: str = "istio-ingress",
            selector: Props | None = None) -> Props:
    return {
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "authproxy-ext-authz", "namespace": ns},
        "spec": {
            "action": "CUSTOM",
            "provider": {"name": "authproxy-oauth2-proxy"},
            "selector": {"matchLabels": selector or {"istio": "ingressgateway"}},
            "rules": [{"to": [{"operation": {"hosts": hosts, "notPaths": ["/oauth2/*"]}}],
                       "when": [{"key": "request.headers[authorization]",
                                 "notValues": ["Bearer *"]}]}
                      for hosts in host_groups],
        },
    }


def _find(stack: list[Res], name: str) -> Props:
    return next(props for _, props, n in stack if n == name)


HOSTS = "gateway-hosts-behind-ext-authz"


def _uncovered(stack: list[Res], config: Mapping[str, Any] | None = None) -> list[str]:
    return [m.split("'")[1] for m, _ in check_stack(HOSTS, stack, config)]


def test_gateway_hosts_covered_by_the_custom_policy_pass() -> None:
    assert check_stack(HOSTS, gateway_stack()) == []


def test_a_host_missing_from_the_custom_policy_fails_with_its_virtualservice_urn() -> None:
    stack = gateway_stack()
    _find(stack, "ap")["spec"]["rules"].pop(1)
    found = check_stack(HOSTS, stack)
    assert [m.split("'")[1] for m, _ in found] == ["admin.example.com"]
    assert found[0][1] == urn(VS, "vs-admin")
    assert "publicHosts" in found[0][0]


def test_a_second_host_on_a_virtualservice_must_be_covered_too() -> None:
    stack = gateway_stack()
    _find(stack, "vs-echo")["spec"]["hosts"].append("other.example.com")
    assert _uncovered(stack) == ["other.example.com"]


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda ap: ap["spec"].update(action="ALLOW"), id="not-custom"),
        pytest.param(lambda ap: ap["metadata"].update(namespace="demo"), id="other-namespace"),
        pytest.param(lambda ap: ap["spec"]["selector"].update(matchLabels={"app": "echo"}),
                     id="selects-other-workloads"),
        pytest.param(lambda ap: [op["operation"].update(paths=["/admin/*"])
                                 for rule in ap["spec"]["rules"] for op in rule["to"]],
                     id="only-some-paths"),
        pytest.param(lambda ap: [op["operation"].update(notPaths=["/*"])
                                 for rule in ap["spec"]["rules"] for op in rule["to"]],
                     id="exempts-every-path"),
        pytest.param(lambda ap: ap["spec"].update(rules=[]), id="no-rules"),
    ],
)
def test_a_policy_that_does_not_guard_the_gateway_does_not_count(
    mutate: Callable[[Props], None],
) -> None:
    stack = gateway_stack()
    mutate(_find(stack, "ap"))
    assert sorted(_uncovered(stack)) == ["admin.example.com", "echo.example.com"]


def test_policies_in_the_root_namespace_and_without_host_restrictions_cover_everything() -> None:
    stack = gateway_stack()
    ap = _find(stack, "ap")
    ap["metadata"]["namespace"] = "istio-system"
    ap["spec"]["rules"] = [{"to": [{"operation": {"notPaths": ["/oauth2/*"]}}]}]
    assert check_stack(HOSTS, stack) == []
    assert _uncovered(stack, {"rootNamespace": "istio-root"}) == ["echo.example.com",
                                                                   "admin.example.com"]


def test_public_hosts_config_exempts_listed_hosts_only() -> None:
    stack = gateway_stack()
    _find(stack, "ap")["spec"]["rules"] = []
    assert _uncovered(stack, {"publicHosts": ["echo.example.com"]}) == ["admin.example.com"]
    assert check_stack(HOSTS, stack, {"publicHosts": ["*.example.com"]}) == []


def test_the_auth_host_is_exempt_only_while_it_routes_to_oauth2_proxy_alone() -> None:
    stack = gateway_stack()
    vs = _find(stack, "vs-auth")
    vs["spec"]["http"].append({"name": "extra",
                               "route": [{"destination": {"host": "echo.demo.svc.cluster.local"}}]})
    assert _uncovered(stack) == ["auth.example.com"]
    # ... and only while the Service really fronts oauth2-proxy pods (found by image).
    stack = gateway_stack()
    container(_find(stack, "proxy"))["image"] = "docker.io/library/nginx:1.29.0"
    assert _uncovered(stack) == ["auth.example.com"]


def test_mesh_only_virtualservices_are_ignored() -> None:
    stack = gateway_stack()
    _find(stack, "ap")["spec"]["rules"] = []
    for name in ("vs-echo", "vs-admin"):
        _find(stack, name)["spec"]["gateways"] = ["mesh"]
    assert check_stack(HOSTS, stack) == []


def test_an_ext_authz_envoy_filter_covers_the_gateway_unless_disabled_for_a_whole_host() -> None:
    stack = [r for r in gateway_stack() if r[2] != "ap"]
    ef = good_ext_authz_filter()
    stack.append((ENVOYFILTER, ef, "ef"))
    # Per-route exemption of the /oauth2/ route: still covered.
    per_route = {"@type": "type.googleapis.com/" + P.EXT_AUTHZ_PER_ROUTE_TYPE, "disabled": True}
    ef["spec"]["configPatches"].append({
        "applyTo": "HTTP_ROUTE",
        "match": {"context": "GATEWAY", "routeConfiguration": {"vhost": {
            "name": "echo.example.com:443", "route": {"name": "echo-oauth2"}}}},
        "patch": {"operation": "MERGE",
                  "value": {"typed_per_filter_config": {"envoy.filters.http.ext_authz": per_route}}},
    })
    assert check_stack(HOSTS, stack) == []
    # Disabled on the catch-all route, or on the whole virtual host: not covered.
    ef["spec"]["configPatches"][-1]["match"]["routeConfiguration"]["vhost"]["route"]["name"] = (
        "echo-default"
    )
    assert _uncovered(stack) == ["echo.example.com"]
    ef["spec"]["configPatches"][-1].update(applyTo="VIRTUAL_HOST")
    assert _uncovered(stack) == ["echo.example.com"]
    # An EnvoyFilter that is not ext_authz covers nothing.
    ef["spec"]["configPatches"] = ef["spec"]["configPatches"][-1:]
    assert sorted(_uncovered(stack)) == ["admin.example.com", "echo.example.com"]


def test_host_patterns_match_like_istio() -> None:
    assert P.host_matches("*", "a.example.com")
    assert P.host_matches("*.example.com", "a.example.com")
    assert not P.host_matches("*.example.com", "example.com")
    assert P.host_matches("a.example.*", "a.example.org")
    assert P.host_matches("a.example.com:*", "a.example.com")
    assert not P.host_matches("b.example.com", "a.example.com")
    # A wildcard VirtualService host needs a pattern covering all the names it stands for.
    assert P.host_matches("*.example.com", "*.example.com")
    assert not P.host_matches("a.example.com", "*.example.com")


def test_the_exported_mesh_config_must_fail_closed() -> None:
    good = "extensionProviders:\n- name: p\n  envoyExtAuthzHttp:\n    failOpen: false\n"
    stack: list[Res] = [("pulumi:pulumi:Stack", {"meshConfig": good}, "authproxy-dev")]
    assert check_stack("exported-mesh-config-fails-closed", stack) == []
    stack[0][1]["meshConfig"] = good.replace("false", "true")
    found = check_stack("exported-mesh-config-fails-closed", stack)
    assert found and "stack output meshConfig" in found[0][0]
    assert found[0][1] == urn("pulumi:pulumi:Stack", "authproxy-dev")
    stack[0][1]["meshConfig"] = _mesh(True)  # as a structured output
    assert check_stack("exported-mesh-config-fails-closed", stack)


# --------------------------------------------------------------------------------------------
# Session cookie isolation
# --------------------------------------------------------------------------------------------

COOKIES = "session-cookie-stripped"


def _strip_filter(cookie: str = "_authproxy", priority: int = 20, disabled: tuple[tuple[str, str], ...] = (
        ("auth.example.com:443", "auth-default"),), before: str = "envoy.filters.http.router") -> Props:
    patches: list[Props] = [{
        "applyTo": "HTTP_FILTER",
        "match": {"context": "GATEWAY", "listener": {"filterChain": {"filter": {
            "name": "envoy.filters.network.http_connection_manager", "subFilter": {"name": before}}}}},
        "patch": {"operation": "INSERT_BEFORE", "value": lua_filter(SessionCookies(cookie))},
    }]
    patches += [{
        "applyTo": "HTTP_ROUTE",
        "match": {"context": "GATEWAY", "routeConfiguration": {"vhost": {"name": vhost, "route": {"name": route}}}},
        "patch": {"operation": "MERGE", "value": {"typed_per_filter_config": lua_disabled_per_route()}},
    } for vhost, route in disabled]
    return {"kind": "EnvoyFilter", "metadata": {"name": "authproxy-session-cookie-strip",
                                                "namespace": "istio-ingress"},
            "spec": {"workloadSelector": {"labels": {"istio": "ingressgateway"}}, "priority": priority,
                     "configPatches": patches}}


def cookie_stack() -> list[Res]:
    stack = gateway_stack()
    container(_find(stack, "proxy"))["args"].append("--cookie-name=_authproxy")
    return [*stack, (ENVOYFILTER, _strip_filter(), "strip")]


def _leaks(stack: list[Res]) -> list[tuple[str, str]]:
    return [(m.split("'")[1], m.split("'")[3]) for m, _ in check_stack(COOKIES, stack)]


def test_app_routes_behind_the_cookie_filter_pass() -> None:
    assert check_stack(COOKIES, cookie_stack()) == []


def test_without_the_cookie_filter_every_app_route_leaks_the_session_cookie() -> None:
    stack = [r for r in cookie_stack() if r[2] != "strip"]
    found = check_stack(COOKIES, stack)
    assert _leaks(stack) == [("echo-default", "echo.example.com"), ("admin-default", "admin.example.com")]
    assert found[0][1] == urn(VS, "vs-echo") and "stripSessionCookies" in found[0][0]


@pytest.mark.parametrize("weaken", [
    pytest.param(lambda s: s.__setitem__(-1, (ENVOYFILTER, _strip_filter(cookie="_other"), "strip")),
                 id="strips-another-cookie"),
    pytest.param(lambda s: s.__setitem__(-1, (ENVOYFILTER, _strip_filter(
        before="envoy.filters.http.jwt_authn"), "strip")), id="not-right-before-the-router"),
    pytest.param(lambda s: _find(s, "strip")["metadata"].__setitem__("namespace", "other"),
                 id="other-namespace"),
    pytest.param(lambda s: _find(s, "strip")["spec"]["workloadSelector"]["labels"].__setitem__(
        "istio", "other"), id="other-gateway"),
])
def test_a_cookie_filter_that_does_not_strip_our_cookie_on_this_gateway_does_not_count(weaken) -> None:
    stack = cookie_stack()
    weaken(stack)
    assert {h for _, h in _leaks(stack)} == {"echo.example.com", "admin.example.com"}


def test_the_cookie_filter_must_run_after_an_ext_authz_envoy_filter() -> None:
    stack = [*cookie_stack(), (ENVOYFILTER, good_ext_authz_filter(), "ext-authz")]
    _find(stack, "ext-authz")["spec"]["priority"] = 10
    assert check_stack(COOKIES, stack) == []
    _find(stack, "strip")["spec"]["priority"] = 5  # inserted first: ext_authz would land after it
    assert {h for _, h in _leaks(stack)} == {"echo.example.com", "admin.example.com"}


def test_switching_the_filter_off_on_an_app_route_needs_the_explicit_opt_out() -> None:
    stack = cookie_stack()
    stack[-1] = (ENVOYFILTER, _strip_filter(disabled=(("echo.example.com:443", "echo-default"),)), "strip")
    assert _leaks(stack) == [("echo-default", "echo.example.com")]
    _find(stack, "vs-echo")["metadata"]["annotations"] = {"authproxy.io/session-cookies": "forwarded"}
    assert check_stack(COOKIES, stack) == []
    # the annotation alone opts out: no filter at all, only the annotated app passes
    stack = [r for r in stack if r[2] != "strip"]
    assert _leaks(stack) == [("admin-default", "admin.example.com")]


def test_routes_to_oauth2_proxy_keep_the_cookies() -> None:
    stack = cookie_stack()
    echo = _find(stack, "vs-echo")["spec"]["http"]
    echo.insert(0, {"name": "echo-oauth2", "match": [{"uri": {"prefix": "/oauth2/"}}],
                    "route": [{"destination": {"host": "oauth2-proxy.authproxy.svc.cluster.local"}}]})
    stack[-1] = (ENVOYFILTER, _strip_filter(disabled=(("echo.example.com:443", "echo-oauth2"),)), "strip")
    assert check_stack(COOKIES, stack) == []


def test_a_scoped_oauth2_proxy_passes() -> None:
    d = good_deployment()
    container(d)["args"] += ["--cookie-domain=.example.com", "--whitelist-domain=.example.com",
                             "--whitelist-domain=auth.example.com:8443", "--cookie-samesite=lax",
                             "--reverse-proxy=true", "--trusted-proxy-ip=10.0.0.0/8"]
    assert check("oauth2-proxy-cookie-and-redirect-scope", DEPLOYMENT, d) == []
    container(d)["image"] = "docker.io/library/nginx:1.29.0"  # not oauth2-proxy: not its business
    container(d)["args"].append("--cookie-domain=.com")
    assert check("oauth2-proxy-cookie-and-redirect-scope", DEPLOYMENT, d) == []


GROUPS = "groups-checked-at-the-gateway"
HSTS_POLICY = "hsts-on-gateway-hosts"


def _sidecar_allow(groups: list[str], annotations: Props | None = None) -> Props:
    meta: Props = {"name": "authproxy-admin-require-jwt", "namespace": "demo"}
    if annotations:
        meta["annotations"] = annotations
    return {"kind": "AuthorizationPolicy", "metadata": meta, "spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "admin"}}, "action": "ALLOW",
        "rules": [{"from": [{"source": {"requestPrincipals": ["https://kc/realms/r/*"]}}],
                   "when": [{"key": "request.auth.claims[groups]", "values": groups}]}]}}


def _gateway_deny(groups: list[str], hosts: list[str]) -> Props:
    return {"kind": "AuthorizationPolicy",
            "metadata": {"name": "authproxy-admin-gateway-authz", "namespace": "istio-ingress"},
            "spec": {"selector": {"matchLabels": {"istio": "ingressgateway"}}, "action": "DENY",
                     "rules": [{"to": [{"operation": {"hosts": hosts, "notPaths": ["/oauth2/*"]}}],
                                "when": [{"key": "request.auth.claims[groups]", "notValues": groups}]}]}}


def test_groups_checked_at_the_gateway_and_the_sidecar_pass() -> None:
    stack = [*gateway_stack(), (AUTHZ, _sidecar_allow(["/admins"]), "side"),
             (AUTHZ, _gateway_deny(["/admins"], ["admin.example.com", "admin.example.com:*"]), "gw-deny")]
    assert check_stack(GROUPS, stack) == []


@pytest.mark.parametrize("weaken", [
    pytest.param(lambda s: s.pop(), id="no-gateway-check"),
    pytest.param(lambda s: _find(s, "gw-deny")["spec"]["rules"][0]["when"][0].__setitem__(
        "notValues", ["/other"]), id="other-groups"),
    pytest.param(lambda s: _find(s, "gw-deny")["spec"]["selector"]["matchLabels"].__setitem__(
        "istio", "other"), id="on-another-gateway"),
    pytest.param(lambda s: _find(s, "gw-deny")["spec"].__setitem__("action", "ALLOW"), id="not-deny"),
])
def test_a_group_check_only_at_the_sidecar_is_reported(weaken) -> None:
    stack = [*gateway_stack(), (AUTHZ, _sidecar_allow(["/admins"]), "side"),
             (AUTHZ, _gateway_deny(["/admins"], ["admin.example.com", "admin.example.com:*"]), "gw-deny")]
    weaken(stack)
    (found,) = check_stack(GROUPS, stack)
    assert found[1] == urn(AUTHZ, "side")
    assert "checks groups ['/admins'] only at the app's sidecar" in found[0]
    assert "admin.example.com" in found[0]


def test_a_deliberate_sidecar_only_check_and_apps_no_gateway_routes_to_pass() -> None:
    marked = _sidecar_allow(["/admins"], {"authproxy.io/authorize-at": "sidecar"})
    assert check_stack(GROUPS, [*gateway_stack(), (AUTHZ, marked, "side")]) == []
    in_mesh_only = _sidecar_allow(["/admins"])
    in_mesh_only["metadata"]["namespace"] = "internal"
    assert check_stack(GROUPS, [*gateway_stack(), (AUTHZ, in_mesh_only, "side")]) == []


def _hsts_filter(hosts: list[str], value: str = "max-age=31536000") -> Props:
    return {"kind": "EnvoyFilter", "metadata": {"name": "authproxy-gateway-hardening",
                                                "namespace": "istio-ingress"},
            "spec": {"workloadSelector": {"labels": {"istio": "ingressgateway"}}, "configPatches": [
                {"applyTo": "VIRTUAL_HOST",
                 "match": {"context": "GATEWAY", "routeConfiguration": {"vhost": {"name": f"{h}:443"}}},
                 "patch": {"operation": "MERGE", "value": {"response_headers_to_add": [
                     {"header": {"key": "strict-transport-security", "value": value},
                      "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}}} for h in hosts]}}


ALL_HOSTS = ["auth.example.com", "echo.example.com", "admin.example.com"]


def _without_hsts(stack: list[Res]) -> list[str]:
    return sorted(m.split("'")[1] for m, _ in check_stack(HSTS_POLICY, stack))


def test_hsts_on_every_gateway_host_passes() -> None:
    assert check_stack(HSTS_POLICY, [*gateway_stack(), (ENVOYFILTER, _hsts_filter(ALL_HOSTS), "hsts")]) == []


def test_hosts_without_hsts_are_reported() -> None:
    assert _without_hsts(gateway_stack()) == sorted(ALL_HOSTS)
    assert _without_hsts([*gateway_stack(), (ENVOYFILTER, _hsts_filter(ALL_HOSTS[:2]), "hsts")]) == [
        "admin.example.com"]
    assert _without_hsts([*gateway_stack(), (ENVOYFILTER, _hsts_filter(ALL_HOSTS, "max-age=0"), "hsts")]) == sorted(
        ALL_HOSTS)
    other = _hsts_filter(ALL_HOSTS)
    other["spec"]["workloadSelector"]["labels"]["istio"] = "other"
    assert _without_hsts([*gateway_stack(), (ENVOYFILTER, other, "hsts")]) == sorted(ALL_HOSTS)
    # on every route of a VirtualService counts too; on some routes does not
    stack = gateway_stack()
    for route in _find(stack, "vs-admin")["spec"]["http"]:
        route["headers"] = {"response": {"set": {"Strict-Transport-Security": "max-age=600"}}}
    assert "admin.example.com" not in _without_hsts(stack)
    _find(stack, "vs-admin")["spec"]["http"].append({"name": "extra", "route": [
        {"destination": {"host": "admin.demo.svc.cluster.local"}}]})
    assert "admin.example.com" in _without_hsts(stack)


def test_every_stack_policy_has_a_failing_case() -> None:
    """The stack policies are exercised above; this keeps the list honest when one is added."""
    assert {p.name for p in P.POLICIES if isinstance(p, StackValidationPolicy)} == {
        HOSTS, "exported-mesh-config-fails-closed", COOKIES, GROUPS, HSTS_POLICY,
        "ambient-l7-policies-on-waypoints"}


# --------------------------------------------------------------------------------------------
# The real stacks: every resource passes every policy
# --------------------------------------------------------------------------------------------

STACKS = [(s, m) for s in ("dev", "prod", "gateway-api", "ambient")
          for m in ("extension-provider", "envoy-filter")]


@pytest.fixture(scope="module", params=STACKS, ids=[f"{s}-{m}" for s, m in STACKS])
def stack_run(request: pytest.FixtureRequest) -> tuple[str, mockrun.Run]:
    stack, mode = request.param
    return f"{stack}-{mode}", mockrun.run_program(
        stack, overrides={"istio": {"extAuthzMode": mode}}
    )


def stack_resources(run: mockrun.Run, stack: str) -> list[Res]:
    """Every registered resource (wire form, secrets marked) and the stack with its outputs."""
    out: list[Res] = [(r.type, r.wire_inputs, r.name) for r in run.resources]
    out.append(("pulumi:pulumi:Stack", dict(run.outputs), f"authproxy-{stack}"))
    return out


def test_every_resource_of_the_stacks_passes_every_policy(
    stack_run: tuple[str, mockrun.Run],
) -> None:
    name, run = stack_run
    resources = stack_resources(run, name)
    types = {t for t, _, _ in resources}
    # The sweep only means something if the checked kinds are there.
    routes = (HTTPROUTE, K8S_GATEWAY) if name.startswith("gateway-api") else (VS, GATEWAY)
    for needed in (CLIENT, DEPLOYMENT, RELEASE, *routes, "kubernetes:core/v1:Secret"):
        assert needed in types, f"{name}: no {needed} in the stack"
    violations: list[str] = []
    for policy in P.POLICIES:
        if isinstance(policy, ResourceValidationPolicy):
            for type_, props, res_name in resources:
                violations += [f"{policy.name} {res_name}: {m}" for m in
                               check(policy.name, type_, props, res_name)]
        else:
            violations += [f"{policy.name}: {m}" for m, _ in
                           check_stack(policy.name, resources)]
    assert violations == []


def _is_guard(type_: str, props: Props) -> bool:
    """The CUSTOM AuthorizationPolicy or the ext_authz EnvoyFilter of a stack."""
    if type_ == AUTHZ:
        return bool(props["spec"].get("action") == "CUSTOM")
    # An EnvoyFilter that inserts the filter (a MERGE, such as the check-retry filter of
    # extension-provider mode, only adjusts the filter the CUSTOM policy made).
    return type_ == ENVOYFILTER and any(
        P.EXT_AUTHZ_TYPE in json.dumps(patch) and patch["patch"]["operation"].startswith("INSERT")
        for patch in props["spec"]["configPatches"])


def test_the_stacks_fail_the_pack_when_weakened(stack_run: tuple[str, mockrun.Run]) -> None:
    """The same sweep catches a weakened copy of the real stack, not only the synthetic cases."""
    name, run = stack_run
    resources = copy.deepcopy(stack_resources(run, name))
    app_hosts = sorted(u.split("/")[2] for u in run.plain_output("protectedUrls"))
    # Without its ext_authz guard every app host is reported (the auth host is exempt: it routes
    # to oauth2-proxy alone).
    unguarded = [r for r in resources if not _is_guard(r[0], r[1])]
    assert len(unguarded) == len(resources) - 1
    assert sorted(_uncovered(unguarded)) == app_hosts
    # A wildcard redirect URI, a fail-open exported mesh config.
    client = next(p for t, p, _ in resources if t == CLIENT)
    client["validRedirectUris"] = ["https://*"]
    assert check("oidc-client-exact-https-redirect-uris", CLIENT, client)
    resources[-1][1]["meshConfig"] = {"extensionProviders": [
        {"name": "x", "envoyExtAuthzHttp": {"failOpen": True}}]}
    assert check_stack("exported-mesh-config-fails-closed", resources)
    # Without the cookie filter every app route leaks the session cookie.
    assert check_stack(COOKIES, resources) == []
    no_strip = [r for r in resources if not (r[0] == ENVOYFILTER and r[2].endswith("-cookie-strip"))]
    assert len(no_strip) == len(resources) - 1
    assert {h for _, h in _leaks(no_strip)} == set(app_hosts)
    # The gateway's group checks removed: the apps with groups are checked at their sidecars only.
    assert check_stack(GROUPS, resources) == []
    no_gw_groups = [r for r in resources if not (r[0] == AUTHZ and r[2].startswith("authproxy-authz-gateway-"))]
    grouped = sorted(urn(t, n) for t, p, n in resources if t == AUTHZ and n.startswith("authproxy-authz-app-")
                     and "request.auth.claims[groups]" in json.dumps(p) and "selector" in p["spec"])
    if name.startswith("ambient"):
        # Ambient apps' group checks run in the waypoint (targetRefs to the Service), which every
        # request to the Service passes (istio.io/use-waypoint, also from the gateway): no pod of
        # the Service is reached around it, so the rule has nothing to report.
        assert not grouped and check_stack(GROUPS, no_gw_groups) == []
    else:
        assert grouped and sorted(str(u) for _, u in check_stack(GROUPS, no_gw_groups)) == grouped
    # Without the hardening EnvoyFilter no host gets HSTS.
    no_hsts = [r for r in resources if not (r[0] == ENVOYFILTER and r[2].endswith("-hardening"))]
    assert {m.split("'")[1] for m, _ in check_stack(HSTS_POLICY, no_hsts)} >= set(app_hosts)
    # In extension-provider mode the CUSTOM policy lists hosts: a new one must be added to it.
    if name.endswith("extension-provider"):
        route_type, hosts_field = (HTTPROUTE, "hostnames") if name.startswith("gateway-api") else (VS, "hosts")
        app_vs = next(p for t, p, n in resources if t == route_type and "app" in n)
        app_vs["spec"][hosts_field].append("unguarded.example.com")
        assert _uncovered(resources) == ["unguarded.example.com"]


GATEWAY_API_STACKS = [m for s, m in STACKS if s == "gateway-api"]


@pytest.mark.parametrize("mode", GATEWAY_API_STACKS)
def test_a_weakened_gateway_api_stack_fails_the_pack(mode: str) -> None:
    """Gateway API attachment: the guards and the cookie filter count only for the Gateway their
    targetRefs name, routes count by their parentRefs, rules by their names."""
    run = mockrun.run_program("gateway-api", overrides={"istio": {"extAuthzMode": mode}})
    resources = stack_resources(run, "gateway-api")
    app_hosts = sorted(u.split("/")[2] for u in run.plain_output("protectedUrls"))
    assert _uncovered(resources) == [] and _leaks(resources) == []

    def retargeted(pred: Any) -> list[Res]:
        out = copy.deepcopy(resources)
        for t, p, n in out:
            if pred(t, p, n):
                assert p["spec"]["targetRefs"][0]["name"] == "authproxy"
                p["spec"]["targetRefs"][0]["name"] = "another-gateway"
        return out

    # ext_authz attached to another Gateway: every app host is open.
    assert sorted(_uncovered(retargeted(lambda t, p, n: _is_guard(t, p)))) == app_hosts
    # The same policy by a workload selector that does not select the Gateway's pods, too.
    by_selector = copy.deepcopy(resources)
    for t, p, _ in by_selector:
        if _is_guard(t, p):
            p["spec"].pop("targetRefs")
            key = "selector" if t == AUTHZ else "workloadSelector"
            p["spec"][key] = ({"matchLabels": {"istio": "ingressgateway"}} if t == AUTHZ
                              else {"labels": {"istio": "ingressgateway"}})
    assert sorted(_uncovered(by_selector)) == app_hosts
    # ... while selecting the label istiod gives the Gateway's pods covers them again.
    for t, p, _ in by_selector:
        if _is_guard(t, p):
            sel = p["spec"].get("selector", {}).get("matchLabels") or p["spec"]["workloadSelector"]["labels"]
            sel.clear()
            sel[P.GATEWAY_NAME_LABEL] = "authproxy"
    assert _uncovered(by_selector) == []
    # The cookie filter attached to another Gateway: every app route leaks the session cookie.
    leaking = retargeted(lambda t, p, n: t == ENVOYFILTER and n.endswith("-cookie-strip"))
    assert {h for _, h in _leaks(leaking)} == set(app_hosts)
    # An HTTPRoute attached to another Gateway (no guard there) is reported.
    other = copy.deepcopy(resources)
    route = next(p for t, p, n in other if t == HTTPROUTE and n.endswith("app-echo"))
    route["spec"]["parentRefs"][0]["name"] = "another-gateway"
    assert _uncovered(other) == ["echo.authproxy.test"]
    if mode == "envoy-filter":
        # ext_authz switched off on a catch-all rule (by its Envoy route name) opens the host.
        off = copy.deepcopy(resources)
        ef = next(p for t, p, n in off if t == ENVOYFILTER and _is_guard(t, p))
        patch = next(x for x in ef["spec"]["configPatches"] if x["applyTo"] == "HTTP_ROUTE")
        patch["match"]["routeConfiguration"]["vhost"] = {
            "name": "admin.authproxy.test:443", "route": {"name": "admin-default"}}
        assert _uncovered(off) == ["admin.authproxy.test"]
    # Unnamed rules are named as istiod names them (namespace.route.index): a per-route switch-off
    # of the old name no longer matches anything, and the unnamed catch-all rule stays guarded.
    unnamed = copy.deepcopy(resources)
    for t, p, _n in unnamed:
        if t == HTTPROUTE:
            for rule in p["spec"]["rules"]:
                rule.pop("name", None)
    assert _uncovered(unnamed) == []


# --------------------------------------------------------------------------------------------
# The pack's entry point, as the engine runs it
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """`python policy` (what Pulumi runs): the pack prints its port and serves the analyzer."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "policy")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.isdigit(), f"no port from the pack: {port!r} {proc.stderr and proc.stderr.read()}"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _struct(props: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    json_format.ParseDict(json.loads(json.dumps(props)), s)
    return s


def test_the_pack_serves_every_policy_as_mandatory(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == P.PACK_NAME
    assert [p.name for p in info.policies] == [p.name for p in P.POLICIES]
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}


def test_the_pack_reports_a_mandatory_violation_over_grpc(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    bad = good_client()
    bad["directAccessGrantsEnabled"] = True
    request = analyzer_pb2.AnalyzeRequest(type=CLIENT, properties=_struct(bad),
                                          urn=urn(CLIENT, "client"), name="client")
    found = analyzer.Analyze(request, timeout=30).diagnostics
    assert [(d.policyName, d.enforcementLevel) for d in found] == [
        ("oidc-client-no-implicit-or-password-grant", analyzer_pb2.MANDATORY)]
    request = analyzer_pb2.AnalyzeRequest(type=CLIENT, properties=_struct(good_client()),
                                          urn=urn(CLIENT, "client"), name="client")
    assert list(analyzer.Analyze(request, timeout=30).diagnostics) == []


def test_the_pack_passes_the_dev_stack_over_grpc(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    run = mockrun.run_program("dev")
    resources = stack_resources(run, "dev")
    for type_, props, name in resources:
        request = analyzer_pb2.AnalyzeRequest(type=type_, properties=_struct(props),
                                              urn=urn(type_, name), name=name)
        assert list(analyzer.Analyze(request, timeout=30).diagnostics) == [], name
    stack = analyzer_pb2.AnalyzeStackRequest(resources=[
        analyzer_pb2.AnalyzerResource(type=t, properties=_struct(p), urn=urn(t, n), name=n)
        for t, p, n in resources
    ])
    assert list(analyzer.AnalyzeStack(stack, timeout=30).diagnostics) == []
    # One weakened resource in the same stack: the stack policy reports it.
    vs = next(p for t, p, n in resources if t == VS and "app" in n)
    vs["spec"]["hosts"].append("unguarded.authproxy.test")
    stack = analyzer_pb2.AnalyzeStackRequest(resources=[
        analyzer_pb2.AnalyzerResource(type=t, properties=_struct(p), urn=urn(t, n), name=n)
        for t, p, n in resources
    ])
    found = analyzer.AnalyzeStack(stack, timeout=30).diagnostics
    # the host is neither behind ext_authz nor given HSTS
    assert sorted((d.policyName, d.enforcementLevel) for d in found) == [
        (HOSTS, analyzer_pb2.MANDATORY), (HSTS_POLICY, analyzer_pb2.MANDATORY)]
    assert all("unguarded.authproxy.test" in d.message for d in found)


# --------------------------------------------------------------------------------------------
# Ambient namespaces: no selector-bound L7 policies (ztunnel would enforce them)
# --------------------------------------------------------------------------------------------

AMBIENT_L7 = "ambient-l7-policies-on-waypoints"
REQUEST_AUTHN = "kubernetes:security.istio.io/v1:RequestAuthentication"
SERVICE_PATCH = "kubernetes:core/v1:ServicePatch"
NAMESPACE = "kubernetes:core/v1:Namespace"


def _ambient_marker(ns: str = "apps") -> Res:
    return (SERVICE_PATCH, {"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "one", "namespace": ns, "labels": {"istio.io/use-waypoint": "wp"}}}, "one-patch")


def _policy(spec: Props, kind: str = "AuthorizationPolicy", ns: str = "apps") -> Res:
    type_ = AUTHZ if kind == "AuthorizationPolicy" else REQUEST_AUTHN
    return (type_, {"apiVersion": "security.istio.io/v1", "kind": kind,
                    "metadata": {"name": "p", "namespace": ns}, "spec": spec}, "p")


SELECTOR = {"matchLabels": {"app": "one"}}
TARGET = [{"group": "", "kind": "Service", "name": "one"}]
JWT_ALLOW = {"action": "ALLOW", "rules": [{"from": [{"source": {"requestPrincipals": ["i/*"]}}],
                                          "when": [{"key": "request.auth.claims[groups]",
                                                    "values": ["admins"]}]}]}


@pytest.mark.parametrize("spec,kind,found", [
    ({**JWT_ALLOW, "selector": SELECTOR}, "AuthorizationPolicy",
     "from.source.requestPrincipals, when request.auth.claims[groups]"),
    ({"selector": SELECTOR, "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/a"]}}]}]},
     "AuthorizationPolicy", "to.operation.paths"),
    ({"action": "CUSTOM", "provider": {"name": "x"}, "rules": [{}]}, "AuthorizationPolicy",
     "action CUSTOM"),
    ({"selector": SELECTOR, "jwtRules": [{"issuer": "i"}]}, "RequestAuthentication", "jwtRules"),
])
def test_selector_l7_policies_in_ambient_namespaces_are_rejected(spec, kind, found) -> None:
    out = check_stack(AMBIENT_L7, [_ambient_marker(), _policy(spec, kind)])
    assert len(out) == 1 and found in out[0][0] and "targetRefs" in out[0][0], out
    # the same policy with targetRefs (waypoint), or outside an ambient namespace, is fine
    attached = {k: v for k, v in spec.items() if k != "selector"} | {"targetRefs": TARGET}
    assert check_stack(AMBIENT_L7, [_ambient_marker(), _policy(attached, kind)]) == []
    assert check_stack(AMBIENT_L7, [_ambient_marker("other"), _policy(spec, kind)]) == []


def test_l4_selector_policies_pass_in_ambient_namespaces() -> None:
    l4 = {"selector": SELECTOR, "action": "DENY", "rules": [
        {"from": [{"source": {"notPrincipals": ["*/ns/apps/sa/wp"], "namespaces": ["x"]}}],
         "to": [{"operation": {"ports": ["8080"]}}],
         "when": [{"key": "source.ip", "values": ["10.0.0.1"]}]}]}
    assert check_stack(AMBIENT_L7, [_ambient_marker(), _policy(l4)]) == []


@pytest.mark.parametrize("marker", [
    (NAMESPACE, {"metadata": {"name": "apps", "labels": {"istio.io/dataplane-mode": "ambient"}}}, "ns"),
    (K8S_GATEWAY, {"metadata": {"name": "wp", "namespace": "apps"},
                   "spec": {"gatewayClassName": "istio-waypoint"}}, "wp"),
    (SERVICE, {"metadata": {"name": "one", "namespace": "apps",
                            "labels": {"istio.io/use-waypoint": "wp"}}}, "svc"),
])
def test_ambient_namespaces_are_recognised(marker: Res) -> None:
    bad = _policy({**JWT_ALLOW, "selector": SELECTOR})
    assert len(check_stack(AMBIENT_L7, [marker, bad])) == 1
    assert check_stack(AMBIENT_L7, [bad]) == []
    assert len(check_stack(AMBIENT_L7, [bad], {"ambientNamespaces": ["apps"]})) == 1


def test_the_ambient_stack_fails_the_pack_with_sidecar_style_policies() -> None:
    """What the stack created for an app before ambient support (selector-bound JWT and group
    policies) is what the pack now refuses in the ambient stack's namespace."""
    run = mockrun.run_program("ambient")
    resources = stack_resources(run, "ambient")
    assert check_stack(AMBIENT_L7, resources) == []
    weakened = copy.deepcopy(resources)
    for type_, props, _ in weakened:
        if type_ in (AUTHZ, REQUEST_AUTHN) and props["spec"].get("targetRefs"):
            props["spec"].pop("targetRefs")
            props["spec"]["selector"] = SELECTOR
    out = check_stack(AMBIENT_L7, weakened)
    names = sorted(m.split()[1] for m, _ in out)
    assert names == sorted(f"demo/authproxy-{a}-{s}" for a in ("echo", "admin")
                           for s in ("jwt", "require-jwt", "deny-unsigned")), names


def test_a_stack_on_an_existing_gateway_passes_every_stack_policy() -> None:
    """istio.gatewayApi.create false (make engine's gateway-api-existing stack): the routes and
    policies attach to a Gateway the stack does not create; its gateway DENY policies, attached by
    targetRefs, still count as the group check at that gateway."""
    from components.config import existing_gateway_values

    run = mockrun.run_program("gateway-api", overrides=existing_gateway_values("shared-gateway", "web", "websecure"))
    resources = stack_resources(run, "gateway-api-existing")
    assert K8S_GATEWAY not in {t for t, _, _ in resources}
    assert any(t == AUTHZ and p["spec"].get("action") == "DENY" and p["spec"].get("targetRefs")
               for t, p, _ in resources)
    violations = [f"{policy.name}: {m}" for policy in P.POLICIES
                  if not isinstance(policy, ResourceValidationPolicy)
                  for m, _ in check_stack(policy.name, resources)]
    assert violations == []
