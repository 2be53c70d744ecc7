"""The run's oauth2-proxy, with exactly the args and env of the Deployment `pulumi up` created in
the API server; only cluster addresses are rewritten (:mod:`authproxy_local.core.local_map`),
Secret references resolve to the Secrets the stack created, and the volumes it mounts (Keycloak's
CA from ``keycloak.caCertificate``) are the stack's ConfigMaps written into the run directory. It
trusts nothing else: Keycloak's TLS is verified only through that mount (``--provider-ca-file``).
It reaches the public hosts (Keycloak via the gateway) through the run's CONNECT proxy, which
refuses any other host; the echo apps stand in for the apps' pods.

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.install`, :mod:`.stack`, :mod:`.echo`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from authproxy_local import install
from authproxy_local.core import local_map
from authproxy_local.core.net import ConnectProxy
from authproxy_local.core.processes import HarnessError, Process, http_ok, wait_for
from authproxy_local.mesh.workloads import app_pods

from .echo import EchoServer
from .stack import StackPart


class ProxyPart(StackPart):
    def oauth2_proxy_command(self) -> tuple[list[str], dict[str, str]]:
        """The local command line and environment: the rendered args and env, with only the
        cluster addresses rewritten (local_map) and Secret references resolved."""
        exe = install.ensure("oauth2-proxy")
        d, c = self._proxy_deployment()
        ns = d["metadata"].get("namespace") or ""
        if c.get("command"):
            raise HarnessError("the oauth2-proxy container overrides the entrypoint; not supported")
        args = local_map.rewrite_proxy_args(c.get("args", []), self.endpoints, self._write_proxy_volumes())
        env = local_map.resolve_env(
            c.get("env", []),
            lambda name, key: self.stack_secret((ns, name, key)),
            c.get("resources"),
        )
        proxy = self.endpoints.connect_proxy
        # No SSL_CERT_FILE: the only CA it trusts for Keycloak is the one its Deployment mounts.
        env.update({
            "HTTPS_PROXY": f"http://{proxy[0]}:{proxy[1]}",
            "HTTP_PROXY": f"http://{proxy[0]}:{proxy[1]}",
            "NO_PROXY": "",
        })
        return [str(exe), *args], env

    def _write_proxy_volumes(self) -> dict[str, str]:
        """The container's ConfigMap volumes written as the kubelet would (read-only files) into
        the run directory; mount path -> the local folder."""
        root = self.run_dir / "oauth2-proxy-volumes"
        shutil.rmtree(root, ignore_errors=True)
        mounts: dict[str, str] = {}
        for mount_path, (vol, data) in self.oauth2_proxy_configmaps().items():
            folder = root / vol["name"]
            folder.mkdir(parents=True)
            for rel, content in local_map.configmap_volume_files(vol, data).items():
                f = Path(folder, rel)
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(content)
                f.chmod(0o444)
            mounts[mount_path] = str(folder)
        return mounts

    def _start_oauth2_proxy(self) -> None:
        cmd, env = self.oauth2_proxy_command()
        p = Process("oauth2-proxy", cmd, env, self.run_dir / "oauth2-proxy.log").start()
        self.procs["oauth2-proxy"] = p
        host, port = self.endpoints.oauth2_proxy
        # The kubelet's check: the deployed container's readiness probe path.
        ready = self._proxy_deployment()[1]["readinessProbe"]["httpGet"]["path"]
        wait_for("oauth2-proxy", lambda: http_ok(f"http://{host}:{port}{ready}"), 60, p)
        self.timings.add("oauth2-proxy", time.monotonic() - p.started_at)

    def _start_echo_and_proxy(self) -> None:
        """One echo app per modeled pod (the app's first pod is also ``echo[<app>]``)."""
        for pod in app_pods(self.config):
            server = EchoServer(pod.app, host=self.gateway_ip, pod=pod.name).start()
            self.echo[pod.name] = server
            self.endpoints.pods[pod.name] = server.address
            if pod.name == f"{pod.app}-harness":
                self.echo[pod.app] = server
                self.endpoints.apps[pod.app] = server.address
        self.connect_proxy = ConnectProxy(self.public_hosts, self.endpoints.gateway_https).start()
        self.endpoints.connect_proxy = self.connect_proxy.address
