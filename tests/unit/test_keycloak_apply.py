"""The pulumi-keycloak input -> Keycloak representation mapping (terraform-provider-keycloak's),
and the applier's call sequence against a recording fake."""

from __future__ import annotations

from typing import Any

import pytest

from authproxy_local import keycloak_apply as ka
from authproxy_local import render

REALM_INPUTS = {
    "realm": "authproxy", "enabled": True, "displayName": "authproxy", "sslRequired": "external",
    "registrationAllowed": False, "resetPasswordAllowed": False, "rememberMe": False,
    "loginWithEmailAllowed": True, "duplicateEmailsAllowed": False,
    "accessTokenLifespan": "300s", "ssoSessionIdleTimeout": "1800s", "ssoSessionMaxLifespan": "36000s",
    "revokeRefreshToken": True, "refreshTokenMaxReuse": 0.0,
    "securityDefenses": {
        "bruteForceDetection": {"permanentLockout": False, "maxLoginFailures": 10.0,
                                "waitIncrementSeconds": 60.0, "maxFailureWaitSeconds": 900.0,
                                "failureResetTimeSeconds": 43200.0},
        "headers": {"xFrameOptions": "DENY", "referrerPolicy": "no-referrer"},
    },
}

CLIENT_INPUTS = {
    "realmId": "authproxy", "clientId": "oauth2-proxy", "name": "authproxy (oauth2-proxy)",
    "enabled": True, "accessType": "CONFIDENTIAL", "clientSecret": "s3cret",
    "clientAuthenticatorType": "client-secret", "standardFlowEnabled": True,
    "implicitFlowEnabled": False, "directAccessGrantsEnabled": False,
    "serviceAccountsEnabled": False, "pkceCodeChallengeMethod": "S256",
    "validRedirectUris": ["https://auth.example.com/oauth2/callback"],
    "validPostLogoutRedirectUris": ["https://a.example.com/", "https://b.example.com/"],
    "webOrigins": ["https://auth.example.com"], "rootUrl": "https://auth.example.com",
    "fullScopeAllowed": False, "frontchannelLogoutEnabled": False, "consentRequired": False,
    "accessTokenLifespan": "300", "clientSessionIdleTimeout": "1800",
    "clientSessionMaxLifespan": "36000", "description": "d",
}


# ---- conversions --------------------------------------------------------------------------


@pytest.mark.parametrize("text,seconds", [
    ("300s", 300), ("5m", 300), ("1h30m", 5400), ("36000s", 36000), ("0", 0), ("1.5h", 5400),
    ("1h0m0s", 3600), ("1500ms", 1),
])
def test_go_duration_seconds(text: str, seconds: int) -> None:
    assert ka.go_duration_seconds(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "5 m", "m5", "1d", "abc"])
def test_go_duration_rejects(bad: str) -> None:
    with pytest.raises(ka.UnsupportedInput):
        ka.go_duration_seconds(bad)


# ---- realm --------------------------------------------------------------------------------


def test_realm_representation() -> None:
    rep = ka.realm_representation(REALM_INPUTS)
    assert rep["realm"] == "authproxy" and rep["enabled"] is True
    assert rep["displayName"] == "authproxy"
    assert rep["sslRequired"] == "external"
    lifetimes = (rep["accessTokenLifespan"], rep["ssoSessionIdleTimeout"], rep["ssoSessionMaxLifespan"])
    assert lifetimes == (300, 1800, 36000)
    assert rep["revokeRefreshToken"] is True and rep["refreshTokenMaxReuse"] == 0
    assert rep["loginWithEmailAllowed"] is True and rep["registrationAllowed"] is False
    # the json name of user_managed_access is userManagedAccessAllowed (keycloak/realm.go)
    assert rep["userManagedAccessAllowed"] is False and "userManagedAccess" not in rep
    # a given headers block: given values, schema defaults for the rest
    h = rep["browserSecurityHeaders"]
    assert h["xFrameOptions"] == "DENY" and h["referrerPolicy"] == "no-referrer"
    assert h["xXSSProtection"] == "1; mode=block"
    # brute force block: maxLoginFailures -> failureFactor, failureResetTimeSeconds -> maxDeltaTimeSeconds
    assert rep["bruteForceProtected"] is True
    assert rep["failureFactor"] == 10 and rep["maxDeltaTimeSeconds"] == 43200
    assert rep["quickLoginCheckMilliSeconds"] == 1000 and rep["bruteForceStrategy"] == "MULTIPLE"
    assert "maxTemporaryLockouts" not in rep  # omitempty with 0
    # flow bindings default like setRealmFlowBindings
    assert rep["browserFlow"] == "browser" and rep["directGrantFlow"] == "direct grant"


def test_realm_without_security_defenses_gets_provider_defaults() -> None:
    rep = ka.realm_representation({"realm": "r"})
    assert rep["browserSecurityHeaders"]["xFrameOptions"] == "SAMEORIGIN"
    assert rep["bruteForceProtected"] is False and rep["failureFactor"] == 30
    assert rep["sslRequired"] == "external" and rep["enabled"] is True
    assert "accessTokenLifespan" not in rep  # omitempty when unset


