"""The run's Envoys: the ingress gateway (HTTPS 443 + HTTP 80 on the run's loopback address) and
one Envoy per app playing its sidecar (inbound), each running the configuration istiod generates
for that proxy: Istio's own translation (``tools/istio-xds``) over the render, assembled into
static bootstraps by :mod:`authproxy_local.mesh.adapter`. istiod fetches the JWKS from the local
Keycloak over TLS (Keycloak's HTTPS listener, reached through a CONNECT proxy that knows only its
host).

Endpoints that change during the run (oauth2-proxy's pods start, turn ready or not, terminate)
reach the running gateway as istiod pushes them: :meth:`EnvoyPart.request_push` marks the
EndpointSlice changed, a background "istiod" waits out a debounce (istiod's
``PILOT_DEBOUNCE_AFTER``, 100 ms), translates again with the current pods and writes the new
ClusterLoadAssignments to the files the gateway's EDS subscription watches.

Imports: :mod:`authproxy_local.mesh`, :mod:`authproxy_local.core`, :mod:`authproxy_local.install`,
:mod:`.state`.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from authproxy_local import install
from authproxy_local.core.net import ConnectProxy
from authproxy_local.core.processes import HarnessError, free_port, wait_for
from authproxy_local.mesh import adapter, envoy
from authproxy_local.mesh.workloads import workloads

from .state import HarnessState

DEBOUNCE_SECONDS = 0.1
"""istiod's PILOT_DEBOUNCE_AFTER: how long it waits for more changes before it pushes."""


