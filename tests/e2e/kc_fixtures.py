"""Test-only Keycloak objects the e2e tests add next to the rendered ones (never part of the stack):

- a **signing key the tests hold** (RSA, ``priority 1`` so Keycloak keeps signing its own tokens
  with its generated key) published in the realm's JWKS. With it the tests forge tokens that pass
  the signature check, so a rejected expired / wrong-issuer / wrong-audience token proves the
  *claim* checks work, not merely the signature check;
- a **machine client** (client-credentials, service account) with an audience mapper for the
  stack's client id: what an operator registers for an API client of an app with ``apiClients``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authproxy_local.harness import Harness
from authproxy_local.keycloak.admin import create_user, make_password

TEST_KEY_KID_NAME = "authproxy-e2e-test-key"
MACHINE_CLIENT = "authproxy-e2e-machine"


def add_test_objects(h: Harness) -> None:
    """``before_gateway`` hook: add the test key and machine client; keep their secrets in
    ``h.extras``."""
    s = h.admin_session()
    realm = h.config.keycloak.realm
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    realm_id = s.call("GET", f"/realms/{realm}").json()["id"]
    s.create(f"/realms/{realm}/components", {
        "name": TEST_KEY_KID_NAME,
        "providerId": "rsa",
        "providerType": "org.keycloak.keys.KeyProvider",
        "parentId": realm_id,
        "config": {"priority": ["1"], "enabled": ["true"], "active": ["true"],
                   "algorithm": ["RS256"], "privateKey": [pem]},
    })
    keys = s.call("GET", f"/realms/{realm}/keys").json()["keys"]
    kid = next(k["kid"] for k in keys if k.get("providerPriority") == 1 and k.get("algorithm") == "RS256")
    secret = make_password(40)
    cid = s.create(f"/realms/{realm}/clients", {
        "clientId": MACHINE_CLIENT, "protocol": "openid-connect", "publicClient": False,
        "secret": secret, "standardFlowEnabled": False, "directAccessGrantsEnabled": False,
        "serviceAccountsEnabled": True, "fullScopeAllowed": False,
    })
    s.create(f"/realms/{realm}/clients/{cid}/protocol-mappers/models", {
        "name": "audience", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
        "config": {"included.client.audience": h.config.keycloak.client_id,
                   "access.token.claim": "true", "id.token.claim": "false"},
    })
    h.extras.update(test_key=key, test_kid=kid, machine_secret=secret)
    add_lookalike_group_member(h)


LOOKALIKE_PARENT = "e2e-elsewhere"
LOOKALIKE_USER = "e2e-lookalike"


def add_lookalike_group_member(h: Harness) -> None:
    """A user in a group named like an app's group, but under another parent
    (``/e2e-elsewhere/<group>``): with full group paths it satisfies no app."""
    from authproxy_local.harness import DemoUser

    group = next((g for a in h.config.apps for g in a.groups if not g.startswith("/")), None)
    if group is None:
        return
    s = h.admin_session()
    realm = h.config.keycloak.realm
    parent = s.create(f"/realms/{realm}/groups", {"name": LOOKALIKE_PARENT})
    child = s.create(f"/realms/{realm}/groups/{parent}/children", {"name": group})
    email = f"{LOOKALIKE_USER}@{h.config.domain}"
    password = create_user(s, realm, LOOKALIKE_USER, email, ("E2E", "Lookalike"), [child])
    h.users[LOOKALIKE_USER] = DemoUser(LOOKALIKE_USER, password, [f"/{LOOKALIKE_PARENT}/{group}"], email)


def add_prod_test_objects(h: Harness) -> None:
    """``before_gateway`` hook for the prod stack: the test key and machine client, plus one test
    user per app group and one in no group (prod has no demo users). Their passwords join
    ``h.users`` like demo users."""
    from authproxy_local.harness import DemoUser

    add_test_objects(h)
    s = h.admin_session()
    realm = h.config.keycloak.realm
    groups = {g["name"]: g["id"] for g in s.call("GET", f"/realms/{realm}/groups").json()}
    wanted = [(f"e2e-{g}", [g]) for g in sorted({g for a in h.config.apps for g in a.groups})]
    wanted.append(("e2e-nogroup", []))
    for username, member_of in wanted:
        email = f"{username}@{h.config.domain}"
        password = create_user(s, realm, username, email, ("E2E", username), [groups[g] for g in member_of])
        h.users[username] = DemoUser(username, password, member_of, email)


def forge(h: Harness, *, key: Any = None, kid: str | None = None, alg: str = "RS256",
          **claims: Any) -> str:
    """A JWT signed with the test key (or ``key``); claims default to a valid token of the stack's
    issuer and audience, overridden by ``claims`` (``None`` removes a claim)."""
    now = int(time.time())
    body = {
        "iss": h.issuer, "aud": h.config.keycloak.client_id, "sub": str(uuid.uuid4()),
        "azp": MACHINE_CLIENT, "iat": now, "exp": now + 300, "typ": "Bearer",
        "preferred_username": "forged",
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"kid": kid or h.extras["test_kid"]}
    if alg == "none":
        return jwt.encode(body, "", algorithm="none", headers=headers)
    return jwt.encode(body, key or h.extras["test_key"], algorithm=alg, headers=headers)


def machine_token(h: Harness, session: Any) -> str:
    """A real access token of the machine client (client-credentials grant through the gateway)."""
    r = session.post(
        f"{h.issuer}/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "client_id": MACHINE_CLIENT,
              "client_secret": h.extras["machine_secret"]},
        verify=h.ca_file, timeout=30,
    )
    assert r.status_code == 200, f"client-credentials grant failed: {r.status_code} {r.text[:200]}"
    return r.json()["access_token"]
