"""Keycloak realm, client, mappers, groups and demo users, and the generated secrets, as the
program registers them under Pulumi mocks."""

from __future__ import annotations

import json

import pytest

from authproxy_local.render.mockrun import MOCK_SECRET_PREFIX, Run, is_secret, run_program

CLIENT = "keycloak:openid/client:Client"
AUDIENCE = "keycloak:openid/audienceProtocolMapper:AudienceProtocolMapper"
GROUPS = "keycloak:openid/groupMembershipProtocolMapper:GroupMembershipProtocolMapper"
REALM = "keycloak:index/realm:Realm"
GROUP = "keycloak:index/group:Group"
USER = "keycloak:index/user:User"


@pytest.fixture(scope="module")
def dev() -> Run:
    return run_program("dev")


@pytest.fixture(scope="module")
def prod() -> Run:
    return run_program("prod")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_exactly_one_https_redirect_uri(stack, dev, prod):
    run = {"dev": dev, "prod": prod}[stack]
    client = run.one(CLIENT).inputs
    auth = run.plain_output("authHost")
    assert client["validRedirectUris"] == [f"https://{auth}/oauth2/callback"]
    assert all("*" not in u for u in client["validPostLogoutRedirectUris"])
    assert all(u.startswith("https://") for u in client["validPostLogoutRedirectUris"])


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_client_is_confidential_code_flow_with_pkce(stack, dev, prod):
    c = {"dev": dev, "prod": prod}[stack].one(CLIENT).inputs
    assert c["accessType"] == "CONFIDENTIAL"
    assert c["standardFlowEnabled"] is True
    assert c["implicitFlowEnabled"] is False
    assert c["directAccessGrantsEnabled"] is False
    assert c["serviceAccountsEnabled"] is False
    assert c["pkceCodeChallengeMethod"] == "S256"


def test_client_secret_is_generated_and_secret(dev):
    wire = dev.one(CLIENT).wire_inputs
    assert is_secret(wire["clientSecret"])
    assert wire["clientSecret"]["value"] == MOCK_SECRET_PREFIX + "authproxy-secrets-client-secret"


def test_client_lifetimes_follow_session_config():
    run = run_program("dev", overrides={"session": {"accessTokenLifespan": "10m", "cookieRefresh": "9m"}})
    c = run.one(CLIENT).inputs
    assert c["accessTokenLifespan"] == "600"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_audience_and_groups_mappers(stack, dev, prod):
    run = {"dev": dev, "prod": prod}[stack]
    client = run.one(CLIENT).inputs
    aud = run.one(AUDIENCE).inputs
    assert aud["includedClientAudience"] == client["clientId"]
    assert aud["addToIdToken"] is True and aud["addToAccessToken"] is True
    assert aud["clientId"] == "mock-uuid-authproxy-identity-client"  # attached to our client
    grp = run.one(GROUPS).inputs
    assert grp["claimName"] == "groups"
    # full paths (/sre): a same-named group under another parent never matches an app's group
    assert grp["fullPath"] is True
    assert grp["addToIdToken"] is True and grp["addToAccessToken"] is True
    assert grp["clientId"] == "mock-uuid-authproxy-identity-client"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_groups_match_the_apps(stack, dev, prod):
    run = {"dev": dev, "prod": prod}[stack]
    from authproxy_local.render.mockrun import stack_config

    apps = stack_config(stack)["authproxy:apps"]
    wanted = sorted({g for a in apps for g in a.get("groups", [])})
    assert sorted(g.inputs["name"] for g in run.of_type(GROUP)) == wanted


def test_groups_looked_up_when_not_managed():
    run = run_program("prod", overrides={"keycloak": {"manageGroups": False}})
    assert run.of_type(GROUP) == []
    looked = [i.args for i in run.invocations if i.token == "keycloak:index/getGroup:getGroup"]
    # by full path (group-by-path), never by a name that may exist under several parents
    assert looked == [{"realmId": "corp", "groupPath": "/sre"}]


def test_nested_groups_are_created_under_their_parents():
    from components.identity import group_chain, groups_to_create

    assert group_chain("/platform/sre") == ["/platform", "/platform/sre"]
    assert groups_to_create(["/platform/sre", "/admins", "/platform/ops"]) == [
        "/admins", "/platform", "/platform/ops", "/platform/sre"]
    from authproxy_local.render.mockrun import stack_config

    apps = stack_config("prod")["authproxy:apps"]
    run = run_program("prod", overrides={"apps": [{**apps[0], "groups": ["/platform/sre", "sre"]},
                                                  apps[1]]})
    made = {g.name: g.inputs for g in run.of_type(GROUP)}
    assert set(made) == {"authproxy-identity-group-sre", "authproxy-identity-group-platform",
                         "authproxy-identity-group-platform--sre"}
    assert made["authproxy-identity-group-platform--sre"]["name"] == "sre"
    assert made["authproxy-identity-group-platform--sre"]["parentId"] == "authproxy-identity-group-platform-id"
    assert "parentId" not in made["authproxy-identity-group-sre"]
    assert "parentId" not in made["authproxy-identity-group-platform"]


def test_realm_created_in_dev_looked_up_in_prod(dev, prod):
    realm = dev.one(REALM).inputs
    assert realm["realm"] == "authproxy"
    assert realm["sslRequired"] == "external"
    assert realm["registrationAllowed"] is False
    assert prod.of_type(REALM) == []
    assert [i.args["realm"] for i in prod.invocations if i.token.endswith("getRealm")] == ["corp"]
    assert prod.one(CLIENT).inputs["realmId"] == "corp"


