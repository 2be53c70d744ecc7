"""What every part of a harness run shares: its settings, its addresses, its directories and
the processes it started (:class:`HarnessState`), and the public facts tests read from it.

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.mesh`, :mod:`authproxy_local.render`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authproxy_local.core import local_map
from authproxy_local.core.net import resolving
from authproxy_local.core.processes import HarnessError, Process
from authproxy_local.mesh.adapter import Bootstraps
from authproxy_local.mesh.connect_proxy import EnvoyConnectProxy

from .echo import EchoServer


@dataclass
class DemoUser:
    username: str
    password: str
    groups: list[str]
    email: str


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, what: str, seconds: float) -> None:
        self.seconds[what] = round(seconds, 2)


class HarnessState:
    """The run's state; the parts (:mod:`.stack`, :mod:`.keycloak`, :mod:`.redis`,
    :mod:`.envoy`, :mod:`.oauth2_proxy`) add behaviour on top of it."""

    _stopped = True
    """No run, or the run is stopping: background threads (probers, istiod's pushes) end."""
    misconfigured_pods = True
    """The exposed app's Service also selects a pod with other labels and one without a sidecar
    (fail-closed tests); the soak turns it off: it measures a cluster the preflight accepts, where
    the gateway's mTLS to a sidecar-less pod cannot fail requests."""

    def __init__(self, stack: str = "dev", mode: str | None = None,
                 overrides: Mapping[str, Any] | None = None, render_result: Any = None,
                 log: Callable[[str], None] | None = None,
                 before_gateway: Callable[[Any], None] | None = None) -> None:
        self.stack = stack
        self.mode = mode
        self.overrides = dict(overrides or {})
        self.render = render_result
        self._log_fn = log
        self.before_gateway = before_gateway
        self.extras: dict[str, Any] = {}
        """Test fixtures' own state (e.g. a test machine client)."""
        self.redis_replicas: list[tuple[str, int]] = []
        """Replica servers (sentinel mode), besides the first server in endpoints.redis."""
        self.timings = Timings()
        self.procs: dict[str, Process] = {}
        self.echo: dict[str, EchoServer] = {}
        self.connect_proxy: EnvoyConnectProxy | None = None
        self.config_secrets: dict[str, str] = {}
        """The stack's secret config values for this run (a user supplies these)."""
        self.users: dict[str, DemoUser] = {}
        self.run_id = ""
        self._run_dir: Path | None = None
        self._tmp: Path | None = None
        self._endpoints: local_map.LocalEndpoints | None = None
        self._cluster: Future[Any] | None = None
        self.keycloak_admin_password = ""
        self.translation: Bootstraps | None = None

    # ---- public information ----------------------------------------------------------------

    @property
    def endpoints(self) -> local_map.LocalEndpoints:
        """Where everything listens (set once start() has prepared the run)."""
        if self._endpoints is None:
            raise HarnessError("the harness has not been started")
        return self._endpoints

    @property
    def run_dir(self) -> Path:
        """This run's log directory (kept after stop)."""
        if self._run_dir is None:
            raise HarnessError("the harness has not been started")
        return self._run_dir

    @property
    def tmp(self) -> Path:
        """This run's private temp dir (secrets-bearing files; deleted on stop)."""
        if self._tmp is None:
            raise HarnessError("the harness has not been started")
        return self._tmp

    @property
    def config(self) -> Any:
        return self.render.config

    @property
    def ca_file(self) -> str:
        return self.endpoints.ca_file

    @property
    def gateway_ip(self) -> str:
        return self.endpoints.gateway_ip

    @property
    def public_hosts(self) -> list[str]:
        cfg = self.config
        hosts = [cfg.auth_hostname, *(a.host for a in cfg.apps), *cfg.gateway_hosts]
        return local_map.public_hosts(hosts, cfg.keycloak.host)

    def host_map(self) -> dict[str, str]:
        return dict.fromkeys(self.public_hosts, self.gateway_ip)

    def resolving(self) -> contextlib.AbstractContextManager[None]:
        """In-process resolution of the public hosts to this run's gateway."""
        return resolving(self.host_map())

    def app_url(self, app: str, path: str = "/") -> str:
        a = next(x for x in self.config.apps if x.name == app)
        return f"https://{a.host}{path}"

    @property
    def auth_url(self) -> str:
        return f"https://{self.config.auth_hostname}"

    @property
    def issuer(self) -> str:
        return self.config.keycloak.issuer

    def kube(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        """The render's Kubernetes objects of ``kind`` (and ``name``)."""
        return [o for o in self.render.kubernetes
                if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]

    def log(self, msg: str) -> None:
        line = f"[harness {self.run_id or '-'}] {msg}"
        if self._log_fn:
            self._log_fn(line)
        if self._run_dir:
            # another run on the machine may have pruned this run's directory (older harnesses
            # prune by age only): recreate it rather than fail a long run at its end
            self._run_dir.mkdir(parents=True, exist_ok=True)
            with open(self._run_dir / "harness.log", "a") as f:
                f.write(f"{dt.datetime.now().isoformat(timespec='seconds')} {msg}\n")
