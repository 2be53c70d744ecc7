"""The kubelet and the Deployment controller for oauth2-proxy's pods, with the values the
Deployment `pulumi up` created says (:func:`.oauth2_proxy.pod_spec_facts`), so the gateway sees
pods come and go as in a cluster:

- **readiness**: one prober per pod runs the rendered ``readinessProbe`` (path, period, timeout,
  failure and success thresholds); a change of verdict updates the pod's EndpointSlice conditions
  and asks istiod for a push (:meth:`.envoy.EnvoyPart.request_push`);
- **termination**: the pod is marked terminating at once (EndpointSlice ``ready: false, serving:
  true, terminating: true``; istiod drops it), its ``preStop`` sleep runs, then SIGTERM, then
  SIGKILL after ``terminationGracePeriodSeconds``;
- **rolling update** (``maxSurge: 1, maxUnavailable: 0``, the stack's strategy): a new pod, ready
  and then available after ``minReadySeconds``, before each old pod is deleted; the next new pod
  is created as soon as the old one is being deleted.

Imports: :mod:`authproxy_local.core`, :mod:`.oauth2_proxy`, :mod:`.envoy`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authproxy_local.core import local_map
from authproxy_local.core.processes import HarnessError, Process, http_ok

from .envoy import EnvoyPart
from .oauth2_proxy import ProxyPart


@dataclass
class RolloutEvent:
    """What happened when, during a rollout (seconds since it began)."""

    t: float
    what: str


@dataclass
class Rollout:
    events: list[RolloutEvent] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        self.events.append(RolloutEvent(round(time.monotonic() - self.started, 2), what))


class RolloutPart(ProxyPart, EnvoyPart):
    _probers: dict[str, threading.Thread] | None = None

    # ---- one pod ------------------------------------------------------------------------------

    def start_pod(self, pod: local_map.ProxyPod,
                  deployment: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None) -> Process:
        """Start the pod's container and its readiness prober."""
        cmd, env = self.oauth2_proxy_command(pod, deployment)
        with self.pods_lock:
            pod.ready = False  # a new container is ready once its probe says so
            p = Process(pod.name, cmd, env, self.run_dir / f"{pod.name}.log").start()
            self.procs[pod.name] = p
        if self._probers is None:
            self._probers = {}
        t = threading.Thread(target=self._probe_loop, args=(pod, p), name=f"probe-{pod.name}", daemon=True)
        self._probers[pod.name] = t
        t.start()
        return p

    def _probe_loop(self, pod: local_map.ProxyPod, proc: Process) -> None:
        """The kubelet's readiness prober for one container."""
        f = self.pod_facts()
        url = f"http://{pod.http[0]}:{pod.http[1]}{f.probe_path}"
        time.sleep(f.probe_delay)
        fails = oks = 0
        while not self._stopped and not pod.terminating and self.procs.get(pod.name) is proc:
            t0 = time.monotonic()
            ok = proc.alive() and http_ok(url, timeout=f.probe_timeout)
            fails, oks = (0, oks + 1) if ok else (fails + 1, 0)
            verdict = pod.ready
            if ok and oks >= f.probe_successes:
                verdict = True
            elif not ok and fails >= f.probe_failures:
                verdict = False
            with self.pods_lock:
                if self.procs.get(pod.name) is not proc:
                    break  # the container was replaced: its own prober decides now
                changed = verdict != pod.ready and not pod.terminating
                if changed:
                    pod.ready = verdict
            if changed:
                self.log(f"{pod.name} {'ready' if verdict else 'not ready'}")
                self.request_push()
            time.sleep(max(0.0, f.probe_period - (time.monotonic() - t0)))

    def wait_ready(self, pods: list[local_map.ProxyPod], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not all(p.ready for p in pods):
            for p in pods:
                proc = self.procs.get(p.name)
                if proc is not None and not proc.alive():
                    raise HarnessError(f"{p.name} exited (code {proc.poll()}); see {proc.log_path}")
            if time.monotonic() > deadline:
                raise HarnessError(f"oauth2-proxy pods not ready within {timeout:.0f}s: "
                                   + ", ".join(p.name for p in pods if not p.ready))
            time.sleep(0.05)
        self.wait_pushed()

    def delete_pod(self, pod: local_map.ProxyPod, rollout: Rollout | None = None) -> None:
        """Delete a pod as Kubernetes does: terminating (istiod drops the endpoint) while its
        preStop hook sleeps, SIGTERM, SIGKILL after the grace period; then gone."""
        f = self.pod_facts()
        with self.pods_lock:
            pod.terminating = True
            pod.ready = False
        self.request_push()
        if rollout:
            rollout.note(f"{pod.name} terminating (preStop sleep {f.drain_seconds}s)")
        t0 = time.monotonic()
        time.sleep(f.drain_seconds)
        proc = self.procs.get(pod.name)
        if proc is not None and proc.popen is not None and proc.alive():
            proc.stop(timeout=max(0.0, f.grace_seconds - (time.monotonic() - t0)), sig=signal.SIGTERM)
        if rollout:
            rollout.note(f"{pod.name} exited")
        with self.pods_lock:
            if pod in self.endpoints.proxy_pods:
                self.endpoints.proxy_pods.remove(pod)
            self.procs.pop(pod.name, None)
        self.request_push()

    # ---- the Deployment ------------------------------------------------------------------------

    def _start_oauth2_proxy(self) -> None:
        """Start every planned pod and wait until each is ready and in the gateway's endpoints."""
        t0 = time.monotonic()
        self._plan_proxy_pods()
        pods = list(self.endpoints.proxy_pods)
        for pod in pods:
            self.start_pod(pod)
        self.wait_ready(pods)
        self.timings.add("oauth2-proxy", time.monotonic() - t0)

    def stop_proxies(self) -> None:
        """Every pod's process gone at once (the fault tests' "oauth2-proxy is down"); the pods
        stay in the Deployment and their probers mark them not ready."""
        for pod in list(self.endpoints.proxy_pods):
            proc = self.procs.get(pod.name)
            if proc is not None:
                proc.stop()
            with self.pods_lock:
                pod.ready = False  # the kubelet sees the container gone
        self.request_push()

    def start_proxies(self) -> None:
        """Start the stopped pods again (the kubelet restarting their containers)."""
        pods = list(self.endpoints.proxy_pods)
        for pod in pods:
            proc = self.procs.get(pod.name)
            if proc is None or not proc.alive():
                self.start_pod(pod)
        self.wait_ready(pods)

    def rolling_restart(self, deployment: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
                        ) -> Rollout:
        """Replace every pod one at a time as the Deployment's rolling update does
        (``maxSurge: 1, maxUnavailable: 0``, ``minReadySeconds``). ``deployment``: the new pod
        template (e.g. after a secret rotation); default the current one. Returns once every old
        pod has exited."""
        d, c = deployment or self._proxy_deployment()
        strategy = (d.get("spec") or {}).get("strategy") or {}
        ru = strategy.get("rollingUpdate") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate" or str(ru.get("maxSurge", 1)) != "1" \
                or str(ru.get("maxUnavailable", 0)) != "0":
            raise HarnessError(f"the harness plays maxSurge 1 / maxUnavailable 0 only, not {strategy}")
        f = self.pod_facts()
        r = Rollout()
        old = list(self.endpoints.proxy_pods)
        deleting: list[threading.Thread] = []
        for pod in old:
            new = self.new_pod()
            self.start_pod(new, (d, c))
            r.note(f"{new.name} created")
            self.wait_ready([new])
            r.note(f"{new.name} ready")
            time.sleep(f.min_ready_seconds)
            r.note(f"{new.name} available (minReadySeconds {f.min_ready_seconds})")
            t = threading.Thread(target=self.delete_pod, args=(pod, r), name=f"delete-{pod.name}", daemon=True)
            t.start()
            deleting.append(t)
        for t in deleting:
            t.join()
        if deployment is not None:
            self._live_deployment = dict(d)
        self.wait_pushed()
        r.note("rollout complete")
        return r
