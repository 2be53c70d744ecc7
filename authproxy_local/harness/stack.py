"""The harness's stack through the real `pulumi up` (the Pulumi engine, pulumi-random,
pulumi-keycloak and pulumi-kubernetes), against the harness's own Keycloak and a throw-away
etcd + kube-apiserver (:mod:`authproxy_local.cluster`), and what the run reads back from it.

The stack's config is the checked-in ``Pulumi.<stack>.yaml`` (plus the harness's overrides and
ext_authz mode), pointed at the local servers through stack config only, as `make engine` does
(:func:`components.config.local_server_values`) and ``kubernetes:kubeconfig``. ``keycloak.url``
stays the stack's own public URL: the providers reach it through ``HTTPS_PROXY``, a CONNECT proxy
that knows only the Keycloak host and leads to the harness Keycloak's HTTPS listener, so every
issuer and redirect URI is exactly the stack's.

The generated secrets are pulumi-random's own values, read from the Kubernetes Secrets the stack
created (the demo users' passwords from the stack's secret output ``demoUserPasswords``); they
are kept in memory only, and no command whose output carries them is logged.

Imports: :mod:`authproxy_local.cluster`, :mod:`authproxy_local.core`, :mod:`authproxy_local.install`,
:mod:`authproxy_local.keycloak`, :mod:`authproxy_local.render`, ``components.config``.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from authproxy_local import install
from authproxy_local.cluster.apiserver import Cluster, ClusterError
from authproxy_local.cluster.crds import cluster_crds, patched_services
from authproxy_local.cluster.stacks import Project, StackError
from authproxy_local.core.net import ConnectProxy
from authproxy_local.core.processes import HarnessError, wait_for
from authproxy_local.keycloak import admin as keycloak_admin
from authproxy_local.render import deep_merge, stack_values
from components.config import (
    EXTERNAL_REDIS_PASSWORD_KEY,
    admin_client_secret_key,
    local_server_values,
    preflight_values,
)

from .keycloak import KeycloakPart
from .state import DemoUser

_lock = threading.Lock()
_project: Project | None = None


def shared_project() -> Project:
    """Per process: the project copied into a private temp dir, a file backend there, the CLI
    and plugins from the cache. Every harness start of this process reuses it."""
    global _project
    with _lock:
        if _project is None:
            work = Path(tempfile.mkdtemp(prefix="authproxy-live-stack-"))
            os.chmod(work, 0o700)
            atexit.register(shutil.rmtree, work, True)
            _project = Project(work)
        return _project


def start_cluster(work: Path, namespaces: list[str], objects: list[dict[str, Any]] | None = None) -> Cluster:
    """etcd + kube-apiserver with the CRDs the stacks use and the namespaces (and ``objects``) a
    user's cluster has before the stack (the gateway's and the apps' namespaces)."""
    cluster = Cluster(work)
    try:
        cluster.start()
        cluster.apply_crds(cluster_crds())
        cluster.create_namespaces(namespaces)
        cluster.create_objects(objects or [])
    except BaseException:
        cluster.stop()
        raise
    return cluster


