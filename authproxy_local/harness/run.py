"""The orchestration of one harness run: prepare (render, run directory, addresses, certificates,
the stack's secret config), start every part in order, stop everything, and the fault controls.

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.render`, :mod:`authproxy_local.keycloak`,
``components.config`` and the parts of this room.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from authproxy_local import install
from authproxy_local.core import local_map
from authproxy_local.core.pki import make_tls, mesh_identities
from authproxy_local.core.processes import HarnessError, free_port, pick_gateway_ip
from authproxy_local.keycloak.admin import make_password
from authproxy_local.mesh.workloads import app_pods
from authproxy_local.mesh.workloads import identities as workload_identities
from components.config import KEYCLOAK_ADMIN_PASSWORD_KEY, required_secret_keys

from .ambient import AmbientPart
from .redis import RedisPart
from .rollout import RolloutPart
from .runs import new_run_dir

SECRET_LENGTHS = {KEYCLOAK_ADMIN_PASSWORD_KEY: 32}
"""Length of the secret config values a run makes up (a user supplies these); others: 40."""


class Harness(RedisPart, RolloutPart, AmbientPart):
    """Starts, controls and stops the rendered stack locally. See :mod:`authproxy_local.harness`."""

    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> Harness:
        """Start everything; on any failure stop what was started and re-raise."""
        self._stopped = False
        self._was_started = True
        self._prev_handlers: dict[int, Any] = {}
        self._install_signal_handlers()
        t_all = time.monotonic()
        try:
            # Everything installed first: no install waits while a process (or a lock of the
            # shared cache, such as Keycloak's start lock) is held.
            install.ensure_group("harness")
            self._prepare()
            if self.is_ambient:
                self._prepare_ambient()
            self._start_keycloak_process()
            self._start_cluster()
            self._start_echo_and_proxy()
            self._wait_keycloak_and_up()
            self._start_redis()
            self._wait_redis()
            if self.before_gateway is not None:
                self.before_gateway(self)
            # The gateway starts once Keycloak serves the realm, as istiod only pushes JWT
            # policies after it fetched their JWKS; oauth2-proxy needs the gateway for discovery.
            # oauth2-proxy's pods exist (not ready) before the gateway's first translation.
            self._plan_proxy_pods()
            self._start_envoy()
            if self.is_ambient:
                assert self.xds_output is not None
                self._start_ambient(self.xds_output)
            self._start_oauth2_proxy()
        except BaseException:
            self.log("start failed; stopping everything started so far")
            self.stop()
            raise
        self.timings.add("total", time.monotonic() - t_all)
        self.log(f"ready in {self.timings.seconds['total']}s: {self.timings.seconds}")
        return self

    def stop(self) -> None:
        """Stop every process and thread this harness started; remove the temp dir."""
        self._stopped = True  # the probers and istiod's pushes end
        pods = [p.name for p in self._endpoints.proxy_pods] if self._endpoints else []
        first = (*pods, "envoy", *(n for n in self.procs if n.startswith("envoy-")), "keycloak")
        for name in [*first, *(n for n in self.procs if n not in first)]:
            p = self.procs.get(name)
            if p is not None:
                p.stop()
        if self.keycloak is not None:
            self.keycloak.stop()  # also lets go of the start lock if the start failed midway
        for e in set(self.echo.values()):
            with contextlib.suppress(Exception):
                e.stop()
        self.echo.clear()
        if self.connect_proxy:
            self.connect_proxy.stop()
            self.connect_proxy = None
        self._stop_ambient()
        self._stop_cluster()
        if self._tmp and self._tmp.exists():
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._restore_signal_handlers()
        if not getattr(self, "_was_started", False):
            return
        self._was_started = False
        self.log("stopped")

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: Any) -> None:
            self.stop()
            prev = self._prev_handlers.get(signum)
            if callable(prev):
                prev(signum, frame)
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            self._prev_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, prev in getattr(self, "_prev_handlers", {}).items():
            with contextlib.suppress(Exception):
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._prev_handlers = {}

    # ---- preparation -----------------------------------------------------------------------

    def _prepare(self) -> None:
        t0 = time.monotonic()
        if self.render is None:
            from authproxy_local.render import render

            self.render = render(self.stack, self.mode, self.overrides or None)
        self.timings.add("render", time.monotonic() - t0)
        self.run_id, self._run_dir = new_run_dir(self.stack, self.render.mode)
        self._tmp = Path(tempfile.mkdtemp(prefix="authproxy-run-"))
        os.chmod(self.tmp, 0o700)
        self.log(f"stack {self.stack}, ext_authz mode {self.render.mode}, logs in {self.run_dir}")

        # The secrets a user supplies as stack config: the Keycloak admin password (also the local
        # Keycloak's bootstrap admin password), and whatever else the config requires (a pre-made
        # admin client's secret, an external Redis's password). Everything else is generated by
        # pulumi-random in the run's `pulumi up`.
        self.keycloak_admin_password = make_password(SECRET_LENGTHS[KEYCLOAK_ADMIN_PASSWORD_KEY])
        self.config_secrets = {KEYCLOAK_ADMIN_PASSWORD_KEY: self.keycloak_admin_password}
        for key in required_secret_keys(self.config):
            self.config_secrets.setdefault(key, make_password(SECRET_LENGTHS.get(key, 40)))

        gw_ip = pick_gateway_ip()
        # Every public host by name (no wildcard even if the Gateway has one, so the gateway's
        # certificate never covers the Keycloak host).
        tls = make_tls(self.public_hosts, self.tmp / "tls", keycloak_host=self.config.keycloak.host)
        # The mesh's workload identities (istiod's CA role): one SPIFFE certificate per service
        # account of the gateway and the apps, served to the proxies as SDS `default`.
        mesh_ca, identities = mesh_identities(self.tmp / "mesh", workload_identities(self.config))
        pods = app_pods(self.config, self.misconfigured_pods)
        main = {a.name: f"{a.name}-harness" for a in self.config.apps if not a.ambient}  # ambient: no sidecar
        pod_sidecars = {p.name: (gw_ip, free_port(gw_ip)) for p in pods if p.sidecar}
        self._endpoints = local_map.LocalEndpoints(
            gateway_ip=gw_ip, misconfigured_pods=self.misconfigured_pods,
            # Every local listener sits on the run's own loopback address: other processes on the
            # machine (and outgoing connections, whose source is 127.0.0.1) never take its ports
            # between allocation and bind.
            keycloak=(gw_ip, free_port(gw_ip)),
            oauth2_proxy=(gw_ip, free_port(gw_ip)),
            oauth2_proxy_metrics=(gw_ip, free_port(gw_ip)),
            redis=(gw_ip, free_port(gw_ip)),
            sidecars={a: pod_sidecars[pod] for a, pod in main.items()},
            pod_sidecars=pod_sidecars,
            mesh_ca_file=mesh_ca,
            identities=identities,
            envoy_admin=(gw_ip, free_port(gw_ip)),
            keycloak_https=(gw_ip, free_port(gw_ip)),
            ca_file=tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file,
            keycloak_cert_file=tls.keycloak_cert_file, keycloak_key_file=tls.keycloak_key_file,
        )

    # ---- fault control ---------------------------------------------------------------------

    def stop_component(self, name: str) -> None:
        """Stop one component (fault tests). Redis is stopped with SHUTDOWN-like SIGTERM, which
        writes its data first; the others with SIGTERM."""
        if name == "oauth2-proxy":
            self.stop_proxies()  # every replica
            self.log("stopped oauth2-proxy (every replica)")
            return
        p = self.procs.get(name)
        if p is None:
            raise HarnessError(f"unknown component {name!r}")
        p.stop()
        self.log(f"stopped {name}")

    def start_component(self, name: str) -> float:
        """Start a stopped component again with the same settings; returns seconds to ready."""
        t0 = time.monotonic()
        if name == "redis":
            p = self.procs["redis"]
            p.popen = None
            p.start()
            self._wait_redis()
        elif name == "keycloak":
            self._start_keycloak_process(lock=False)
            self._wait_keycloak()
        elif name == "oauth2-proxy":
            self.start_proxies()
        elif name == "envoy":
            self._start_envoy(only=("gateway",))
        else:
            raise HarnessError(f"unknown component {name!r}")
        self.log(f"started {name} again in {time.monotonic() - t0:.1f}s")
        return time.monotonic() - t0

    def restart_component(self, name: str) -> float:
        self.stop_component(name)
        return self.start_component(name)

    def alive(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.alive()

    def summary(self) -> dict[str, Any]:
        """Non-secret facts for logs and the demo banner."""
        e = self._endpoints
        return {
            "run": self.run_id,
            "mode": self.render.mode,
            "gateway": e.gateway_ip if e else None,
            "logs": str(self._run_dir),
            "timings": self.timings.seconds,
            "gateway_config": self.gateway_config,
            "istio_only_removed": self.translation.removed if self.translation else None,
            "pids": {n: p.pid for n, p in self.procs.items()},
        }
