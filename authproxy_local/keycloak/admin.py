"""The one Keycloak admin REST client, for test setup and checks, never for the stack's own objects.

The stack's realm, client, mappers, groups and users are created by the real pulumi-keycloak
provider (`pulumi up`, :mod:`authproxy_local.cluster.stacks`). This module only does what a user
(or a test) does by hand around it:

- :func:`create_existing`: what a ``realmMode: existing`` stack expects to find already — the
  realm, groups it looks up instead of managing, and the admin client (client-credentials, with a
  service account holding the realm-management roles the stack's comment names) the provider
  logs in with;
- :class:`AdminSession`: admin REST calls for test-only objects (tests/e2e/kc_fixtures.py;
  :func:`create_user` for test users) and checks (sessions, what `make engine`'s stacks
  created). Errors name method, path and status, never a request body.

Imports: the standard library and ``requests``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

ADMIN_CLIENT_ROLES = ("manage-clients", "manage-users", "view-realm")
"""realm-management roles of the pre-made admin client's service account: manage the stack's
client and users/groups (what Pulumi.prod.yaml's comment asks a user for), and read the realm (the
stack looks the existing realm up)."""


class KeycloakAdminError(RuntimeError):
    """An admin REST call failed; the message names method, path and status."""


def make_password(length: int = 32) -> str:
    """A random password for test-only objects (URL-safe characters)."""
    return secrets.token_urlsafe(length)[:length]


@dataclass
class AdminSession:
    """Admin REST access: base URL (http://127.0.0.1:PORT) and admin credentials of ``realm``."""

    base_url: str
    username: str
    password: str
    realm: str = "master"
    client_id: str = "admin-cli"
    timeout: float = 30.0
    verify: str | bool = True
    """CA file for an HTTPS base URL."""
    _token: str | None = field(default=None, repr=False)
    _token_expiry: float = 0.0

    def __post_init__(self) -> None:
        import requests

        self._http = requests.Session()
        self._http.trust_env = False
        self._http.verify = self.verify

    def token(self) -> str:
        if self._token and time.monotonic() < self._token_expiry - 10:
            return self._token
        r = self._http.post(
            f"{self.base_url}/realms/{self.realm}/protocol/openid-connect/token",
            data={"grant_type": "password", "client_id": self.client_id,
                  "username": self.username, "password": self.password},
            timeout=self.timeout,
        )
        if r.status_code != 200:
            raise KeycloakAdminError(f"admin login to realm {self.realm!r} failed: HTTP {r.status_code}")
        body = r.json()
        self._token = body["access_token"]
        self._token_expiry = time.monotonic() + float(body.get("expires_in", 60))
        return self._token

    def call(self, method: str, path: str, json: Any = None, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        """``method`` on /admin{path}; returns the response."""
        r = self._http.request(
            method, f"{self.base_url}/admin{path}", json=json, timeout=self.timeout,
            headers={"Authorization": f"Bearer {self.token()}"},
        )
        if r.status_code not in ok:
            detail = r.text[:300].replace("\n", " ")
            raise KeycloakAdminError(f"{method} /admin{path}: HTTP {r.status_code}: {detail}")
        return r

    def lookup(self, path: str) -> tuple[int, Any]:
        """GET /admin{path} without raising: (status, JSON body or text) - for checks whose
        answer may be 404."""
        r = self._http.get(f"{self.base_url}/admin{path}", timeout=self.timeout,
                           headers={"Authorization": f"Bearer {self.token()}"})
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    def create(self, path: str, body: Any) -> str:
        """POST and return the new object's id (the Location header's last segment)."""
        r = self.call("POST", path, body, ok=(201,))
        return str(r.headers.get("Location", "")).rstrip("/").rsplit("/", 1)[-1]


def create_user(session: AdminSession, realm: str, username: str, email: str, names: tuple[str, str],
                group_ids: Iterable[str] = ()) -> str:
    """A test user in ``realm``: enabled, email verified, ``names`` (first, last), a fresh random
    password (not temporary), member of the groups with these ids. Returns the password."""
    password = make_password(24)
    uid = session.create(f"/realms/{realm}/users", {
        "username": username, "email": email, "emailVerified": True, "enabled": True,
        "firstName": names[0], "lastName": names[1]})
    session.call("PUT", f"/realms/{realm}/users/{uid}/reset-password",
                 {"type": "password", "value": password, "temporary": False})
    for g in group_ids:
        session.call("PUT", f"/realms/{realm}/users/{uid}/groups/{g}")
    return password


def create_existing(session: AdminSession, lookups: Iterable[Mapping[str, Any]],
                    realm_settings: Mapping[str, Any] | None = None,
                    admin_client: tuple[str, str, str] | None = None) -> list[str]:
    """Create what the stack looks up instead of creating (``getRealm`` / ``getGroup`` in the
    render's ``lookups``), with Keycloak's defaults plus ``realm_settings`` for a realm, and the
    admin client ``(realm, clientId, secret)`` when the stack logs in with client credentials."""
    made = []
    realms, groups = [], []
    for lk in lookups:
        fn = str(lk["function"]).rsplit(":", 1)[-1]
        args = dict(lk.get("args") or {})
        if fn == "getRealm":
            realms.append(args["realm"])
        elif fn == "getGroup":
            # by full path (the stack looks groups up with group_path), or by name (top level)
            groups.append((args["realmId"], args.get("groupPath") or "/" + args["name"]))
        else:
            raise KeycloakAdminError(f"the stack looks up {lk['function']}; the harness cannot pre-create it")
    if admin_client and admin_client[0] not in realms and admin_client[0] != "master":
        realms.append(admin_client[0])
    for realm in realms:
        session.call("POST", "/realms", {"realm": realm, "enabled": True, **(realm_settings or {})}, ok=(201,))
        made.append(f"realm {realm}")
    for realm, path in groups:
        # a nested path's parents first (a parent made for an earlier path is reused)
        parent = ""
        for i, part in enumerate(p for p in path.split("/") if p):
            at = "/" + "/".join([x for x in path.split("/") if x][: i + 1])
            found = session.call("GET", f"/realms/{quote(realm)}/group-by-path{quote(at)}", ok=(200, 404))
            if found.status_code == 200:
                parent = found.json()["id"]
                continue
            where = f"/realms/{quote(realm)}/groups" + (f"/{parent}/children" if parent else "")
            parent = session.create(where, {"name": part})
        made.append(f"group {path}")
    if admin_client:
        realm, client_id, secret = admin_client
        cid = session.create(f"/realms/{quote(realm)}/clients", {
            "clientId": client_id, "protocol": "openid-connect", "publicClient": False, "secret": secret,
            "standardFlowEnabled": False, "directAccessGrantsEnabled": False, "serviceAccountsEnabled": True,
        })
        user = session.call("GET", f"/realms/{quote(realm)}/clients/{cid}/service-account-user").json()
        (rm,) = session.call("GET", f"/realms/{quote(realm)}/clients?clientId=realm-management").json()
        roles = [session.call("GET", f"/realms/{quote(realm)}/clients/{rm['id']}/roles/{r}").json()
                 for r in ADMIN_CLIENT_ROLES]
        session.call("POST", f"/realms/{quote(realm)}/users/{user['id']}/role-mappings/clients/{rm['id']}", roles)
        made.append(f"admin client {client_id} ({', '.join(ADMIN_CLIENT_ROLES)})")
    return made