def test_realm_unknown_input_is_refused() -> None:
    with pytest.raises(ka.UnsupportedInput, match="smtpServer"):
        ka.realm_representation({"realm": "r", "smtpServer": {"host": "x"}})


# ---- client -------------------------------------------------------------------------------


def test_client_representation() -> None:
    rep = ka.client_representation(CLIENT_INPUTS)
    assert rep["clientId"] == "oauth2-proxy" and rep["protocol"] == "openid-connect"
    assert rep["publicClient"] is False and rep["bearerOnly"] is False
    assert rep["secret"] == "s3cret"
    assert rep["standardFlowEnabled"] is True and rep["directAccessGrantsEnabled"] is False
    assert rep["redirectUris"] == ["https://auth.example.com/oauth2/callback"]
    assert rep["webOrigins"] == ["https://auth.example.com"]
    assert rep["rootUrl"] == "https://auth.example.com"
    assert rep["fullScopeAllowed"] is False
    # frontchannel_logout_enabled -> json "frontchannelLogout"
    assert rep["frontchannelLogout"] is False
    a = rep["attributes"]
    assert a["pkce.code.challenge.method"] == "S256"
    assert a["post.logout.redirect.uris"] == "https://a.example.com/##https://b.example.com/"
    assert a["access.token.lifespan"] == "300"
    assert a["client.session.idle.timeout"] == "1800"
    assert a["client.session.max.lifespan"] == "36000"
    assert a["use.refresh.tokens"] == "true"  # schema default, quoted bool
    assert a["backchannel.logout.session.required"] == "true"
    assert "client.offline.session.idle.timeout" not in a  # omitempty


def test_client_defaults_and_access_types() -> None:
    minimal = {"realmId": "r", "clientId": "c", "accessType": "PUBLIC"}
    rep = ka.client_representation(minimal)
    assert rep["publicClient"] is True and rep["fullScopeAllowed"] is True
    assert rep["clientAuthenticatorType"] == "client-secret"
    assert "secret" not in rep and "rootUrl" not in rep
    assert "post.logout.redirect.uris" not in rep["attributes"]
    assert ka.client_representation({**minimal, "accessType": "BEARER-ONLY"})["bearerOnly"] is True