class EnvoyPart(HarnessState):
    _admin: dict[str, tuple[str, int]] | None = None
    envoy_debug_logs = True
    """ext_authz, jwt and rbac at debug level in every Envoy's log (why a request was refused);
    the soak turns it off: at hundreds of requests/s it writes about 1 MB/s per Envoy and takes
    the CPU the system under test needs."""
    _istiod: threading.Thread | None = None
    access_log = False
    """Every Envoy logs each request (meshConfig ``accessLogFile: /dev/stdout``, Istio's default
    format: response flags, response code details, upstream host) to its log: why a request
    failed, at a cost of about one line per request (the soak's ``--access-log``)."""

    def _translation(self, render: Any, own: bool) -> tuple[dict[str, Any], Any]:
        """istiod's translation of ``render`` plus the harness's workloads as they are now."""
        exe = install.ensure("istio-xds")
        w = workloads(render, self.endpoints)
        directory = adapter.write_input(
            render, w, self.run_dir / ("istio-xds" if own else f"istio-xds-{render.mode}"),
            {"accessLogFile": "/dev/stdout"} if self.access_log else None)
        jwks_proxy = ConnectProxy([self.config.keycloak.host], self.endpoints.keycloak_https).start()
        try:
            out = adapter.translate(
                exe, directory, adapter.translator_env(os.environ, jwks_proxy.address, self.ca_file))
        finally:
            jwks_proxy.stop()
        return out, w

    @property
    def eds_dir(self) -> Any:
        """Where the run's gateway reads the endpoints of oauth2-proxy's Service (EDS files)."""
        return self.tmp / "eds"

    def translate(self, render: Any = None) -> adapter.Bootstraps:
        """Istio's translation of the render (plus the harness's pods, Services and EndpointSlices)
        into one bootstrap per proxy (gateway, each app's sidecar). With ``render``, that render
        (e.g. the other ext_authz mode's, for the benchmark) on this run's addresses, all static;
        the run's own translation is kept for the run, its changing endpoints in EDS files."""
        t0 = time.monotonic()
        own = render is None
        render = self.render if own else render
        out, w = self._translation(render, own)
        if not self._admin:
            self._admin = {p.name: (self.gateway_ip, free_port(self.gateway_ip)) for p in w.proxies}
            self._admin["gateway"] = self.endpoints.envoy_admin
        boots = adapter.bootstraps(out, w, self.endpoints, self.config.keycloak.host, self._admin,
                                   adapter.credential_names(render), self.eds_dir if own else None,
                                   mesh=getattr(self, "mesh", None))
        if own:
            self.translation = boots
            self.xds_output = out
            self.timings.add("istio-xds", time.monotonic() - t0)
        return boots

    # ---- istiod's pushes -------------------------------------------------------------------

    def push_endpoints(self) -> float:
        """Translate with the current pods and EndpointSlice and write the gateway's endpoints
        (what istiod pushes after an EndpointSlice change); returns the seconds it took."""
        t0 = time.monotonic()
        with self._push_state()[0]:
            out, w = self._translation(self.render, True)
            self._push_version = getattr(self, "_push_version", 1) + 1
            adapter.write_endpoints(out, w, self.eds_dir, str(self._push_version))
        states = ", ".join(f"{p.name} {'terminating' if p.terminating else 'ready' if p.ready else 'not ready'}"
                           for p in self.endpoints.proxy_pods)
        self.log(f"istiod push {self._push_version} ({time.monotonic() - t0:.2f}s): {states}")
        return time.monotonic() - t0

    def _push_state(self) -> tuple[threading.Lock, threading.Condition]:
        if getattr(self, "_push_mutex", None) is None:
            self._push_mutex = threading.Lock()
            self._push_cond = threading.Condition()
            self._push_requested = 0
            self._push_done = 0
        return self._push_mutex, self._push_cond

    def request_push(self) -> None:
        """An EndpointSlice changed: istiod pushes after its debounce (in the background)."""
        _, cond = self._push_state()
        with cond:
            self._push_requested += 1
            cond.notify_all()
        if self._istiod is None or not self._istiod.is_alive():
            self._istiod = threading.Thread(target=self._istiod_loop, name="istiod-push", daemon=True)
            self._istiod.start()

    def _istiod_loop(self) -> None:
        _, cond = self._push_state()
        while not self._stopped:
            with cond:
                if self._push_done >= self._push_requested:
                    cond.wait(timeout=1)
                    continue
            time.sleep(DEBOUNCE_SECONDS)
            with cond:
                target = self._push_requested
            try:
                self.push_endpoints()
            except Exception as e:  # noqa: BLE001 - logged; the next change pushes again
                self.log(f"istiod push failed: {e}")
            with cond:
                self._push_done = target
                cond.notify_all()

    def wait_pushed(self, timeout: float = 60) -> None:
        """Return once every change requested so far has been pushed to the gateway."""
        _, cond = self._push_state()
        with cond:
            want = self._push_requested
            if not cond.wait_for(lambda: self._push_done >= want, timeout=timeout):
                raise HarnessError(f"istiod's push did not happen within {timeout:.0f}s")

    def envoy_bootstrap(self, proxy: str = "gateway") -> dict[str, Any]:
        """The static bootstrap one proxy runs (istiod's config through the adapter)."""
        boots = self.translation or self.translate()
        return boots.by_proxy[proxy]

    xds_output: dict[str, Any] | None = None
    """The translator's raw output of the run (ztunnel's part is no Envoy bootstrap)."""

    @property
    def gateway_config(self) -> str:
        """Which translation the proxies run (the numbers line of `make e2e`)."""
        v = self.translation.istio_version if self.translation else "?"
        return f"istiod {v}"

    def _start_envoy(self, boots: adapter.Bootstraps | None = None, only: tuple[str, ...] = ()) -> None:
        """Start the Envoys of ``boots`` (default: the run's translation); ``only`` limits it to
        those proxies (e.g. ``("gateway",)``)."""
        boots = boots or self.translation or self.translate()
        assert self._admin is not None
        t0 = time.monotonic()
        started = []
        for proxy, boot in boots.by_proxy.items():
            if only and proxy not in only:
                continue
            if proxy in self.endpoints.waypoints:
                continue  # a waypoint runs in its pod's namespace (harness/ambient.py)
            name = "envoy" if proxy == "gateway" else f"envoy-{proxy}"
            args = ["--component-log-level", "ext_authz:debug,jwt:debug,rbac:debug"] if self.envoy_debug_logs else []
            if proxy != "gateway":
                args += ["--concurrency", "1"]
            self.procs[name] = envoy.start(name, boot, self.run_dir, what=f"{proxy} (istiod's config)", args=args)
            started.append((name, proxy))
        for name, proxy in started:
            admin, first = self._admin[proxy], envoy.listen_addrs(boots.by_proxy[proxy])[:1]

            def ready(a: tuple[str, int] = admin, la: list[tuple[str, int]] = first) -> bool:
                return envoy.ready(a, la)

            wait_for(name, ready, 60, self.procs[name])
        self.timings.add("envoy", time.monotonic() - t0)

    def run_proxies(self, boots: adapter.Bootstraps | None = None) -> None:
        """Restart every Envoy (gateway and sidecars) on ``boots`` (default: the run's own);
        tests use it to run a deliberately changed translation, then restore the real one."""
        for name in [n for n in self.procs if n == "envoy" or n.startswith("envoy-")]:
            self.procs[name].stop()
        self.log("stopped every envoy")
        self._start_envoy(boots)

    def run_gateway(self, boots: adapter.Bootstraps | None = None) -> None:
        """Restart the gateway Envoy on ``boots``' gateway bootstrap (default: the run's own);
        tests use it to run a deliberately wrong translation and then restore the real one."""
        self.procs["envoy"].stop()
        self.log("stopped envoy")
        self._start_envoy(boots, only=("gateway",))
