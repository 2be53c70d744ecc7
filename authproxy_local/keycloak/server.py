"""The one Keycloak launcher: ``kc.sh start-dev`` of the cached Keycloak home on loopback.

The live harness runs it with a plain-HTTP listener behind the gateway (``--proxy-headers``) and
an HTTPS listener for istiod's JWKS fetch; ``make engine`` with HTTPS only. Both keep the H2
database in the run's directory (a restart keeps realms, users and SSO sessions) and set
``--hostname`` so every issuer string is the one the stack expects. ``start-dev`` may re-run
Keycloak's build in the shared cached home when build options differ, so first starts are
serialised across processes (:func:`authproxy_local.core.locks.cache_lock`).

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.install`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from authproxy_local import install
from authproxy_local.core.locks import cache_lock
from authproxy_local.core.processes import Process, free_port, http_ok, wait_for

ADMIN_USER = "admin"
"""The bootstrap admin's username (KC_BOOTSTRAP_ADMIN_USERNAME)."""


@dataclass
class KeycloakServer:
    """One Keycloak process; the management port (health) is plain HTTP on ``host``."""

    work: Path
    """HOME of the process and the folder of its H2 database."""
    admin_password: str
    hostname: str
    """``--hostname``: the URL every issuer and redirect starts with."""
    log_path: Path
    host: str = "127.0.0.1"
    https_port: int = 0
    cert_file: str = ""
    key_file: str = ""
    http_port: int | None = None
    """A plain-HTTP listener (behind the gateway), or None for HTTPS only."""
    proxy_headers: bool = False
    """Trust X-Forwarded-* (the gateway in front of it)."""
    mgmt_port: int = 0
    proc: Process | None = None
    _lock: contextlib.ExitStack | None = field(default=None, repr=False)

    def command(self) -> tuple[list[str], dict[str, str]]:
        home = install.ensure("keycloak")
        java = install.keycloak_java()
        self.mgmt_port = self.mgmt_port or free_port(self.host)
        db = self.work / "keycloak-db" / "keycloakdb"
        db.parent.mkdir(parents=True, exist_ok=True)
        if self.http_port is None:
            # start-dev binds its HTTP port even with --http-enabled=false: a free one, not the
            # default 8080 (two runs on one machine collided there).
            http = ["--http-enabled=false", f"--http-port={free_port(self.host)}"]
        else:
            http = ["--http-enabled=true", f"--http-port={self.http_port}"]
        cmd = [
            str(home / "bin" / "kc.sh"), "start-dev", *http, f"--http-host={self.host}",
            f"--https-port={self.https_port}",
            f"--https-certificate-file={self.cert_file}", f"--https-certificate-key-file={self.key_file}",
            "--http-management-scheme=http",  # else the management port inherits HTTPS
            f"--hostname={self.hostname}",
            *(["--proxy-headers=xforwarded"] if self.proxy_headers else []),
            "--health-enabled=true", f"--http-management-port={self.mgmt_port}",
            f"--db-url=jdbc:h2:file:{db};NON_KEYWORDS=VALUE",
        ]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.work),
            "JAVA_HOME": str(Path(java).resolve().parent.parent),
            "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USER,
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password,
        }
        return cmd, env

    def launch(self, lock: bool = True) -> KeycloakServer:
        """Start the process; with ``lock``, hold the cache's Keycloak start lock until
        :meth:`wait_ready` returns (another process's first start may be augmenting the home)."""
        cmd, env = self.command()
        if lock:
            self._lock = contextlib.ExitStack()
            self._lock.enter_context(cache_lock("keycloak-start"))
        try:
            self.proc = Process("keycloak", cmd, env, self.log_path).start()
        except BaseException:
            self._release()
            raise
        return self

    def ready(self) -> bool:
        return http_ok(f"http://{self.host}:{self.mgmt_port}/health/ready")

    def wait_ready(self, timeout: float = 420) -> float:
        """Seconds until Keycloak reports ready; raises if the process dies or time runs out."""
        try:
            return wait_for("keycloak", self.ready, timeout, self.proc, interval=0.5)
        finally:
            self._release()

    def start(self, timeout: float = 420) -> float:
        self.launch()
        return self.wait_ready(timeout)

    def stop(self) -> None:
        self._release()
        if self.proc is not None:
            self.proc.stop(timeout=20)

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()
