"""The live harness's stack through the real `pulumi up` (the Pulumi engine, pulumi-random,
pulumi-keycloak and pulumi-kubernetes), against the harness's own Keycloak and a throw-away
etcd + kube-apiserver (:class:`authproxy_local.engine.Cluster`).

    session = shared_session()                      # once per process: CLI login, project copy
    up = LiveStack(session, "h-<run>", values, secrets, proxy=(host, port), ca_pem=...)
    cluster = start_cluster(dir)                     # per harness start (in parallel with Keycloak)
    up.up(cluster)                                   # pulumi up --yes
    up.secret(ns, name, key)                         # from the Secrets the stack created
    up.object("apps/v1", "Deployment", ns, name)     # any object the stack created

The stack's config is the checked-in ``Pulumi.<stack>.yaml`` (plus the harness's overrides and
ext_authz mode), pointed at the local servers through stack config only, as `make engine` does:
``keycloak.caCertificate`` (the harness CA), ``redis.chartPath`` (the local chart copy),
``kubernetes.skipAwait`` (no kubelet, pods never become ready), ``istio.install.enabled: false``
(no chart repository for Istio's charts here; the harness runs istiod's translation itself) and
``kubernetes:kubeconfig``. ``keycloak.url`` stays the stack's own public URL: the providers reach
it through ``HTTPS_PROXY``, a CONNECT proxy that knows only the Keycloak host and leads to the
harness Keycloak's HTTPS listener, so every issuer and redirect URI is exactly the stack's.

The generated secrets are pulumi-random's own values, read from the Kubernetes Secrets the stack
created (the demo users' passwords from the stack's secret output ``demoUserPasswords``); they
are kept in memory only, and no command whose output carries them is logged.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any

import yaml

from authproxy_local import install
from authproxy_local.engine import (
    REDIS_CHART,
    Cluster,
    EngineError,
    Pulumi,
    cluster_crds,
    run_group,
)

_lock = threading.Lock()
_session: Session | None = None
_crds: list[dict[str, Any]] | None = None


class Session:
    """Per process: the pulumi CLI logged into a file backend in a temp dir, the project copied
    there, the plugins on PATH. Every harness start of this process reuses it."""

    def __init__(self) -> None:
        plugins = {name: install.ensure(f"pulumi-{name}") for name in ("random", "keycloak", "kubernetes")}
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="authproxy-live-stack-"))
        os.chmod(self.work, 0o700)
        self.pulumi = Pulumi(self.work, install.ensure("pulumi"))
        self.pulumi.setup(plugins)
        atexit.register(shutil.rmtree, self.work, True)


def shared_session() -> Session:
    global _session
    with _lock:
        if _session is None:
            _session = Session()
        return _session


def required_tools() -> tuple[str, ...]:
    return ("pulumi", "pulumi-random", "pulumi-keycloak", "pulumi-kubernetes", "etcd", "kube-apiserver")


def start_cluster(work: pathlib.Path, namespaces: list[str]) -> Cluster:
    """etcd + kube-apiserver with the CRDs the stacks use (Istio's, cert-manager's, ServiceMonitor, Gateway API)
    and the namespaces a user's cluster has before the stack (the gateway's and the apps')."""
    global _crds
    work.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(work)
    try:
        cluster.start()
        if _crds is None:
            _crds = cluster_crds()
        cluster.apply_crds(_crds)
        for ns in namespaces:
            code, out = cluster.request("POST", "/api/v1/namespaces",
                                        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            if code not in (201, 409):
                raise EngineError(f"creating namespace {ns}: HTTP {code}: {str(out)[:200]}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def stack_config(values: dict[str, Any], ca_pem: str) -> dict[str, Any]:
    """The stack's authproxy:* values (keys without namespace) pointed at the local servers."""
    from authproxy_local.mockrun import deep_merge

    if not REDIS_CHART.is_file():
        raise install.InstallError(
            f"the redis-ha 4.39.0 chart is not at {REDIS_CHART} (shared/charts beside the checkout): "
            "no chart repository is reachable here, the stack installs that copy")
    return dict(deep_merge(values, {
        "keycloak": {"caCertificate": ca_pem},
        "redis": {"chartPath": str(REDIS_CHART)},
        "kubernetes": {"skipAwait": True},
        "istio": {"install": {"enabled": False}},
    }))


class LiveStack:
    """One stack of the shared session, brought up with `pulumi up` for one harness start."""

    def __init__(self, session: Session, name: str, values: dict[str, Any], secrets: dict[str, str],
                 proxy: tuple[str, int], ca_pem: str) -> None:
        self.session = session
        self.name = name
        self.values = stack_config(values, ca_pem)
        self.secrets = secrets
        self.proxy = proxy
        self.cluster: Cluster | None = None
        self._secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.seconds: dict[str, float] = {}
        self.resources = 0
        self.keep_logs_in: pathlib.Path | None = None
        """Where the logs of a failed `pulumi up` are copied (the harness's run directory)."""

    @property
    def pulumi(self) -> Pulumi:
        return self.session.pulumi

    def _env(self) -> dict[str, str]:
        url = f"http://{self.proxy[0]}:{self.proxy[1]}"
        return {**self.pulumi.env, "HTTPS_PROXY": url, "https_proxy": url,
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def _quiet(self, *args: str, stdin: str | None = None) -> str:
        """A pulumi command whose input or output carries a secret: not logged, output returned
        to the caller only; a failure shows the exit code and stderr's last line."""
        p = self.pulumi
        cmd = [str(p.exe), *args, "--stack", self.name, "--non-interactive"]
        proc = run_group(cmd, env=self._env(), cwd=p.project, timeout=300, stdin=stdin)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise EngineError(f"`pulumi {' '.join(args[:2])}` failed (exit {proc.returncode}): {last[:300]}")
        return proc.stdout

    def init(self, cluster: Cluster) -> None:
        p = self.pulumi
        self.cluster = cluster
        p.run("stack", "init", self.name, "--secrets-provider", "passphrase")
        path = p.project / f"Pulumi.{self.name}.yaml"
        doc = yaml.safe_load(path.read_text()) or {}
        doc["config"] = {
            **{f"authproxy:{k}": v for k, v in self.values.items()},
            "kubernetes:kubeconfig": str(cluster.kubeconfig),
            "kubernetes:clusterIdentifier": "harness-cluster",
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        for key, value in sorted(self.secrets.items()):
            self._quiet("config", "set", "--secret", f"authproxy:{key}", stdin=value)

    def up(self, cluster: Cluster) -> None:
        t0 = time.monotonic()
        self.init(cluster)
        self.seconds["init"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        p = self.pulumi
        env, p.env = p.env, self._env()
        try:
            p.run("up", "--yes", "--skip-preview", stack=self.name)
        except EngineError:
            if self.keep_logs_in:
                for f in self.log_files():
                    shutil.copy2(f, self.keep_logs_in / f"pulumi-{f.name}")
            raise
        finally:
            p.env = env
        self.seconds["up"] = round(time.monotonic() - t0, 1)
        self.resources = len(p.stack_resources(self.name))

    def outputs(self) -> dict[str, Any]:
        """The stack outputs with secrets shown (kept in memory, never logged)."""
        return dict(json.loads(self._quiet("stack", "output", "--json", "--show-secrets") or "{}"))

    def object(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        assert self.cluster is not None
        live = self.cluster.get(self.cluster.resource_path(api_version, kind, namespace, name))
        if live is None:
            raise EngineError(f"{kind} {namespace}/{name} is not in the API server after `pulumi up`")
        return dict(live)

    def secret(self, namespace: str, name: str, key: str) -> str:
        """A key of a Secret the stack created (read once from the API server, then in memory)."""
        if (namespace, name) not in self._secrets:
            data = self.object("v1", "Secret", namespace, name).get("data") or {}
            self._secrets[(namespace, name)] = {k: base64.b64decode(v).decode() for k, v in data.items()}
        values = self._secrets[(namespace, name)]
        if key not in values:
            raise EngineError(f"the stack's Secret {namespace}/{name} has no key {key!r}")
        return values[key]

    def secret_values(self) -> set[str]:
        return {v for data in self._secrets.values() for v in data.values()}

    def log_files(self) -> list[pathlib.Path]:
        """The logs of this stack's pulumi commands (the ones without secrets in or out)."""
        return sorted((self.pulumi.work / "logs").glob(f"*-{self.name}.log"))

    def forget(self) -> None:
        """Remove the stack from the backend (its cluster and Keycloak are gone with the run)."""
        subprocess.run([str(self.pulumi.exe), "stack", "rm", "--yes", "--force", self.name, "--non-interactive"],
                       env=self.pulumi.env, cwd=self.pulumi.project, capture_output=True, timeout=120)
