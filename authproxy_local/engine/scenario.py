"""`make engine`: the stacks through the real Pulumi engine, providers and servers.

On this machine (no cluster, no Docker, no GitHub) it starts etcd and kube-apiserver on loopback
(throw-away CA, serving and admin client certificates, service-account keys) with
kube-controller-manager, kube-scheduler and three kwok nodes (:mod:`authproxy_local.cluster.controllers`),
installs the CRDs the stacks use (Istio's, from the istio.io/istio Go module; the Gateway API's,
from the sigs.k8s.io/gateway-api module), starts a real Keycloak over HTTPS, logs the pulumi CLI
into a file backend in a temp dir and then, for each stack, without ``kubernetes.skipAwait`` (so
`pulumi up` waits for rollouts, the Helm release and Services as on a real cluster), runs

    pulumi preview against the cluster without what the stack needs: the preflight refuses
    (then the objects a ready cluster holds are made, and checks an earlier failure hid are
    broken alone: the preflight refuses each)
    pulumi preview; pulumi preview --policy-pack policy; pulumi up --yes
    (checks on the real Keycloak and API server: every workload rolled out when `up` returned)
    pulumi preview --expect-no-changes
    with an HPA: its minimum raised -> the HPA controller scales; no diff on the next preview
    a drain-style eviction: one pod let through, the next refused by the PodDisruptionBudget
    rotation.cookieSecret bump -> preview shows exactly the secret and the rollout; `pulumi up`
      returns with the new ReplicaSet ready and the old one at zero
    pulumi destroy --yes (checks nothing is left, no pod runs, the namespace is gone)

On the first stack, faults a real cluster produces, each failing and then converging
(:mod:`.faults`): a Redis that is not ready in time (first install and upgrade), an oauth2-proxy
image that never pulls, an `up` killed during a rollout.

The stacks are the checked-in `Pulumi.<stack>.yaml` files (dev in both ext_authz modes, prod with
its pre-made realm and admin client and the cert-manager/ServiceMonitor CRDs from their Go
modules); `--interrupt` also kills the first stack's `up` halfway (SIGKILL) and recovers it as
README's troubleshooting says (cancel, refresh importing/clearing pending creates, up); the
local servers are set through stack config only (`pulumi config set`), exactly as a user
points a stack at their own Keycloak and cluster. Every tool comes from `authproxy_local.install`
(CI=true: a missing one fails the run).
The last line is the summary `engine: <n> stacks up (awaited), <k> resources, <r> rollouts
observed, ...`; above it `preflight: <n> checks, each failed once and passed once`
(:mod:`.preflight`) and the fault cases.

The stacks go through ``pulumi.automation`` (:mod:`authproxy_local.cluster.stacks`); the
interrupt check and secret config use the raw CLI (see there).

Imports: the library rooms (cluster, keycloak, install, core, render) and ``components.config``;
nothing imports this scenario.
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from authproxy_local import install
from authproxy_local.cluster.apiserver import Cluster
from authproxy_local.cluster.controllers import ControlPlane
from authproxy_local.cluster.crds import cluster_crds
from authproxy_local.cluster.ready import ready_cluster
from authproxy_local.cluster.stacks import Project, changes
from authproxy_local.core.processes import free_port
from authproxy_local.keycloak.admin import AdminSession, create_existing, make_password
from authproxy_local.keycloak.server import ADMIN_USER, KeycloakServer
from authproxy_local.render import deep_merge, project_config
from components.config import (
    KEYCLOAK_ADMIN_PASSWORD_KEY,
    SECRET_KEYS,
    StackConfig,
    admin_client_secret_key,
    cookie_secret_rotation_values,
    existing_gateway_values,
    ext_authz_mode_values,
    load,
    local_server_values,
    namespace_values,
    preflight_values,
    replica_values,
)
from components.oauth2_proxy import proxy_labels
from components.stack import PROXY_NAME

from . import checks, faults
from .checks import EngineError, log
from .interrupt import check_interrupted_up
from .preflight import BREAKS, PreflightProof, Staging
from .workloads import (
    Workloads,
    check_drain,
    check_nothing_runs,
    check_rotation_rolled,
    rollout_finished,
)

EXISTING_NAMESPACES = ("istio-ingress", "demo", "monitoring", "wiki")
"""What the stacks expect to exist in a user's cluster: the apps' namespaces and the gateway's
(made by the Istio install, which is not part of these stacks here)."""


@dataclass
class StackRun:
    name: str
    resources: int = 0
    rollouts: int = 0
    """Rollouts asserted on the API server when `pulumi up` returned (each workload of the first
    `up`, each rotation, each fault's converging `up`)."""
    timings: dict[str, float] = field(default_factory=dict)
    interrupted: dict[str, Any] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    """One line per fault case: how it failed and that the next `up` converged."""


class Engine:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.cluster = Cluster(work / "cluster")
        self.plane = ControlPlane(self.cluster)
        self.password = base64.urlsafe_b64encode(os.urandom(18)).decode()
        self.keycloak: KeycloakServer | None = None
        self.kc: AdminSession | None = None
        self.project: Project | None = None
        self.existing_realm: str | None = None
        self.admin_client_secret = ""
        self.proof = PreflightProof()
        self.timings: dict[str, float] = {}
        """Start-up phase -> seconds (cluster, CRDs, control plane, Keycloak), printed at the end."""

    @contextlib.contextmanager
    def running(self) -> Iterator[Engine]:
        try:
            yield self.start()
        finally:
            if self.keycloak is not None:
                self.keycloak.stop()
            self.plane.stop()
            self.cluster.stop()

    def start(self) -> Engine:
        self.project = Project(self.work)
        t0 = time.monotonic()
        self.cluster.start()
        self.timings["kube-apiserver"] = time.monotonic() - t0
        n = self.cluster.apply_crds(cluster_crds())
        self.timings["CRDs"] = time.monotonic() - t0 - sum(self.timings.values())
        log(f"{n} CRDs established (Istio, cert-manager, ServiceMonitor, Gateway API "
            f"{install.VERSIONS['gateway-api']} standard channel)")
        self.cluster.create_namespaces(EXISTING_NAMESPACES)
        self.plane.start()
        self.timings["control plane"] = time.monotonic() - t0 - sum(self.timings.values())
        # The apps' Services the ambient stack patches exist before its `up`, as in a user's
        # cluster: the staging of each stack's ready cluster makes them (and removes them after the
        # destroy checks saw them kept), so no other stack finds them with the ambient selector.
        pki = self.cluster.pki
        port = free_port()
        self.keycloak = KeycloakServer(
            work=self.work, admin_password=self.password, hostname=f"https://127.0.0.1:{port}",
            log_path=self.work / "keycloak.log", https_port=port,
            cert_file=str(pki["keycloak_cert"]), key_file=str(pki["keycloak_key"]))
        t = self.keycloak.start()
        self.timings["Keycloak"] = time.monotonic() - t0 - sum(self.timings.values())
        log(f"Keycloak {install.VERSIONS['keycloak']} ready in {t:.1f}s on {self.keycloak.hostname}")
        self.kc = AdminSession(self.keycloak.hostname, ADMIN_USER, self.password, verify=str(pki["ca"]))
        return self

    @property
    def p(self) -> Project:
        assert self.project is not None
        return self.project

    @property
    def admin(self) -> AdminSession:
        assert self.kc is not None
        return self.kc

    # ---- stack config: the local servers, through stack config only ----
    def init_stack(self, stack: str, base: str | None, overrides: dict[str, Any],
                   values: dict[str, Any] | None = None) -> auto.Stack:
        """A stack from a checked-in Pulumi.<base>.yaml (or generated ``values``), pointed at the
        local servers with ``pulumi config set --path``, as a user points a stack at theirs."""
        assert self.keycloak is not None
        st = self.p.stack(stack, base=base)
        if values is not None:
            self.p.write_config(st, values)
        local = local_server_values(keycloak_ca_pem=Path(self.cluster.pki["ca"]).read_text(),
                                    redis_chart_path=str(install.ensure("redis-ha-chart")),
                                    keycloak_url=self.keycloak.hostname, awaited=True,
                                    stack_values=values if values is not None else project_config(base or stack))
        # kubernetes:clusterIdentifier: without it, any change of the kubeconfig (a fixed server
        # address, a moved file) replaces the provider and so every object, and the Helm release
        # then collides with itself ("cannot re-use a name that is still in use"); found by the
        # unreachable-API-server check.
        self.p.set_config(st, deep_merge(local, overrides),
                          provider={"kubernetes:kubeconfig": str(self.cluster.kubeconfig),
                                    "kubernetes:clusterIdentifier": "engine-test-cluster"},
                          secrets={KEYCLOAK_ADMIN_PASSWORD_KEY: self.password})
        return st

    def expect_failure(self, st: auto.Stack, what: str, op: str, must_say: list[str]) -> str:
        """Run ``op`` (preview or up), which must fail with a message a user understands (no
        traceback through the project's code)."""
        fn = st.preview if op == "preview" else (lambda: st.up())
        out = self.p.attempt(op, st, fn)
        if out is None:
            raise EngineError(f"{st.name}: {what}: `pulumi {op}` succeeded")
        if "Traceback (most recent call last)" in out:
            # When a resource fails, the engine cancels the still-running program and Pulumi's
            # Python runtime prints the KeyboardInterrupt it gets (upstream, not this project).
            # A traceback through the project's own code is a bug here.
            ours = [ln for ln in out.splitlines() if "File " in ln and ("/components/" in ln or "__main__.py" in ln)]
            if ours or "KeyboardInterrupt" not in out:
                raise EngineError(f"{st.name}: {what}: a Python traceback reached the user:\n{out[-2000:]}")
            log(f"{st.name}: {what}: note: Pulumi's Python runtime printed a KeyboardInterrupt traceback "
                "when the engine cancelled the program (upstream)")
        missing = [m for m in must_say if m not in out]
        if missing:
            raise EngineError(f"{st.name}: {what}: the error does not say {missing}:\n{out[-2000:]}")
        line = next((ln.strip() for ln in out.splitlines() if any(m in ln for m in must_say)), "")
        log(f"{st.name}: {what}: fails as expected: {line[:160]}")
        return out

    def check_invalid_config(self) -> None:
        """Invalid config: non-zero, every problem by key, nothing created."""
        stack = "invalid"
        # Deliberately wrong values (test data of this check): a Redis mode that does not exist, a
        # cookie name with a space.
        st = self.init_stack(stack, "dev", {"redis": {"mode": "cluster"}, "session": {"cookieName": "bad name"}})
        self.expect_failure(st, "invalid config", "preview",
                            ["invalid stack configuration", "authproxy:redis.mode", "authproxy:session.cookieName"])
        self.expect_failure(st, "invalid config", "up", ["invalid stack configuration"])
        left = [r for r in self.p.resources(stack) if r["type"] != "pulumi:pulumi:Stack"]
        if left:
            raise EngineError(f"invalid config created {len(left)} resources: {[r['urn'] for r in left]}")
        self.p.remove(stack, force=True)

    def check_faults_then_converge(self, st: auto.Stack) -> None:
        """Wrong Keycloak admin password, then an unreachable API server: `pulumi up` fails with a
        message a user understands; once fixed, the next `up` converges."""
        wrong = "wrong-" + base64.urlsafe_b64encode(os.urandom(9)).decode()
        self.p.set_secret(st.name, KEYCLOAK_ADMIN_PASSWORD_KEY, wrong)
        self.expect_failure(st, "wrong Keycloak admin password", "up", ["openid-connect/token", "Bad Request"])
        self.p.set_secret(st.name, KEYCLOAK_ADMIN_PASSWORD_KEY, self.password)
        self.p.set_config(st, provider={"kubernetes:kubeconfig": str(self.bad_kubeconfig())})
        self.expect_failure(st, "API server unreachable", "up",
                            ["cannot reach the Kubernetes API server", "Connection refused"])
        self.p.set_config(st, provider={"kubernetes:kubeconfig": str(self.cluster.kubeconfig)})

    def bad_kubeconfig(self) -> Path:
        """The kubeconfig with the server moved to a port nobody listens on."""
        path = self.work / "kubeconfig-unreachable"
        text = self.cluster.kubeconfig.read_text().replace(self.cluster.server, f"https://127.0.0.1:{free_port()}")
        path.write_text(text)
        return path

    def run_stack(self, stack: str, base: str, overrides: dict[str, Any], with_faults: tuple[str, ...] = (),
                  interrupt: bool = False) -> StackRun:
        """One stack from preview to destroy; ``with_faults`` names the fault cases to run on it
        (:data:`FAULTS`)."""
        p = self.p
        run = StackRun(stack)
        t_stack = time.monotonic()

        def timed(what: str, fn: Any, *a: Any, **kw: Any) -> Any:
            t0 = time.monotonic()
            out = fn(*a, **kw)
            run.timings[what] = run.timings.get(what, 0.0) + time.monotonic() - t0
            return out

        cfg = load(deep_merge(project_config(base), overrides), secrets_set=SECRET_KEYS)
        w = Workloads(self.cluster, cfg.namespace)
        st = self.init_stack(stack, base, overrides)
        # The preflight against the cluster as it is: nothing the stack needs is there (nor, for
        # an existing realm, the realm; the nodes cordoned and no default StorageClass), so the
        # preview must stop in it, naming the checks. (The admin client's secret is not made yet
        # either; any value passes validation, and the preflight stops the run before the
        # provider would use it.)
        client_key = admin_client_secret_key(cfg)
        if client_key:
            p.set_secret(stack, client_key, make_password(40))
        t_pre = time.monotonic()
        with self.plane.withheld():
            self.proof.saw_failures(stack, p.attempt("preview", st, st.preview))
        self.no_resources(stack, "a preview the preflight refused")
        self.existing_realm = self.premade_keycloak(stack, base)
        gateway_uid = self.existing_gateway(cfg)
        staging = Staging(self.cluster)
        # The control plane's own nodes (kwok's, with room and zones) stand for the ready nodes.
        ready = [o for o in ready_cluster(cfg).objects if o["kind"] != "Node"]
        log(f"{stack}: made what the stack needs in the cluster: {staging.create(ready)} objects")
        for name, (op, breaks) in BREAKS.items():
            if name in self.proof.failed:
                continue
            restore = staging.break_one(breaks(ready), ready)
            fn = st.preview if op == "preview" else (lambda: st.up())
            self.proof.saw_failures(stack, p.attempt(op, st, fn), must=[name])
            self.no_resources(stack, f"a refused {op}")
            restore()
        run.timings["preflight refusals"] = time.monotonic() - t_pre

        steps = timed("preview", p.preview, st)
        self.proof.saw_pass(stack, cfg)  # the same preflight, now with everything there
        creates = [s for s in steps if s.op == "create"]
        log(f"{stack}: preview plans {len(creates)} creates")
        if not creates:
            raise EngineError(f"{stack}: preview plans no creates")
        timed("preview+policy", p.preview, st, policy_packs=["policy"])
        first_install = ""
        if "redis-install" in with_faults:  # before any `up` installs Redis
            first_install = timed("faults", faults.redis_install_not_ready, self, st, cfg, w)
        if "config" in with_faults:  # before any `up` makes the Keycloak objects
            timed("faults", self.check_faults_then_converge, st)
        if interrupt:
            run.interrupted = timed("interrupt", check_interrupted_up, p, self.cluster, self.admin, stack)
        timed("up", p.up, st)
        run.rollouts += w.assert_rolled_out(stack, "first up")
        resources = p.resources(stack)
        run.resources = len(resources)
        log(f"{stack}: up created {run.resources} resources ({run.timings['up']:.0f}s); "
            f"{run.rollouts} workloads rolled out when it returned: {w.deployments()[0]['metadata']['name']}, "
            f"{', '.join(s['metadata']['name'] for s in w.statefulsets())}")
        if first_install:
            run.faults.append(f"{first_install}; fixed -> the next `up` converged")
        checks.verify_keycloak(self.admin, stack, resources, self.existing_realm)
        checks.verify_kubernetes(self.cluster, stack, resources)
        helm_made = checks.helm_objects(self.cluster, resources)
        checks.verify_state_secrets(stack, p.export(stack), p.state_text(stack))

        again = changes(timed("re-preview", p.preview, st))
        if again:
            raise EngineError(f"{stack}: perpetual diff, a second preview still plans {again}")
        p.preview(st, expect_no_changes=True)

        for name in with_faults:
            if name in FAULTS:
                line, n = timed("faults", FAULTS[name], self, st, cfg, w)
                run.faults.append(line)
                run.rollouts += n
        hpa_count = timed("HPA", self.check_hpa, st, cfg, w) if cfg.proxy.autoscaling.enabled else None
        if w.deployment(PROXY_NAME)["spec"]["replicas"] >= 2:
            timed("drain", check_drain, w, self.plane, stack, PROXY_NAME, proxy_labels(PROXY_NAME))

        before = {rs["metadata"]["name"] for rs in w.replicasets()}
        p.set_config(st, cookie_secret_rotation_values(cfg))
        rot = changes(p.preview(st))
        log(f"{stack}: cookie-secret rotation previews {rot}")
        checks.check_rotation(stack, rot)
        timed("rotation up", p.up, st)
        check_rotation_rolled(w, stack, PROXY_NAME, before)
        run.rollouts += 1
        if hpa_count is not None and w.deployment(PROXY_NAME)["spec"]["replicas"] != hpa_count:
            raise EngineError(f"{stack}: the rotation's `up` reset the HPA's count {hpa_count} to "
                              f"{w.deployment(PROXY_NAME)['spec']['replicas']}")

        timed("destroy", p.destroy, st)
        left = p.resources(stack)
        if left:
            raise EngineError(f"{stack}: {len(left)} resources left in the state after destroy")
        checks.verify_gone(self.cluster, self.admin, stack, resources, self.existing_realm)
        check_nothing_runs(self.cluster, stack, [cfg.namespace])
        if gateway_uid:
            self.check_gateway_kept(cfg, gateway_uid)
        checks.verify_helm_objects_gone(self.cluster, stack, helm_made)
        p.remove(stack)
        staging.delete()  # the next stack starts from a cluster without them again
        run.timings["stack"] = time.monotonic() - t_stack
        return run

    def no_resources(self, stack: str, what: str) -> None:
        left = [r for r in self.p.resources(stack) if r["type"] != "pulumi:pulumi:Stack"]
        if left:
            raise EngineError(f"{stack}: {what} created {len(left)} resources: {[r['urn'] for r in left]}")

    def check_hpa(self, st: auto.Stack, cfg: StackConfig, w: Workloads) -> int:
        """The stack and the HPA do not fight over `replicas`: the HPA's minimum raised through the
        stack, the HPA controller scales the Deployment, and the next preview plans nothing, also
        after `proxy.replicas` changed within the HPA's range. Returns the HPA's count."""
        a = cfg.proxy.autoscaling
        start = w.deployment(PROXY_NAME)["spec"]["replicas"]
        target = min(a.min_replicas + 1, a.max_replicas)
        self.p.set_config(st, replica_values(autoscaling_min=target))
        plan = changes(self.p.preview(st))
        if not plan or any(not n.endswith("-hpa") for _, n in plan):
            raise EngineError(f"{st.name}: raising the HPA's minimum must change the HPA only: {plan}")
        self.p.up(st)

        def scaled() -> str | None:
            dep = w.deployment(PROXY_NAME)
            if dep["spec"]["replicas"] != target:
                return f"replicas {dep['spec']['replicas']}"
            return rollout_finished(dep, w.replicasets())

        t = w.wait(f"{st.name}: the HPA controller scales oauth2-proxy to {target}", scaled, 120)
        owners = [m.get("manager") for m in w.deployment(PROXY_NAME)["metadata"].get("managedFields") or []
                  if "f:replicas" in str((m.get("fieldsV1") or {}).get("f:spec", {}))]
        self.p.set_config(st, replica_values(replicas=min(target + 1, a.max_replicas)))
        again = changes(self.p.preview(st))
        if again:
            raise EngineError(f"{st.name}: the stack fights the HPA over replicas: the preview plans {again}")
        log(f"{st.name}: HPA: minimum {a.min_replicas} -> {target}; the HPA controller scaled oauth2-proxy "
            f"{start} -> {target} in {t:.0f}s (replicas now owned by {owners}); proxy.replicas changed too: "
            "the next preview plans no change")
        return target

    def existing_gateway(self, cfg: StackConfig) -> str | None:
        """With istio.gatewayApi.create false: the Gateway a user already has (made here with a
        plain API call, as their platform team would), which the stack's routes attach to. Its uid."""
        if cfg.istio.ingress_api != "gateway-api" or cfg.istio.gateway_api.create:
            return None
        gw, ga = cfg.istio.gateway, cfg.istio.gateway_api
        allowed = {"namespaces": {"from": "Same"}}
        obj = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": gw.name, "namespace": gw.namespace},
               "spec": {"gatewayClassName": ga.class_name, "listeners": [
                   {"name": ga.http_listener, "port": 80, "protocol": "HTTP", "allowedRoutes": allowed},
                   {"name": ga.https_listener, "port": 443, "protocol": "HTTPS", "allowedRoutes": allowed,
                    "tls": {"mode": "Terminate",
                            "certificateRefs": [{"kind": "Secret", "name": gw.tls_credential_name}]}},
               ]}}
        uid = self.cluster.create_object(obj)
        log(f"made what a user has before `pulumi up`: Gateway {gw.namespace}/{gw.name} "
            f"(listeners {ga.http_listener}, {ga.https_listener})")
        return uid

    def check_gateway_kept(self, cfg: StackConfig, uid: str) -> None:
        gw = cfg.istio.gateway
        live = self.cluster.get("gateway.networking.k8s.io/v1", "Gateway", gw.namespace, gw.name)
        if live is None or live["metadata"]["uid"] != uid:
            raise EngineError(f"the stack with istio.gatewayApi.create=false removed or replaced the existing "
                              f"Gateway {gw.namespace}/{gw.name}")
        self.cluster.delete_object(live)
        log(f"the existing Gateway {gw.namespace}/{gw.name} outlived the stack (same uid)")

    def premade_keycloak(self, stack: str, base: str) -> str | None:
        """For a stack with ``realmMode: existing`` (prod): the realm (Keycloak's defaults) and the
        admin client it logs in with (client credentials; what a user has before `pulumi up`),
        made with plain admin REST calls. Returns the realm's name, else None."""
        cfg = load(project_config(base), secrets_set=SECRET_KEYS)
        kc = cfg.keycloak
        if kc.realm_mode != "existing":
            return None
        client_key = admin_client_secret_key(cfg)
        code, _ = self.admin.lookup(f"/realms/{kc.realm}")
        if code == 404:
            lookups = [{"function": "keycloak:index/getRealm:getRealm", "args": {"realm": kc.realm}}]
            client = None
            if client_key:
                self.admin_client_secret = make_password(40)
                client = (kc.admin.realm, kc.admin.client_id, self.admin_client_secret)
            made = create_existing(self.admin, lookups, None, client)
            log(f"{stack}: made what a user has before `pulumi up`: {', '.join(made)}")
        if client_key:
            self.p.set_secret(stack, client_key, self.admin_client_secret)
        return str(kc.realm)