class LiveStack:
    """One stack of the shared project, brought up with `pulumi up` for one harness start."""

    def __init__(self, project: Project, name: str, values: dict[str, Any], secrets: dict[str, str],
                 proxy: tuple[str, int], ca_pem: str) -> None:
        chart = install.ensure("redis-ha-chart")  # a local mirror, else the release (pinned digest)
        self.project = project
        self.name = name
        self.values = deep_merge(deep_merge(values, local_server_values(keycloak_ca_pem=ca_pem,
                                                                        redis_chart_path=str(chart),
                                                                        stack_values=values)),
                                 preflight_values(False))
        self.secrets = secrets
        url = f"http://{proxy[0]}:{proxy[1]}"
        self.env = {"HTTPS_PROXY": url, "https_proxy": url,
                    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        self.cluster: Cluster | None = None
        self._secrets: dict[tuple[str, str], dict[str, str]] = {}
        self._configmaps: dict[tuple[str, str], dict[str, str] | None] = {}
        self.seconds: dict[str, float] = {}
        self.resources = 0
        self.keep_logs_in: Path | None = None
        """Where the logs of a failed `pulumi up` are copied (the harness's run directory)."""
        self.retired: set[str] = set()
        """Secret values an earlier `up` generated and a later one replaced (rotation)."""

    def up(self, cluster: Cluster) -> None:
        t0 = time.monotonic()
        first = self.cluster is None
        self.cluster = cluster
        p = self.project
        # the first `up` creates the stack; another (update_stack) selects it
        stack = p.stack(self.name, extra_env=self.env) if first else p.select(self.name, extra_env=self.env)
        p.write_config(stack, self.values, provider={"kubernetes:kubeconfig": str(cluster.kubeconfig),
                                                     "kubernetes:clusterIdentifier": "harness-cluster"})
        p.set_config(stack, secrets=self.secrets)
        self.seconds["init"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        try:
            p.up(stack)
        except StackError:
            if self.keep_logs_in:
                for f in p.log_files(self.name):
                    shutil.copy2(f, self.keep_logs_in / f"pulumi-{f.name}")
            raise
        self.seconds["up"] = round(time.monotonic() - t0, 1)
        self.resources = len(p.resources(self.name))

    def outputs(self) -> dict[str, Any]:
        """The stack outputs with secrets shown (kept in memory, never logged)."""
        return self.project.outputs(self.name, self.env)

    def object(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        assert self.cluster is not None
        live = self.cluster.get(api_version, kind, namespace, name)
        if live is None:
            raise ClusterError(f"{kind} {namespace}/{name} is not in the API server after `pulumi up`")
        return live

    def secret(self, namespace: str, name: str, key: str) -> str:
        """A key of a Secret the stack created (read once from the API server, then in memory)."""
        if (namespace, name) not in self._secrets:
            data = self.object("v1", "Secret", namespace, name).get("data") or {}
            self._secrets[(namespace, name)] = {k: base64.b64decode(v).decode() for k, v in data.items()}
        values = self._secrets[(namespace, name)]
        if key not in values:
            raise ClusterError(f"the stack's Secret {namespace}/{name} has no key {key!r}")
        return values[key]

    def configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        """The data of a ConfigMap in the API server (read once, then in memory), None if absent."""
        if (namespace, name) not in self._configmaps:
            assert self.cluster is not None
            live = self.cluster.get("v1", "ConfigMap", namespace, name)
            self._configmaps[(namespace, name)] = None if live is None else dict(live.get("data") or {})
        return self._configmaps[(namespace, name)]

    def secret_values(self) -> set[str]:
        return {v for data in self._secrets.values() for v in data.values()}

    def reread(self) -> None:
        """Forget the Secrets read so far (after another `up` changed them); the values stay
        among :meth:`secret_values`' leak checks through ``retired``."""
        self.retired |= self.secret_values()
        self._secrets = {}

    def log_files(self) -> list[Path]:
        """The logs of this stack's pulumi commands (none carries a secret)."""
        return self.project.log_files(self.name)

    def forget(self) -> None:
        """Remove the stack from the backend (its cluster and Keycloak are gone with the run)."""
        # A stack that never got created raises; the backend goes with the process anyway.
        with contextlib.suppress(StackError):
            self.project.remove(self.name, force=True)


class StackPart(KeycloakPart):
    """The run's local cluster and `pulumi up`, and what it reads back from the API server."""

    stack_up: LiveStack | None = None
    """The run's `pulumi up` (its secrets and the objects it created)."""
    keep_cluster = False
    """Keep the API server after `pulumi up` (for :meth:`update_stack`)."""
    _live_deployment: dict[str, Any] | None = None

    def _start_cluster(self) -> None:
        """etcd + kube-apiserver for the run's `pulumi up`, started in the background while
        Keycloak boots (the shared project too)."""
        pool = ThreadPoolExecutor(1, thread_name_prefix="cluster")

        def start() -> Cluster:
            t0 = time.monotonic()
            shared_project()
            cfg = self.config
            existing = {cfg.istio.gateway.namespace, *(a.service.namespace for a in cfg.apps)} - {cfg.namespace}
            cluster = start_cluster(self.tmp / "cluster", sorted(existing), patched_services(cfg))
            self.timings.add("cluster", time.monotonic() - t0)
            return cluster

        self._cluster = pool.submit(start)
        pool.shutdown(wait=False)

    def _wait_keycloak_and_up(self) -> None:
        """Keycloak ready, what the stack expects to exist made by hand (as a user has it), then
        the real `pulumi up`; the run's secrets are what it generated."""
        self._wait_keycloak()
        t0 = time.monotonic()
        # A Keycloak just started answers its first logins slowly (key generation, password hashing,
        # JIT; seconds on a busy machine): log in once before the provider does, so its client
        # timeout measures the stack's calls, not Keycloak's warm-up.
        session = self.admin_session()
        wait_for("keycloak admin login", lambda: bool(session.token()), 120, self.procs["keycloak"])
        admin = self.config.keycloak.admin
        client_key = admin_client_secret_key(self.config)
        made = keycloak_admin.create_existing(
            session, self.render.keycloak.get("lookups", []), self.existing_realm_settings(),
            (admin.realm, admin.client_id, self.config_secrets[client_key]) if client_key else None)
        if made:
            self.log("created what the stack expects to exist: " + ", ".join(made))
        values = stack_values(self.stack, self.overrides or None, self.render.mode)
        proxy = ConnectProxy([self.config.keycloak.host], self.endpoints.keycloak_https).start()
        try:
            assert self._cluster is not None
            cluster = self._cluster.result()
            t1 = time.monotonic()
            up = LiveStack(shared_project(), f"h-{self.run_id}", values, self.config_secrets, proxy.address,
                           Path(self.ca_file).read_text())
            self.stack_up = up
            up.keep_logs_in = self.run_dir
            up.up(cluster)
            passwords = up.outputs().get("demoUserPasswords") or {}
            self.timings.add("pulumi-up", time.monotonic() - t1)
        finally:
            proxy.stop()
        self.users = self._demo_users(passwords)
        # Read what the run needs from the API server now: the Secrets oauth2-proxy and Redis
        # use, and oauth2-proxy's Deployment.
        self.redis_server_password()
        self.oauth2_proxy_secrets()
        self.oauth2_proxy_configmaps()
        self.timings.add("keycloak+stack", time.monotonic() - t0)
        self.log(f"pulumi up: {up.resources} resources ({up.seconds})")
        # Everything the run needs from the API server is read: stop it (about 450 MB with etcd),
        # unless the run will `pulumi up` again (update_stack).
        if not self.keep_cluster:
            self._stop_cluster()

    def _stop_cluster(self) -> None:
        fut, self._cluster = self._cluster, None
        if fut is None:
            return
        try:
            cluster = fut.result()
        except Exception:  # noqa: BLE001 - its failure was raised to start(); here only cleanup
            return
        cluster.stop()
        if self.stack_up is not None:
            self.stack_up.forget()

    def _demo_users(self, passwords: Mapping[str, str]) -> dict[str, DemoUser]:
        """The demo users the stack created, with the passwords pulumi-random generated (the
        stack output ``demoUserPasswords``)."""
        users: dict[str, DemoUser] = {}
        kc = self.config.keycloak
        for u in kc.demo_users:
            if u.username not in passwords:
                raise HarnessError(f"the stack output demoUserPasswords has no password for {u.username!r}")
            users[u.username] = DemoUser(
                username=u.username, password=passwords[u.username], groups=list(u.groups),
                email=u.email or f"{u.username}@{self.config.domain}")
        return users

    # ---- what the stack created ------------------------------------------------------------

    def secret_values(self) -> set[str]:
        """Every secret value of the run (tests only, to look for leaks; never log them): the
        stack's secret config, the Secrets read from the API server, the users' passwords."""
        out = set(self.config_secrets.values()) | {u.password for u in self.users.values()}
        if self.stack_up is not None:
            out |= self.stack_up.secret_values() | self.stack_up.retired
        return out

    def update_stack(self, changes: Mapping[str, Any]) -> None:
        """Another real `pulumi up` of the run's stack with ``changes`` merged into its config
        (e.g. a rotation marker), as an operator would run it; what the run reads from the API
        server (Secrets, oauth2-proxy's Deployment) is read afresh. Needs ``keep_cluster``."""
        up = self.stack_up
        if up is None or self._cluster is None:
            raise HarnessError("the stack can be updated only while its cluster runs (keep_cluster=True)")
        proxy = ConnectProxy([self.config.keycloak.host], self.endpoints.keycloak_https).start()
        try:
            url = f"http://{proxy.address[0]}:{proxy.address[1]}"
            up.env.update({"HTTPS_PROXY": url, "https_proxy": url})
            up.values = deep_merge(up.values, dict(changes))
            t0 = time.monotonic()
            up.up(self._cluster.result())
            self.log(f"pulumi up again ({sorted(changes)}): {up.resources} resources in "
                     f"{time.monotonic() - t0:.1f}s")
        finally:
            proxy.stop()
        up.reread()
        self._live_deployment = None
        self.oauth2_proxy_secrets()

    def proxy_deployment(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """oauth2-proxy's Deployment as the API server has it (after `pulumi up`) and its container."""
        return self._proxy_deployment()

    def _proxy_deployment(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The oauth2-proxy Deployment and its container (found by the container's args): the one
        `pulumi up` created in the API server once it has run, else the render's."""
        for d in self.kube("Deployment"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                if any(str(a).startswith("--provider=") for a in c.get("args", [])):
                    if self.stack_up is None:
                        return d, c
                    live = self._live_proxy_deployment(d["metadata"].get("namespace"), d["metadata"]["name"])
                    return live, next(x for x in live["spec"]["template"]["spec"]["containers"]
                                      if x["name"] == c["name"])
        raise HarnessError("the render has no oauth2-proxy Deployment (no container with --provider)")

    def _live_proxy_deployment(self, namespace: str | None, name: str) -> dict[str, Any]:
        if self._live_deployment is None:
            assert self.stack_up is not None
            self._live_deployment = self.stack_up.object("apps/v1", "Deployment", namespace, name)
        return self._live_deployment

    def stack_secret(self, ref: tuple[str, str, str]) -> str:
        """A key (namespace, name, key) of a Secret the stack created (pulumi-random's value)."""
        if self.stack_up is None:
            raise HarnessError("secrets are known once the stack is up")
        namespace, name, key = ref
        return self.stack_up.secret(namespace, name, key)

    def oauth2_proxy_secrets(self) -> list[tuple[str, str, str]]:
        """The (namespace, name, key) of every Secret key oauth2-proxy's container reads."""
        d, c = self._proxy_deployment()
        ns = d["metadata"].get("namespace") or ""
        refs = [(ns, e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                for e in c.get("env", []) if (e.get("valueFrom") or {}).get("secretKeyRef")]
        for ref in refs:
            self.stack_secret(ref)
        return refs

    def stack_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data as `pulumi up` created it (before the stack is up: the render's)."""
        if self.stack_up is not None:
            return self.stack_up.configmap(namespace, name)
        for o in self.kube("ConfigMap", name):
            if (o["metadata"].get("namespace") or "") == namespace:
                return dict(o.get("data") or {})
        return None

    def oauth2_proxy_configmaps(self) -> dict[str, tuple[dict[str, Any], dict[str, str] | None]]:
        """Mount path -> (the pod's volume, its ConfigMap's data) for every volume oauth2-proxy's
        container mounts (what the kubelet would read)."""
        d, c = self._proxy_deployment()
        ns = d["metadata"].get("namespace") or ""
        volumes = {v["name"]: v for v in d["spec"]["template"]["spec"].get("volumes") or []}
        out: dict[str, tuple[dict[str, Any], dict[str, str] | None]] = {}
        for m in c.get("volumeMounts") or []:
            vol = volumes.get(m["name"])
            if vol is None:
                raise HarnessError(f"the oauth2-proxy container mounts {m['name']!r}, which the pod does not define")
            if m.get("subPath") or m.get("subPathExpr"):
                raise HarnessError(f"volume mount {m['name']!r} uses subPath; not supported")
            cm = (vol.get("configMap") or {}).get("name")
            out[m["mountPath"]] = (vol, self.stack_configmap(ns, cm) if cm else None)
        return out

    @property
    def redis_password(self) -> str:
        """The password oauth2-proxy sends to Redis (its container's Secret reference)."""
        d, c = self._proxy_deployment()
        ns = d["metadata"].get("namespace") or ""
        for e in c.get("env", []):
            if e["name"] == "OAUTH2_PROXY_REDIS_PASSWORD":
                r = e["valueFrom"]["secretKeyRef"]
                return self.stack_secret((ns, r["name"], r["key"]))
        raise HarnessError("the oauth2-proxy container has no OAUTH2_PROXY_REDIS_PASSWORD")

    def redis_server_password(self) -> str:
        """The password the Redis *server* requires: the session-store chart's ``existingSecret``
        / ``authKey`` (so a mismatch with oauth2-proxy's reference shows up as a failed start),
        or the external Redis password from the config secrets."""
        for rel in self.render.helm_releases:
            v = rel.get("values") or {}
            if rel.get("chart") in ("redis-ha", "valkey", "redis") and v.get("existingSecret"):
                return self.stack_secret((rel.get("namespace") or "", v["existingSecret"], v.get("authKey", "auth")))
        return self.config_secrets.get(EXTERNAL_REDIS_PASSWORD_KEY) or self.redis_password