def test_demo_users_only_when_asked(dev, prod):
    users = {u.inputs["username"]: u for u in dev.of_type(USER)}
    assert set(users) == {"alice", "bob"}
    pw = users["alice"].wire_inputs["initialPassword"]
    assert is_secret(pw["value"]) or is_secret(pw)
    assert prod.of_type(USER) == []
    memberships = dev.of_type("keycloak:index/userGroups:UserGroups")
    assert len(memberships) == 1 and memberships[0].inputs["groupIds"] == ["authproxy-identity-group-admins-id"]


def test_demo_passwords_are_secret_outputs(dev, prod):
    out = dev.outputs["demoUserPasswords"]
    assert is_secret(out)
    assert set(out["value"]) == {"alice", "bob"}
    assert prod.plain_output("demoUserPasswords") == {}


def test_provider_is_explicit_and_uses_secret_credentials(dev, prod):
    p = dev.one("pulumi:providers:keycloak").wire_inputs
    assert p["url"] == "https://keycloak.authproxy.test"
    assert is_secret(p["password"])
    assert "clientSecret" not in p
    q = prod.one("pulumi:providers:keycloak").wire_inputs
    assert is_secret(q["clientSecret"]) and "password" not in q
    assert q["clientId"] == "authproxy-admin" and q["realm"] == "corp"
    # every Keycloak resource uses that provider, never an ambient default one
    for r in dev.resources:
        if r.type.startswith("keycloak:") and r.custom:
            assert "authproxy-identity-keycloak" in r.provider, r.name


def _plain_parts(value):
    """Everything in a wire value that is not under a secret marker."""
    if is_secret(value):
        return
    if isinstance(value, dict):
        for v in value.values():
            yield from _plain_parts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _plain_parts(v)
    else:
        yield value


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_no_secret_in_plain_outputs_or_inputs(stack, dev, prod):
    run = {"dev": dev, "prod": prod}[stack]
    plain_outputs = [v for v in _plain_parts(run.outputs) if isinstance(v, str)]
    assert not [v for v in plain_outputs if MOCK_SECRET_PREFIX in v]
    for r in run.resources:
        leaked = [v for v in _plain_parts(r.wire_inputs) if isinstance(v, str) and MOCK_SECRET_PREFIX in v]
        # a secret may only travel inside a secret-marked value
        assert not leaked, (r.type, r.name, leaked)
    assert json.dumps(run.outputs).count(MOCK_SECRET_PREFIX) == (2 if stack == "dev" else 0)


def test_secrets_are_random_with_rotation_keepers(dev):
    assert not dev.of_type("random:index/randomBytes:RandomBytes")  # its ID is its value
    names = {r.name: r.inputs for r in dev.of_type("random:index/randomPassword:RandomPassword")}
    cookie = names["authproxy-secrets-cookie-secret"]
    assert cookie["length"] == 43
    assert cookie["special"] is True and cookie["overrideSpecial"] == "-_"
    assert cookie["keepers"] == {"rotation": "1"}
    assert names["authproxy-secrets-client-secret"]["length"] >= 32
    assert names["authproxy-secrets-redis-password"]["length"] >= 32
    rotated = run_program("dev", overrides={"rotation": {"clientSecret": "2"}})
    again = {r.name: r.inputs for r in rotated.of_type("random:index/randomPassword:RandomPassword")}
    assert again["authproxy-secrets-client-secret"]["keepers"] == {"rotation": "2"}
    assert again["authproxy-secrets-redis-password"]["keepers"] == {"rotation": "1"}


def test_cookie_secret_alphabet_and_length_decode_to_a_256_bit_key():
    """Every string RandomPassword can make from these inputs is unpadded URL-safe base64 that
    decodes to exactly 32 bytes (oauth2-proxy's AES-256 key), every 32-byte key is reachable, and
    a standard-base64 or padded form is not what we generate."""
    import base64
    import os
    import string

    from components.secrets import COOKIE_SECRET_LENGTH, URLSAFE_B64_SPECIAL

    alphabet = string.ascii_letters + string.digits + URLSAFE_B64_SPECIAL
    assert sorted(alphabet) == sorted(set(alphabet)) and len(alphabet) == 64
    for _ in range(50):
        raw = os.urandom(32)
        encoded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        assert len(encoded) == COOKIE_SECRET_LENGTH and set(encoded) <= set(alphabet)
        assert base64.urlsafe_b64decode(encoded + "=") == raw


def test_stack_outputs(dev):
    assert dev.plain_output("issuerUrl") == "https://keycloak.authproxy.test/realms/authproxy"
    assert dev.plain_output("clientId") == "oauth2-proxy"
    assert dev.plain_output("protectedUrls") == ["https://echo.authproxy.test/", "https://admin.authproxy.test/"]


def test_invalid_config_creates_nothing():
    from components.config import ConfigError

    with pytest.raises(ConfigError) as e:
        run_program("dev", overrides={"apps": []})
    assert "authproxy:apps" in str(e.value)


def test_client_session_lifetimes_only_on_a_created_realm(dev, prod):
    # Keycloak rejects a client session idle timeout above the realm's (found by the live
    # harness against an existing realm left at Keycloak's defaults): set them only on our realm.
    created = dev.one(CLIENT).inputs
    assert created["clientSessionIdleTimeout"] == str(dev.one(REALM).inputs["ssoSessionIdleTimeout"]).rstrip("s")
    assert created["clientSessionMaxLifespan"] == "36000"
    existing = prod.one(CLIENT).inputs
    assert "clientSessionIdleTimeout" not in existing and "clientSessionMaxLifespan" not in existing
    assert existing["accessTokenLifespan"] == "300"