def preview_scaling(engine: Engine, counts: list[int]) -> list[dict[str, Any]]:
    """`pulumi preview` wall time of the program with N generated apps, under the real engine."""
    from authproxy_local.render.scaling import generated_config

    rows = []
    for n in counts:
        stack = f"scale{n}"
        # generated apps exist in no cluster: these previews measure the program, not the cluster
        st = engine.init_stack(stack, None, preflight_values(False), values=generated_config(n))
        t0 = time.monotonic()
        steps = engine.p.preview(st)
        rows.append({"apps": n, "seconds": round(time.monotonic() - t0, 1),
                     "resources": sum(1 for s in steps if s.op == "create")})
        log(f"preview with {n} apps: {rows[-1]['seconds']}s, {rows[-1]['resources']} resources")
        engine.p.remove(stack, force=True)
    return rows


FAULTS = {
    # On a converged stack, in this order (each ends converged again).
    "proxy-never-ready": faults.proxy_never_ready,
    "redis-upgrade": faults.redis_upgrade_not_ready,
    "interrupted-rollout": faults.interrupted_rollout,
}
"""Fault cases by name; "config" (wrong Keycloak password, unreachable API server) and
"redis-install" run before the stack's first `up` (each needs objects not yet made)."""

STACKS: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    # (stack, checked-in config it starts from, overrides beyond the local servers, fault cases)
    # Two oauth2-proxy replicas (the file has one): a drain can then take one pod and not the last.
    ("dev", "dev", replica_values(replicas=2), ("config", *FAULTS)),
    # Each stack in its own namespace (destroy must remove each; a user switching modes or
    # stacks on one cluster has them side by side).
    ("dev-envoy-filter", "dev", {**ext_authz_mode_values("envoy-filter"),
                                 **namespace_values("authproxy-envoy-filter")}, ("redis-install",)),
    # The prod stack as checked in (existing realm with a pre-made admin client, Redis HA, the
    # cert-manager Certificate and ServiceMonitors), in its own namespace, in both ext_authz modes
    # (one after the other in the same pre-made realm, as a user switching modes would).
    ("prod", "prod", namespace_values("authproxy-prod"), ()),
    ("prod-envoy-filter", "prod", {**ext_authz_mode_values("envoy-filter"),
                                   **namespace_values("authproxy-prod-envoy-filter")}, ()),
    # The Gateway API ingress (issue 13): Gateway, HTTPRoutes, ReferenceGrants through the
    # Gateway API CRDs' schemas and CEL rules, policies attached by targetRefs.
    ("gateway-api", "gateway-api", namespace_values("authproxy-gateway-api"), ()),
    # The Gateway API ingress attached to a Gateway the user already has (istio.gatewayApi.create
    # false), with its own name and listener names: the routes and policies attach to it, and
    # destroy leaves it.
    ("gateway-api-existing", "gateway-api", {**namespace_values("authproxy-gateway-api-existing"),
                                             **existing_gateway_values("shared-gateway", "web", "websecure")},
     ()),
    # Istio ambient (issue 24): waypoint Gateway through the Gateway API CRDs, policies attached
    # to the apps' Services by targetRefs, the Services (a user's, made before `up`) patched by
    # server-side apply: their labels set by `up` and removed by `destroy`, the Services kept.
    ("ambient", "ambient", namespace_values("authproxy-ambient"), ()),
]
