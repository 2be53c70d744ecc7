"""The run's oauth2-proxy: as many processes as the Deployment has replicas (with an HPA, its
``minReplicas``), each a pod of the Deployment and an endpoint of the Service in istiod's
translation, each with exactly the args and env of the Deployment `pulumi up` created in the API
server; only cluster addresses are rewritten (:mod:`authproxy_local.core.local_map`: each pod its
own listen addresses), Secret references resolve to the Secrets the stack created, and the volumes
it mounts (Keycloak's CA from ``keycloak.caCertificate``) are the stack's ConfigMaps written into
the run directory. It trusts nothing else: Keycloak's TLS is verified only through that mount
(``--provider-ca-file``). They reach the public hosts (Keycloak via the gateway) through the run's
CONNECT proxy, which refuses any other host; the echo apps stand in for the apps' pods.

What the Deployment says about a pod's life is read from it, not assumed: the readiness probe
(path, period, timeout, thresholds), the preStop sleep, the termination grace period and
``minReadySeconds`` (:func:`pod_spec_facts`); :mod:`.rollout` plays the kubelet and the
Deployment controller with them.

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.install`, :mod:`.stack`, :mod:`.echo`.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authproxy_local import install
from authproxy_local.core import local_map
from authproxy_local.core.processes import HarnessError, free_port
from authproxy_local.mesh.connect_proxy import EnvoyConnectProxy
from authproxy_local.mesh.envoy_config import POD_CIDR
from authproxy_local.mesh.workloads import app_pods

from .echo import EchoServer
from .stack import StackPart

FIRST_POD = "oauth2-proxy"
"""The first pod's name (and process name): what a single-replica run always had."""


@dataclass(frozen=True)
class PodFacts:
    """How the Deployment's pods live and die."""

    replicas: int
    probe_path: str
    probe_period: float
    probe_timeout: float
    probe_failures: int
    probe_successes: int
    probe_delay: float
    drain_seconds: int
    """preStop sleep (0: no hook)."""
    grace_seconds: int
    min_ready_seconds: int


def pod_spec_facts(deployment: Mapping[str, Any], container: Mapping[str, Any],
                   hpa_min: int | None) -> PodFacts:
    """The pod lifecycle the Deployment asks for (Kubernetes' defaults where it says nothing)."""
    spec = deployment.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    probe = container.get("readinessProbe") or {}
    get = probe.get("httpGet") or {}
    if not get.get("path"):
        raise HarnessError("oauth2-proxy's container has no httpGet readinessProbe")
    sleep = (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {})
    # With an HPA, it owns the count (at least minReplicas at once); the API server defaults an
    # unset `replicas` to 1.
    replicas = hpa_min if hpa_min is not None else spec.get("replicas", 1)
    return PodFacts(
        replicas=int(replicas),
        probe_path=str(get["path"]),
        probe_period=float(probe.get("periodSeconds", 10)),
        probe_timeout=float(probe.get("timeoutSeconds", 1)),
        probe_failures=int(probe.get("failureThreshold", 3)),
        probe_successes=int(probe.get("successThreshold", 1)),
        probe_delay=float(probe.get("initialDelaySeconds", 0)),
        drain_seconds=int(sleep.get("seconds", 0)),
        grace_seconds=int(pod.get("terminationGracePeriodSeconds", 30)),
        min_ready_seconds=int(spec.get("minReadySeconds", 0)),
    )


class ProxyPart(StackPart):
    _pods_lock: threading.RLock | None = None
    _pod_counter = 0

    @property
    def pods_lock(self) -> threading.RLock:
        if self._pods_lock is None:
            self._pods_lock = threading.RLock()
        return self._pods_lock

    def pod_facts(self) -> PodFacts:
        d, c = self._proxy_deployment()
        name = d["metadata"]["name"]
        hpa = [h for h in self.kube("HorizontalPodAutoscaler")
               if (h["spec"].get("scaleTargetRef") or {}).get("name") == name]
        return pod_spec_facts(d, c, int(hpa[0]["spec"]["minReplicas"]) if hpa else None)

    def new_pod(self) -> local_map.ProxyPod:
        """A pod the Deployment controller adds (not started, not ready): the first one listens
        where a single-replica run always did (``endpoints.oauth2_proxy``)."""
        ep = self.endpoints
        with self.pods_lock:
            n = self._pod_counter
            self._pod_counter += 1
            if n == 0:
                pod = local_map.ProxyPod(FIRST_POD, f"{POD_CIDR}.1.1", ep.oauth2_proxy, ep.oauth2_proxy_metrics)
            else:
                ip = self.gateway_ip
                pod = local_map.ProxyPod(f"{FIRST_POD}-{n}", f"{POD_CIDR}.1.{n + 1}", (ip, free_port(ip)),
                                         (ip, free_port(ip)))
            ep.proxy_pods.append(pod)
        return pod

    def _plan_proxy_pods(self) -> None:
        """The Deployment's pods as the API server has them before they run: in the EndpointSlice,
        not ready (the gateway's first translation has no endpoint for them yet)."""
        if not self.endpoints.proxy_pods:
            for _ in range(self.pod_facts().replicas):
                self.new_pod()

    def oauth2_proxy_command(self, pod: local_map.ProxyPod | None = None,
                             deployment: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
                             ) -> tuple[list[str], dict[str, str]]:
        """The local command line and environment of one pod (default: the first): the rendered
        args and env (or those of ``deployment``, e.g. after a rotation), with only the cluster
        addresses rewritten (local_map) and Secret references resolved."""
        exe = install.ensure("oauth2-proxy")
        d, c = deployment or self._proxy_deployment()
        ns = d["metadata"].get("namespace") or ""
        if c.get("command"):
            raise HarnessError("the oauth2-proxy container overrides the entrypoint; not supported")
        args = local_map.rewrite_proxy_args(c.get("args", []), self.endpoints,
                                            self._write_proxy_volumes(pod), pod)
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

    def _write_proxy_volumes(self, pod: local_map.ProxyPod | None = None) -> dict[str, str]:
        """The container's ConfigMap volumes written as the kubelet would (read-only files) into
        the run directory, one folder per pod (a pod starting never touches another's files);
        mount path -> the local folder."""
        root = self.run_dir / "oauth2-proxy-volumes" / (pod.name if pod else FIRST_POD)
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

    def _start_echo_and_proxy(self) -> None:
        """One echo app per modeled pod (the app's first pod is also ``echo[<app>]``)."""
        for pod in app_pods(self.config, self.misconfigured_pods):
            server = EchoServer(pod.app, host=self.gateway_ip, pod=pod.name).start()
            self.echo[pod.name] = server
            self.endpoints.pods[pod.name] = server.address
            if pod.name == f"{pod.app}-harness":
                self.echo[pod.app] = server
                self.endpoints.apps[pod.app] = server.address
        # a real Envoy terminating CONNECT: the Python proxy was the slow link under load (docs/reliability.md)
        self.connect_proxy = EnvoyConnectProxy(self.public_hosts, self.endpoints.gateway_https, self.run_dir).start()
        self.endpoints.connect_proxy = self.connect_proxy.address
