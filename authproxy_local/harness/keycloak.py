"""The run's Keycloak: one :class:`authproxy_local.keycloak.server.KeycloakServer` with a plain-HTTP
listener behind the gateway (``--hostname`` set to the rendered Keycloak URL, so every issuer
string is exactly the render's) and an HTTPS listener with the Keycloak host's certificate, where
istiod (the translator) and the providers fetch from it; an H2 file database in the run's temp dir
(a restart keeps realm, users and SSO sessions); the admin client for tests.

Imports: :mod:`authproxy_local.keycloak`, :mod:`.state`.
"""

from __future__ import annotations

import time
from typing import Any

from authproxy_local.keycloak.admin import AdminSession
from authproxy_local.keycloak.server import ADMIN_USER, KeycloakServer

from .state import HarnessError, HarnessState


class KeycloakPart(HarnessState):
    keycloak: KeycloakServer | None = None

    def _keycloak_server(self) -> KeycloakServer:
        if self.keycloak is None:
            e = self.endpoints
            self.keycloak = KeycloakServer(
                work=self.tmp, admin_password=self.keycloak_admin_password, hostname=self.config.keycloak.url,
                log_path=self.run_dir / "keycloak.log", host=e.keycloak[0], http_port=e.keycloak[1],
                https_port=e.keycloak_https[1], cert_file=e.keycloak_cert_file, key_file=e.keycloak_key_file,
                proxy_headers=True)
        return self.keycloak

    def _start_keycloak_process(self, lock: bool = True) -> None:
        """Start Keycloak; with ``lock`` its first start holds the cache's start lock until ready
        (start-dev re-augments the shared, cached home when build options change)."""
        kc = self._keycloak_server().launch(lock=lock)
        assert kc.proc is not None
        self.procs["keycloak"] = kc.proc

    def _wait_keycloak(self, timeout: float = 420) -> None:
        kc = self._keycloak_server()
        kc.wait_ready(timeout)
        self.timings.add("keycloak", time.monotonic() - self.procs["keycloak"].started_at)

    def admin_session(self) -> AdminSession:
        host, port = self.endpoints.keycloak
        return AdminSession(f"http://{host}:{port}", ADMIN_USER, self.keycloak_admin_password)

    def keycloak_sessions(self, username: str) -> list[dict[str, Any]]:
        """The user's Keycloak SSO sessions (admin API)."""
        s = self.admin_session()
        realm = self.config.keycloak.realm
        users = s.call("GET", f"/realms/{realm}/users?username={username}&exact=true").json()
        if not users:
            raise HarnessError(f"no Keycloak user {username!r}")
        sessions: list[dict[str, Any]] = s.call("GET", f"/realms/{realm}/users/{users[0]['id']}/sessions").json()
        return sessions

    def existing_realm_settings(self) -> dict[str, Any]:
        """How the stand-in for an existing realm (realmMode: existing) is set: Keycloak's defaults
        except the SSO session lifetimes, which match the stack's session settings. Keycloak
        refuses a client whose session idle/max exceeds the realm's (HTTP 400 "Client session
        idle timeout cannot exceed realm SSO session idle timeout"), so an existing realm must
        allow at least the stack's lifetimes; tests/e2e/test_97_prod.py shows what happens with a
        realm left at Keycloak's defaults."""
        s = self.config.session
        return {"ssoSessionIdleTimeout": s.sso_session_idle_timeout,
                "ssoSessionMaxLifespan": s.sso_session_max_lifespan}
