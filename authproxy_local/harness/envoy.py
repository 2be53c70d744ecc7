"""The run's Envoys: the ingress gateway (HTTPS 443 + HTTP 80 on the run's loopback address) and
one Envoy per app playing its sidecar (inbound), each running the configuration istiod generates
for that proxy: Istio's own translation (``tools/istio-xds``) over the render, assembled into
static bootstraps by :mod:`authproxy_local.mesh.adapter`. istiod fetches the JWKS from the local
Keycloak over TLS (Keycloak's HTTPS listener, reached through a CONNECT proxy that knows only its
host).

Imports: :mod:`authproxy_local.mesh`, :mod:`authproxy_local.core`, :mod:`authproxy_local.install`,
:mod:`.state`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from authproxy_local import install
from authproxy_local.core.net import ConnectProxy
from authproxy_local.core.processes import free_port, wait_for
from authproxy_local.mesh import adapter, envoy
from authproxy_local.mesh.workloads import workloads

from .state import HarnessState


class EnvoyPart(HarnessState):
    _admin: dict[str, tuple[str, int]] | None = None

    def translate(self, render: Any = None) -> adapter.Bootstraps:
        """Istio's translation of the render (plus the harness's pods, Services and EndpointSlices)
        into one static bootstrap per proxy (gateway, each app's sidecar). With ``render``, that
        render (e.g. the other ext_authz mode's, for the benchmark) on this run's addresses; the
        run's own translation is kept for the run."""
        t0 = time.monotonic()
        own = render is None
        render = self.render if own else render
        exe = install.ensure("istio-xds")
        w = workloads(render, self.endpoints)
        directory = adapter.write_input(
            render, w, self.run_dir / ("istio-xds" if own else f"istio-xds-{render.mode}"))
        kc = self.config.keycloak.host
        jwks_proxy = ConnectProxy([kc], self.endpoints.keycloak_https).start()
        try:
            out = adapter.translate(
                exe, directory, adapter.translator_env(os.environ, jwks_proxy.address, self.ca_file))
        finally:
            jwks_proxy.stop()
        if not self._admin:
            self._admin = {p.name: (self.gateway_ip, free_port(self.gateway_ip)) for p in w.proxies}
            self._admin["gateway"] = self.endpoints.envoy_admin
        boots = adapter.bootstraps(out, w, self.endpoints, kc, self._admin, adapter.credential_names(render))
        if own:
            self.translation = boots
            self.timings.add("istio-xds", time.monotonic() - t0)
        return boots

    def envoy_bootstrap(self, proxy: str = "gateway") -> dict[str, Any]:
        """The static bootstrap one proxy runs (istiod's config through the adapter)."""
        boots = self.translation or self.translate()
        return boots.by_proxy[proxy]

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
            name = "envoy" if proxy == "gateway" else f"envoy-{proxy}"
            args = ["--component-log-level", "ext_authz:debug,jwt:debug,rbac:debug"]
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
