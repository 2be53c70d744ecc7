"""The ambient data path of a run whose stack has ambient apps (``apps[].dataplane: ambient``),
as Istio's ambient mode runs it: no sidecars; each app pod gets **ztunnel** (built from the pinned
snapshot, dedicated mode, in-pod redirection), each waypoint an **Envoy running istiod's waypoint
config**, and the ingress gateway reaches the waypoint over HBONE.

- Every ambient pod (the apps, the mesh client, each waypoint) has a network namespace of its own
  with the address the translator's input gives it (:class:`authproxy_local.core.netns.PodNetwork`:
  a bridge in a namespace of its own, nothing in this namespace).
- In each app pod (and the mesh client): the snapshot's ``ztunnel-redirect-inpod.sh`` (inbound TCP
  but 15008 to ztunnel's 15006, outbound to 15001, marks and the local route table for ztunnel's
  transparent connection to the app), the echo app on the pod's port, and ztunnel with istiod's
  push for ztunnels written as its local file (:mod:`authproxy_local.mesh.ztunnel`), ``FAKE_CA``
  (its workload certificate signed by the snapshot's test root).
- Each waypoint: upstream Envoy on istiod's waypoint config (:mod:`authproxy_local.mesh.adapter`),
  in its pod's namespace; the gateway (this namespace) reaches its port 15008 through a
  :class:`authproxy_local.core.netns.Relay` (bytes only: the TLS is the gateway's and waypoint's).
- Identities: the gateway's and each waypoint's SPIFFE certificates are signed by the same test
  root (:func:`authproxy_local.core.pki.spiffe_certificate`), their ``ROOTCA``; ztunnel checks the
  waypoint's real identity against the stack's L4 policy.

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.install`, :mod:`authproxy_local.mesh`,
:mod:`.state`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from authproxy_local import install
from authproxy_local.core import netns
from authproxy_local.core.pki import spiffe_certificate
from authproxy_local.core.processes import (
    HarnessError,
    Process,
    http_ok,
    pick_gateway_ip,
    tcp_open,
    wait_for,
)
from authproxy_local.mesh import envoy, ztunnel
from authproxy_local.mesh.adapter import Bootstraps, MeshIdentities
from authproxy_local.mesh.workloads import (
    GATEWAY_IDENTITY,
    HBONE_PORT,
    AmbientPod,
    Workloads,
    identities,
    is_waypoint,
    workloads,
)

from .state import HarnessState

TRUST_DOMAIN = "cluster.local"
ZTUNNEL_READY = 15021
ROOT = Path(__file__).resolve().parents[2]


def spiffe_id(namespace: str, service_account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def ztunnel_env(workload: AmbientPod, local_config: Path) -> dict[str, str]:
    """ztunnel without istiod or a CA: istiod's push from a file, the fake CA, dedicated mode for
    one pod (it marks its own sockets 1337 = 0x539, which the redirection lets through)."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "FAKE_CA": "true",
        "XDS_ADDRESS": "",
        "LOCAL_XDS_PATH": str(local_config),
        "PROXY_MODE": "dedicated",
        "PROXY_WORKLOAD_INFO": f"{workload.namespace}/{workload.name}/{workload.service_account}",
        "PACKET_MARK": "1337",
        "CLUSTER_ID": "Kubernetes",
        "RUST_LOG": "info",
    }