@pytest.mark.parametrize("inputs,message", [
    ({"standardFlowEnabled": True}, "at least one valid redirect uri"),
    ({"validRedirectUris": ["https://x/cb"]}, "valid_redirect_uris cannot be set"),
    ({"accessType": "WEIRD"}, "accessType"),
    ({"somethingNew": True}, "somethingNew"),
])
def test_client_invalid(inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(ka.UnsupportedInput, match=message):
        ka.client_representation({"realmId": "r", "clientId": "c", "accessType": "CONFIDENTIAL", **inputs})


# ---- mappers, groups, users -----------------------------------------------------------------


def test_audience_mapper() -> None:
    rep = ka.audience_mapper_representation({
        "realmId": "r", "clientId": "uuid", "name": "audience", "includedClientAudience": "oauth2-proxy",
        "addToIdToken": True, "addToAccessToken": True})
    assert rep["protocolMapper"] == "oidc-audience-mapper"
    assert rep["config"] == {
        "id.token.claim": "true", "access.token.claim": "true",
        "introspection.token.claim": "true",  # schema default true
        "included.client.audience": "oauth2-proxy", "included.custom.audience": ""}
    with pytest.raises(ka.UnsupportedInput):
        ka.audience_mapper_representation({"realmId": "r", "clientId": "u", "name": "a"})
    with pytest.raises(ka.UnsupportedInput, match="client scopes"):
        ka.audience_mapper_representation({"realmId": "r", "clientScopeId": "s", "name": "a",
                                           "includedCustomAudience": "x"})


def test_group_membership_mapper() -> None:
    rep = ka.group_membership_mapper_representation({
        "realmId": "r", "clientId": "uuid", "name": "groups", "claimName": "groups", "fullPath": False})
    assert rep["protocolMapper"] == "oidc-group-membership-mapper"
    c = rep["config"]
    assert c["claim.name"] == "groups" and c["full.path"] == "false"
    assert c["userinfo.token.claim"] == "true" and c["introspection.token.claim"] == "false"
    # full_path defaults to true in the provider's schema
    rep = ka.group_membership_mapper_representation({"realmId": "r", "clientId": "u", "name": "g", "claimName": "g"})
    assert rep["config"]["full.path"] == "true"


def test_group_and_user() -> None:
    assert ka.group_representation({"realmId": "r", "name": "admins"}) == {"name": "admins", "attributes": {}}
    with_attrs = ka.group_representation({"realmId": "r", "name": "g", "attributes": {"a": "x##y"}})
    assert with_attrs["attributes"] == {"a": ["x", "y"]}
    rep, pw = ka.user_representation({
        "realmId": "r", "username": "alice", "email": "a@x", "emailVerified": True, "firstName": "A",
        "lastName": "L", "initialPassword": {"value": "pw", "temporary": False}})
    assert rep["username"] == "alice" and rep["enabled"] is True and rep["emailVerified"] is True
    assert pw == {"value": "pw", "type": "password", "temporary": False}
    _, none = ka.user_representation({"realmId": "r", "username": "bob"})
    assert none is None


def test_user_groups_plan() -> None:
    assert ka.user_groups_plan({"realmId": "r", "userId": "u", "groupIds": ["a", "b"], "exhaustive": True},
                               ["b", "c"]) == (["a"], ["c"])
    assert ka.user_groups_plan({"realmId": "r", "userId": "u", "groupIds": ["a"], "exhaustive": False},
                               ["c"]) == (["a"], [])


# ---- the whole render maps --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_render():
    return render.render("dev")


def test_every_keycloak_object_of_the_dev_render_maps(dev_render) -> None:
    objs = ka.objects_from_render(dev_render.keycloak)
    kinds = sorted({o.type for o in objs})
    assert kinds == sorted({ka.REALM, ka.CLIENT, ka.AUDIENCE_MAPPER, ka.GROUP_MEMBERSHIP_MAPPER,
                            ka.GROUP, ka.USER, ka.USER_GROUPS})
    mappers = {ka.REALM: ka.realm_representation, ka.CLIENT: ka.client_representation,
               ka.AUDIENCE_MAPPER: ka.audience_mapper_representation,
               ka.GROUP_MEMBERSHIP_MAPPER: ka.group_membership_mapper_representation,
               ka.GROUP: ka.group_representation, ka.USER: ka.user_representation}
    for o in objs:
        if o.type in mappers:
            mappers[o.type](o.inputs)  # raises UnsupportedInput on an input it does not map


def test_unknown_render_section_is_refused() -> None:
    with pytest.raises(ka.UnsupportedInput, match="openid/ClientScope"):
        ka.objects_from_render({"providers": [], "lookups": [], "openid/ClientScope": [{"name": "x", "inputs": {}}]})


class _FakeSession:
    """Records the admin calls; POSTs answer with ids."""

    def __init__(self, groups_of_user: list[str] | None = None) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.n = 0
        self.groups_of_user = groups_of_user or []

    def call(self, method: str, path: str, json: Any = None, ok: Any = None) -> Any:
        self.calls.append((method, path, json))

        class R:
            def __init__(self, body: Any) -> None:
                self._b = body

            def json(self) -> Any:
                return self._b

        return R([{"id": g} for g in self.groups_of_user] if method == "GET" else None)

    def create(self, path: str, body: Any) -> str:
        self.calls.append(("POST", path, body))
        self.n += 1
        return f"id-{self.n}"


def test_apply_creates_in_order_and_resolves_references(dev_render) -> None:
    fake = _FakeSession()
    values = {"secrets-client-secret.result": "CLIENT", "identity-user-alice-password.result": "ALICE",
              "identity-user-bob-password.result": "BOB"}
    objs = ka.objects_from_render(dev_render.keycloak)
    done = ka.apply(fake, objs, lambda src: values[src])  # type: ignore[arg-type]
    paths = [(m, p) for m, p, _ in fake.calls]
    assert paths[0] == ("POST", "/realms")
    client_id = done.ids["identity-client"]
    assert ("POST", f"/realms/authproxy/clients/{client_id}/protocol-mappers/models") in paths
    client_body = next(b for m, p, b in fake.calls if p == "/realms/authproxy/clients")
    assert client_body["secret"] == "CLIENT"
    pw = {p: b for m, p, b in fake.calls if p.endswith("/reset-password")}
    alice_id = done.ids["identity-user-alice"]
    assert pw[f"/realms/authproxy/users/{alice_id}/reset-password"]["value"] == "ALICE"
    group_id = done.ids["identity-group-admins"]
    assert ("PUT", f"/realms/authproxy/users/{alice_id}/groups/{group_id}") in paths
    # the realm first, users after groups, memberships last
    order = [p for _, p in paths]
    assert order.index("/realms/authproxy/groups") < order.index("/realms/authproxy/users")


def test_apply_refuses_a_reference_to_nothing() -> None:
    objs = [ka.KeycloakObject(ka.GROUP_MEMBERSHIP_MAPPER, "m", {
        "realmId": "r", "clientId": "${computed:missing-client.id}", "name": "g", "claimName": "g"})]
    with pytest.raises(ka.KeycloakApplyError, match=r"missing-client\.id"):
        ka.apply(_FakeSession(), objs, lambda src: "x")  # type: ignore[arg-type]


def test_existing_objects_from_lookups() -> None:
    lookups = [
        {"function": "keycloak:index/getRealm:getRealm", "args": {"realm": "corp"}},
        {"function": "keycloak:index/getGroup:getGroup", "args": {"realmId": "corp", "name": "sre"}},
    ]
    assert ka.existing_objects(lookups) == [("realm", {"realm": "corp"}),
                                            ("group", {"realmId": "corp", "name": "sre"})]