class AmbientPart(HarnessState):
    net: netns.PodNetwork | None = None
    mesh: MeshIdentities | None = None
    relays: list[netns.Relay]
    ambient_pods: Workloads | None = None
    """The run's pods as the translator saw them (apps, mesh client, waypoints)."""
    _ztunnel_push: dict[str, Any]

    @property
    def is_ambient(self) -> bool:
        return bool(self.config.ambient_apps)

    @property
    def ztunnel_version(self) -> str:
        """What terminates HBONE at the app pods (the numbers line of `make e2e`)."""
        return f"ztunnel {install.VERSIONS['ztunnel']}"

    def _prepare_ambient(self) -> None:
        """Before the translation: check namespaces can be made, install ztunnel, give each
        waypoint its relay address and make the mesh identities."""
        self.relays = []
        reason = netns.unavailable()
        if reason:
            raise HarnessError(f"ambient apps need pod network namespaces here: {reason}")
        install.ensure_group("ambient")
        zt = install.ensure("ztunnel")
        root, key = zt.parent / "fake-ca" / "root-cert.pem", zt.parent / "fake-ca" / "ca-key.pem"
        for o in self.render.kubernetes:
            if is_waypoint(o):
                ip = pick_gateway_ip(ports=(HBONE_PORT,))
                self.endpoints.waypoints[f"waypoint-{o['metadata']['name']}"] = (ip, HBONE_PORT)
        w = workloads(self.render, self.endpoints)
        self.ambient_pods = w
        # The gateway's identity is its pod's service account, the one the waypoint policies
        # admit a user's token from (istio.gateway.serviceAccount).
        certs = {"gateway": spiffe_certificate(identities(self.config)[GATEWAY_IDENTITY], root, key,
                                               self.tmp / "spiffe", "gateway")}
        for proxy, pod in w.waypoints.items():
            certs[proxy] = spiffe_certificate(spiffe_id(pod.namespace, pod.service_account), root, key,
                                              self.tmp / "spiffe", proxy)
        self.mesh = MeshIdentities(str(root), {k: (str(c), str(k2)) for k, (c, k2) in certs.items()})

    def _start_ambient(self, xds: dict[str, Any]) -> None:
        """After the translation (``xds``: its raw output): the pod namespaces, ztunnel and the
        echo app in each app pod, the waypoints' Envoys, the relays."""
        t0 = time.monotonic()
        w = self.ambient_pods
        assert w is not None and self.translation is not None
        zt = install.ensure("ztunnel")
        self.net = netns.PodNetwork(prefix=f"ap{self.run_id[-6:]}")
        for pod in [*w.waypoints.values(), *w.ambient_pods.values()]:
            self.net.add(pod.name, pod.ip)
        self._ztunnel_push = xds["proxies"]["ztunnel"]
        local = self._write_ztunnel_config()
        redirect = zt.parent / "ztunnel-redirect-inpod.sh"
        for pod in w.ambient_pods.values():
            cmd = self.net.command(pod.name, ["bash", str(redirect)])
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise HarnessError(f"in-pod redirection for {pod.name} failed: {proc.stderr[-2000:]}")
            if pod.app:
                self.procs[f"echo-{pod.app}"] = Process(
                    f"echo-{pod.app}",
                    self.net.command(pod.name, [sys.executable, "-m", "authproxy_local.harness.echo",
                                                "--host", "0.0.0.0", "--port", str(pod.port), "--name", pod.app]),
                    {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, self.run_dir / f"echo-{pod.app}.log", cwd=str(ROOT),
                ).start()
                wait_for(f"echo-{pod.app}", partial(netns.in_namespace, self.net.pods[pod.name],
                                                    partial(tcp_open, ("127.0.0.1", pod.port))),
                         30, self.procs[f"echo-{pod.app}"])
        self._start_ztunnels(local)
        for proxy, pod in w.waypoints.items():
            self._start_waypoint(proxy, pod, self.translation.by_proxy[proxy])
            self.relays.append(netns.Relay(self.endpoints.waypoints[proxy], self.net.pods[pod.name],
                                           (pod.ip, HBONE_PORT)).start())
        self.timings.add("ambient", time.monotonic() - t0)

    def _write_ztunnel_config(self, without_policies: Sequence[str] = ()) -> Path:
        """istiod's push for ztunnels as ztunnel's local file (``without_policies``: the
        unprotected variant the tests compare with, those policies left out)."""
        push = dict(self._ztunnel_push)
        push["authorizations"] = [a for a in push["authorizations"] if a["name"] not in without_policies]
        local = self.run_dir / ("ztunnel.yaml" if not without_policies else "ztunnel-unprotected.yaml")
        local.write_text(ztunnel.local_config_yaml(push))
        return local

    def _start_ztunnels(self, local: Path) -> None:
        assert self.ambient_pods is not None and self.net is not None
        zt = install.ensure("ztunnel")
        for pod in self.ambient_pods.ambient_pods.values():
            name = f"ztunnel-{pod.name}"
            self.procs[name] = Process(name, self.net.command(pod.name, [str(zt)]), ztunnel_env(pod, local),
                                       self.run_dir / f"{name}.log").start()
        for pod in self.ambient_pods.ambient_pods.values():
            ready = f"http://127.0.0.1:{ZTUNNEL_READY}/healthz/ready"
            check = partial(netns.in_namespace, self.net.pods[pod.name], partial(http_ok, ready))
            wait_for(f"ztunnel-{pod.name}", check, 60, self.procs[f"ztunnel-{pod.name}"])
        self._mint_certificates()

    def _mint_certificates(self) -> None:
        """ztunnel's fake CA mints a workload certificate on first use with notBefore = now in
        whole seconds, from a clock of its own (its start time + monotonic time) that can run a few
        milliseconds ahead under load: a certificate minted just before a second boundary is then
        not yet valid to its peer for up to a second (the waypoint's Envoy answers
        `CertificateExpired`, seen once in `make e2e`). istiod's CA backdates notBefore instead.
        So every ztunnel's certificate is minted here, by one HBONE connection from the mesh client
        to each app pod (refused by the L4 policy after the handshake, or passed when it is off),
        and then a second passes."""
        assert self.ambient_pods is not None
        client = next(p.name for p in self.ambient_pods.ambient_pods.values() if not p.app)
        for pod in self.ambient_pods.ambient_pods.values():
            if pod.app:
                self.curl_from(client, f"http://{pod.ip}:{pod.port}/", timeout=5)
        time.sleep(1.5)

    def _start_waypoint(self, proxy: str, pod: AmbientPod, boot: dict[str, Any]) -> None:
        assert self.net is not None
        name = f"envoy-{proxy}"
        self.procs[name] = envoy.start(
            name, boot, self.run_dir, what=f"{proxy} (istiod's waypoint config)",
            args=["--concurrency", "1", "--component-log-level", "jwt:debug,rbac:debug"],
            prefix=self.net.command(pod.name, []))
        admin = boot["admin"]["address"]["socket_address"]
        up = partial(envoy.ready, (admin["address"], admin["port_value"]), [(pod.ip, HBONE_PORT)])
        wait_for(name, partial(netns.in_namespace, self.net.pods[pod.name], up), 60, self.procs[name])

    def run_waypoints(self, boots: Bootstraps | None = None) -> None:
        """Restart every waypoint's Envoy on ``boots``' waypoint bootstraps (default: the run's
        own translation); tests use it to run the unprotected waypoint and then restore it."""
        assert self.ambient_pods is not None and self.translation is not None
        boots = boots or self.translation
        for proxy, pod in self.ambient_pods.waypoints.items():
            self.procs[f"envoy-{proxy}"].stop()
            self._start_waypoint(proxy, pod, boots.by_proxy[proxy])
        self.log("waypoints restarted" + (" on another translation" if boots is not self.translation else ""))

    def run_ztunnels(self, without_policies: Sequence[str] = ()) -> None:
        """Restart every ztunnel on istiod's push, ``without_policies`` (names) left out."""
        assert self.ambient_pods is not None
        for pod in self.ambient_pods.ambient_pods.values():
            self.procs[f"ztunnel-{pod.name}"].stop()
        self._start_ztunnels(self._write_ztunnel_config(without_policies))
        self.log("ztunnels restarted" + (f" without {', '.join(without_policies)}" if without_policies else ""))

    def _stop_ambient(self) -> None:
        for r in getattr(self, "relays", []):
            r.stop()
        self.relays = []
        if self.net is not None:
            self.net.close()
            self.net = None

    def service_vip(self, app: str) -> tuple[str, int]:
        """The cluster address of an app's Service (what a workload in the mesh connects to)."""
        assert self.ambient_pods is not None
        a = next(x for x in self.config.apps if x.name == app)
        svc = next(o for o in self.ambient_pods.objects if o["kind"] == "Service"
                   and o["metadata"]["name"] == a.service.name and o["metadata"]["namespace"] == a.service.namespace)
        return svc["spec"]["clusterIP"], a.service.port

    def pod_address(self, app: str) -> tuple[str, int]:
        """An ambient app's pod address and port."""
        assert self.ambient_pods is not None
        pod = next(p for p in self.ambient_pods.ambient_pods.values() if p.app == app)
        return pod.ip, pod.port

    def curl_from(self, pod: str, url: str, headers: dict[str, str] | None = None,
                  timeout: float = 10) -> tuple[int, str]:
        """An HTTP GET from inside an ambient pod (its ztunnel carries it, as the mesh does):
        (status, body); status 0 when the connection failed or was closed without an answer."""
        cmd = ["curl", "-sS", "-m", str(int(timeout)), "-o", "-", "-w", "\n%{http_code}", url]
        for k, v in (headers or {}).items():
            cmd[1:1] = ["-H", f"{k}: {v}"]
        p = self.in_pod(pod, cmd, timeout=timeout + 10)
        body, _, code = p.stdout.rpartition("\n")
        return int(code or 0), body

    def waypoint_stat(self, name: str, proxy: str | None = None) -> int:
        """A counter of a waypoint's Envoy (read from its admin inside its pod namespace), e.g. how
        many requests its RBAC denied; summed over every stat whose name ends with ``name``."""
        assert self.ambient_pods is not None and self.translation is not None and self.net is not None
        proxy = proxy or next(iter(self.ambient_pods.waypoints))
        admin = self.translation.by_proxy[proxy]["admin"]["address"]["socket_address"]
        url = f"http://{admin['address']}:{admin['port_value']}/stats?filter={name}$"
        text = self.curl_from(self.ambient_pods.waypoints[proxy].name, url)[1]
        return sum(int(v) for line in text.splitlines() if ": " in line
                   for k, v in [line.rsplit(": ", 1)] if k.endswith(name) and v.isdigit())

    def ztunnel_log(self, app: str) -> str:
        """The log of the ztunnel at an ambient app's pod (its access log names the policy that
        refused a connection)."""
        assert self.ambient_pods is not None
        pod = next(p for p in self.ambient_pods.ambient_pods.values() if p.app == app)
        return (self.run_dir / f"ztunnel-{pod.name}.log").read_text()

    def in_pod(self, pod: str, cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside an ambient pod's network namespace (tests: a request from the mesh
        client, or from an app pod, straight to another pod)."""
        if self.net is None or pod not in self.net.pods:
            raise HarnessError(f"no ambient pod {pod!r} in this run")
        return subprocess.run(self.net.command(pod, cmd), capture_output=True, text=True, timeout=timeout)
