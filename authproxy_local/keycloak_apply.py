"""Apply the render's Keycloak objects to a real Keycloak through its admin REST API.

The render (``keycloak.json``) lists what the Pulumi program asks pulumi-keycloak to create: the
realm, the OIDC client, its protocol mappers, groups, users and their group memberships, each as
its pulumi-keycloak *inputs* (camelCase). pulumi-keycloak is bridged from
terraform-provider-keycloak, so what Keycloak really receives is what that provider's Go code
builds from those inputs. The pure ``*_representation`` functions below repeat that mapping,
field by field, from the provider's own source (github.com/keycloak/terraform-provider-keycloak,
read at commit 05accfd8, Aug 2026):

- ``provider/resource_keycloak_<resource>.go``: the schema (defaults of unset inputs) and the
  ``get...FromData`` / ``mapFromDataTo...`` function that turns inputs into a Go struct;
- ``keycloak/<resource>.go``: the Go struct, whose ``json`` tags are the Keycloak admin REST
  representation, and the REST calls (paths, methods, order).

Inputs the mapping does not know raise :class:`UnsupportedInput` naming them, so a setting the
program starts to send is never silently dropped by the harness. Nothing about the objects is set
here by hand: every value comes from the render or from the provider's documented defaults.

:func:`apply` performs the calls in dependency order (realm, clients, mappers, groups, users,
memberships). It resolves ``${computed:<resource>.id}`` placeholders with the ids Keycloak
returns, ``${computed:getGroup(...)...}`` / ``getRealm`` look-ups with queries, and
``${secret:...}`` placeholders through a caller-supplied function (the harness generates the
values in memory). Errors never include request bodies, which may carry secrets.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from authproxy_local import placeholders

REALM = "keycloak:index/realm:Realm"
CLIENT = "keycloak:openid/client:Client"
AUDIENCE_MAPPER = "keycloak:openid/audienceProtocolMapper:AudienceProtocolMapper"
GROUP_MEMBERSHIP_MAPPER = (
    "keycloak:openid/groupMembershipProtocolMapper:GroupMembershipProtocolMapper"
)
GROUP = "keycloak:index/group:Group"
USER = "keycloak:index/user:User"
USER_GROUPS = "keycloak:index/userGroups:UserGroups"

APPLY_ORDER = (REALM, CLIENT, AUDIENCE_MAPPER, GROUP_MEMBERSHIP_MAPPER, GROUP, USER, USER_GROUPS)
"""The order in which objects are created (each may reference the ids of earlier ones)."""


class UnsupportedInput(ValueError):
    """The render sets an input this mapping does not implement."""


class KeycloakApplyError(RuntimeError):
    """A REST call failed; the message names the call, never the request body."""


@dataclass(frozen=True)
class KeycloakObject:
    """One pulumi-keycloak resource of the render."""

    type: str
    name: str
    inputs: Mapping[str, Any]


# --------------------------------------------------------------------------------------------
# Small conversions the provider does
# --------------------------------------------------------------------------------------------

_GO_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def go_duration_seconds(value: str) -> int:
    """Go's ``time.ParseDuration`` then ``int(d.Seconds())`` (provider/utils.go,
    getSecondsFromDurationString): '300s' -> 300, '1h30m' -> 5400, '0' -> 0."""
    text = str(value).strip()
    if text == "0":
        return 0
    pos, total = 0, 0.0
    for m in _GO_DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise UnsupportedInput(f"{value!r} is not a Go duration (like '300s' or '1h30m')")
    return int(total)


def _bool_quoted(value: bool) -> str:
    """keycloak/types/keycloak_bool_quoted.go: a bool sent as the string "true"/"false"."""
    return "true" if value else "false"


def _hash_delimited(values: Iterable[str]) -> str | None:
    """keycloak/types/keycloak_slice_hash_delimited.go: ["a","b"] -> "a##b"; empty -> omitted."""
    items = list(values)
    return "##".join(items) if items else None


def _int(value: Any) -> int:
    """Numbers arrive as floats from the Pulumi wire format (20.0)."""
    if isinstance(value, bool) or int(value) != value:
        raise UnsupportedInput(f"{value!r} is not a whole number")
    return int(value)


def _check_known(kind: str, inputs: Mapping[str, Any], known: Iterable[str]) -> None:
    unknown = sorted(set(inputs) - set(known))
    if unknown:
        raise UnsupportedInput(
            f"{kind}: input(s) {', '.join(unknown)} are not mapped by authproxy_local.keycloak_apply; "
            "add them following terraform-provider-keycloak's mapping"
        )


# --------------------------------------------------------------------------------------------
# Realm: provider/resource_keycloak_realm.go (getRealmFromData, schema defaults,
# setDefaultSecuritySettingHeaders, setDefaultSecuritySettingsBruteForceDetection) and
# keycloak/realm.go (type Realm, type BrowserSecurityHeaders; NewRealm = POST /realms)
# --------------------------------------------------------------------------------------------

_REALM_INPUTS = {
    "realm", "enabled", "displayName", "displayNameHtml", "userManagedAccess",
    "registrationAllowed", "registrationEmailAsUsername", "editUsernameAllowed",
    "resetPasswordAllowed", "rememberMe", "verifyEmail", "loginWithEmailAllowed",
    "duplicateEmailsAllowed", "sslRequired", "revokeRefreshToken", "refreshTokenMaxReuse",
    "ssoSessionIdleTimeout", "ssoSessionMaxLifespan", "accessTokenLifespan",
    "clientSessionIdleTimeout", "clientSessionMaxLifespan", "offlineSessionIdleTimeout",
    "offlineSessionMaxLifespan", "accessCodeLifespan", "accessCodeLifespanLogin",
    "accessCodeLifespanUserAction", "securityDefenses", "passwordPolicy", "attributes",
    "loginTheme", "accountTheme", "adminTheme", "emailTheme", "defaultSignatureAlgorithm",
}
_REALM_DURATIONS = {
    # pulumi input -> realm representation field (both seconds, input is a Go duration string)
    "ssoSessionIdleTimeout": "ssoSessionIdleTimeout",
    "ssoSessionMaxLifespan": "ssoSessionMaxLifespan",
    "accessTokenLifespan": "accessTokenLifespan",
    "clientSessionIdleTimeout": "clientSessionIdleTimeout",
    "clientSessionMaxLifespan": "clientSessionMaxLifespan",
    "offlineSessionIdleTimeout": "offlineSessionIdleTimeout",
    "offlineSessionMaxLifespan": "offlineSessionMaxLifespan",
    "accessCodeLifespan": "accessCodeLifespan",
    "accessCodeLifespanLogin": "accessCodeLifespanLogin",
    "accessCodeLifespanUserAction": "accessCodeLifespanUserAction",
}
# setDefaultSecuritySettingHeaders / the security_defenses.headers schema defaults
_DEFAULT_HEADERS = {
    "contentSecurityPolicy": "frame-src 'self'; frame-ancestors 'self'; object-src 'none';",
    "contentSecurityPolicyReportOnly": "",
    "strictTransportSecurity": "max-age=31536000; includeSubDomains",
    "xContentTypeOptions": "nosniff",
    "xFrameOptions": "SAMEORIGIN",
    "xRobotsTag": "none",
    "xXSSProtection": "1; mode=block",
    "referrerPolicy": "no-referrer",
}
# pulumi input (headers block) -> BrowserSecurityHeaders json field
_HEADER_FIELDS = {
    "contentSecurityPolicy": "contentSecurityPolicy",
    "contentSecurityPolicyReportOnly": "contentSecurityPolicyReportOnly",
    "strictTransportSecurity": "strictTransportSecurity",
    "xContentTypeOptions": "xContentTypeOptions",
    "xFrameOptions": "xFrameOptions",
    "xRobotsTag": "xRobotsTag",
    "xXssProtection": "xXSSProtection",
    "referrerPolicy": "referrerPolicy",
}
# brute_force_detection schema defaults; pulumi input -> Realm json field
_BRUTE_FORCE = {
    "permanentLockout": ("permanentLockout", False),
    "bruteForceStrategy": ("bruteForceStrategy", "MULTIPLE"),
    "maxTemporaryLockouts": ("maxTemporaryLockouts", 0),
    "maxLoginFailures": ("failureFactor", 30),
    "waitIncrementSeconds": ("waitIncrementSeconds", 60),
    "quickLoginCheckMilliSeconds": ("quickLoginCheckMilliSeconds", 1000),
    "minimumQuickLoginWaitSeconds": ("minimumQuickLoginWaitSeconds", 60),
    "maxFailureWaitSeconds": ("maxFailureWaitSeconds", 900),
    "failureResetTimeSeconds": ("maxDeltaTimeSeconds", 43200),
}


# Fields type Realm always marshals (no `omitempty`) with the values getRealmFromData leaves
# when their blocks (smtp_server, internationalization, otp_policy, web_authn_*) are not set, and
# the flow bindings setRealmFlowBindings defaults to.
_REALM_ZERO_FIELDS: dict[str, Any] = {
    "displayName": "",
    "displayNameHtml": "",
    "smtpServer": {},
    "defaultSignatureAlgorithm": "",
    "supportedLocales": [],
    "defaultLocale": "",
    "passwordPolicy": "",
    "browserFlow": "browser",
    "registrationFlow": "registration",
    "directGrantFlow": "direct grant",
    "resetCredentialsFlow": "reset credentials",
    "clientAuthenticationFlow": "clients",
    "dockerAuthenticationFlow": "docker auth",
    "firstBrokerLoginFlow": "first broker login",
    "otpPolicyCodeReusable": False,
    "webAuthnPolicyAcceptableAaguids": None,
    "webAuthnPolicyAttestationConveyancePreference": "",
    "webAuthnPolicyAuthenticatorAttachment": "",
    "webAuthnPolicyAvoidSameAuthenticatorRegister": False,
    "webAuthnPolicyCreateTimeout": 0,
    "webAuthnPolicyRequireResidentKey": "",
    "webAuthnPolicyRpEntityName": "",
    "webAuthnPolicyRpId": "",
    "webAuthnPolicySignatureAlgorithms": None,
    "webAuthnPolicyUserVerificationRequirement": "",
    "webAuthnPolicyPasswordlessAcceptableAaguids": None,
    "webAuthnPolicyPasswordlessAttestationConveyancePreference": "",
    "webAuthnPolicyPasswordlessAuthenticatorAttachment": "",
    "webAuthnPolicyPasswordlessAvoidSameAuthenticatorRegister": False,
    "webAuthnPolicyPasswordlessCreateTimeout": 0,
    "webAuthnPolicyPasswordlessRequireResidentKey": "",
    "webAuthnPolicyPasswordlessRpEntityName": "",
    "webAuthnPolicyPasswordlessRpId": "",
    "webAuthnPolicyPasswordlessSignatureAlgorithms": None,
    "webAuthnPolicyPasswordlessUserVerificationRequirement": "",
}


def realm_representation(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """pulumi-keycloak ``Realm`` inputs -> Keycloak RealmRepresentation (POST /admin/realms)."""
    _check_known("Realm", inputs, _REALM_INPUTS)
    i = inputs
    rep: dict[str, Any] = {
        **_REALM_ZERO_FIELDS,
        "realm": i["realm"],
        "enabled": bool(i.get("enabled", True)),
        "userManagedAccessAllowed": bool(i.get("userManagedAccess", False)),
        "registrationAllowed": bool(i.get("registrationAllowed", False)),
        "registrationEmailAsUsername": bool(i.get("registrationEmailAsUsername", False)),
        "editUsernameAllowed": bool(i.get("editUsernameAllowed", False)),
        "resetPasswordAllowed": bool(i.get("resetPasswordAllowed", False)),
        "rememberMe": bool(i.get("rememberMe", False)),
        "verifyEmail": bool(i.get("verifyEmail", False)),
        "loginWithEmailAllowed": bool(i.get("loginWithEmailAllowed", False)),
        "duplicateEmailsAllowed": bool(i.get("duplicateEmailsAllowed", False)),
        "sslRequired": i.get("sslRequired", "external"),
        "internationalizationEnabled": False,
        "revokeRefreshToken": bool(i.get("revokeRefreshToken", False)),
        "refreshTokenMaxReuse": _int(i.get("refreshTokenMaxReuse", 0)),
        "attributes": dict(i.get("attributes") or {}),
    }
    for key in ("displayName", "displayNameHtml", "loginTheme", "accountTheme", "adminTheme",
                "emailTheme", "defaultSignatureAlgorithm", "passwordPolicy"):
        if key in i:
            rep[key] = i[key]
    for src, dst in _REALM_DURATIONS.items():
        if i.get(src):
            rep[dst] = go_duration_seconds(i[src])

    defenses = i.get("securityDefenses")
    headers = dict(_DEFAULT_HEADERS)
    brute: dict[str, Any] = dict(_BRUTE_FORCE.values())
    brute_on = False
    if defenses:
        _check_known("Realm.securityDefenses", defenses, {"headers", "bruteForceDetection"})
        if defenses.get("headers"):
            # Given block: every header comes from it (unset ones take the schema default).
            _check_known("Realm.securityDefenses.headers", defenses["headers"], _HEADER_FIELDS)
            for src, dst in _HEADER_FIELDS.items():
                headers[dst] = defenses["headers"].get(src, _DEFAULT_HEADERS[dst])
        if defenses.get("bruteForceDetection"):
            bfd = defenses["bruteForceDetection"]
            _check_known("Realm.securityDefenses.bruteForceDetection", bfd, _BRUTE_FORCE)
            brute_on = True
            for src, (dst, default) in _BRUTE_FORCE.items():
                value = bfd.get(src, default)
                brute[dst] = value if isinstance(value, (bool, str)) else _int(value)
    rep["browserSecurityHeaders"] = headers
    rep["bruteForceProtected"] = brute_on
    rep.update(brute)
    if rep["maxTemporaryLockouts"] == 0:
        del rep["maxTemporaryLockouts"]  # json:"maxTemporaryLockouts,omitempty"
    return rep


# --------------------------------------------------------------------------------------------
# OpenID client: provider/resource_keycloak_openid_client.go (schema, getOpenidClientFromData)
# and keycloak/openid_client.go (type OpenidClient, OpenidClientAttributes; NewOpenidClient =
# POST /realms/{realm}/clients with protocol openid-connect)
# --------------------------------------------------------------------------------------------

_CLIENT_INPUTS = {
    "realmId", "clientId", "name", "enabled", "description", "accessType", "clientSecret",
    "clientAuthenticatorType", "standardFlowEnabled", "implicitFlowEnabled",
    "directAccessGrantsEnabled", "serviceAccountsEnabled", "frontchannelLogoutEnabled",
    "validRedirectUris", "validPostLogoutRedirectUris", "webOrigins", "rootUrl", "adminUrl",
    "baseUrl", "pkceCodeChallengeMethod", "accessTokenLifespan", "clientSessionIdleTimeout",
    "clientSessionMaxLifespan", "clientOfflineSessionIdleTimeout",
    "clientOfflineSessionMaxLifespan", "fullScopeAllowed", "consentRequired",
    "useRefreshTokens", "backchannelLogoutUrl", "backchannelLogoutSessionRequired",
    "backchannelLogoutRevokeOfflineSessions", "frontchannelLogoutUrl", "loginTheme",
    "excludeSessionStateFromAuthResponse", "excludeIssuerFromAuthResponse",
    "alwaysDisplayInConsole", "displayOnConsentScreen", "consentScreenText", "extraConfig",
}


def client_representation(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """pulumi-keycloak ``openid.Client`` inputs -> Keycloak ClientRepresentation."""
    _check_known("openid.Client", inputs, _CLIENT_INPUTS)
    i = inputs
    access_type = i["accessType"]
    if access_type not in ("CONFIDENTIAL", "PUBLIC", "BEARER-ONLY"):
        raise UnsupportedInput(f"openid.Client accessType {access_type!r}")
    standard = bool(i.get("standardFlowEnabled", False))
    implicit = bool(i.get("implicitFlowEnabled", False))
    direct = bool(i.get("directAccessGrantsEnabled", False))
    redirects = list(i.get("validRedirectUris") or [])
    origins = list(i.get("webOrigins") or [])
    # The validations getOpenidClientFromData / ValidateOpenidClient make before any call.
    if not (standard or implicit) and redirects:
        raise UnsupportedInput("valid_redirect_uris cannot be set when standard or implicit flow is not enabled")
    if not (standard or implicit or direct) and origins:
        raise UnsupportedInput("web_origins cannot be set when standard or implicit flow is not enabled")
    if (standard or implicit) and not redirects:
        raise UnsupportedInput(
            "standard (authorization code) and implicit flows require at least one valid redirect uri")

    attributes: dict[str, Any] = {
        "pkce.code.challenge.method": i.get("pkceCodeChallengeMethod", ""),
        "exclude.session.state.from.auth.response": _bool_quoted(
            bool(i.get("excludeSessionStateFromAuthResponse", False))),
        "exclude.issuer.from.auth.response": _bool_quoted(
            bool(i.get("excludeIssuerFromAuthResponse", False))),
        "access.token.lifespan": str(i.get("accessTokenLifespan", "")),
        "login_theme": i.get("loginTheme", ""),
        "display.on.consent.screen": _bool_quoted(bool(i.get("displayOnConsentScreen", False))),
        "consent.screen.text": i.get("consentScreenText", ""),
        "use.refresh.tokens": _bool_quoted(bool(i.get("useRefreshTokens", True))),
        "client_credentials.use_refresh_token": "false",
        "backchannel.logout.url": i.get("backchannelLogoutUrl", ""),
        "frontchannel.logout.url": i.get("frontchannelLogoutUrl", ""),
        "backchannel.logout.revoke.offline.tokens": _bool_quoted(
            bool(i.get("backchannelLogoutRevokeOfflineSessions", False))),
        "backchannel.logout.session.required": _bool_quoted(
            bool(i.get("backchannelLogoutSessionRequired", True))),
        "oauth2.device.authorization.grant.enabled": "false",
        "oauth2.jwt.authorization.grant.enabled": "false",
        "standard.token.exchange.enabled": "false",
    }
    # json:",omitempty" string attributes: only sent when set
    for src, dst in (
        ("clientSessionIdleTimeout", "client.session.idle.timeout"),
        ("clientSessionMaxLifespan", "client.session.max.lifespan"),
        ("clientOfflineSessionIdleTimeout", "client.offline.session.idle.timeout"),
        ("clientOfflineSessionMaxLifespan", "client.offline.session.max.lifespan"),
    ):
        if i.get(src):
            attributes[dst] = str(i[src])
    post_logout = _hash_delimited(i.get("validPostLogoutRedirectUris") or [])
    if post_logout is not None:
        attributes["post.logout.redirect.uris"] = post_logout
    # extra_config entries are merged into the attributes (marshalExtraConfig)
    for key, value in (i.get("extraConfig") or {}).items():
        attributes[key] = value

    rep: dict[str, Any] = {
        "clientId": i["clientId"],
        "name": i.get("name", ""),
        "protocol": "openid-connect",
        "clientAuthenticatorType": i.get("clientAuthenticatorType", "client-secret"),
        "enabled": bool(i.get("enabled", True)),
        "description": i.get("description", ""),
        "publicClient": access_type == "PUBLIC",
        "bearerOnly": access_type == "BEARER-ONLY",
        "standardFlowEnabled": standard,
        "implicitFlowEnabled": implicit,
        "directAccessGrantsEnabled": direct,
        "serviceAccountsEnabled": bool(i.get("serviceAccountsEnabled", False)),
        "frontchannelLogout": bool(i.get("frontchannelLogoutEnabled", False)),
        "authorizationServicesEnabled": False,
        "redirectUris": redirects,
        "webOrigins": origins,
        "adminUrl": i.get("adminUrl", ""),
        "baseUrl": i.get("baseUrl", ""),
        "fullScopeAllowed": bool(i.get("fullScopeAllowed", True)),
        "attributes": attributes,
        "consentRequired": bool(i.get("consentRequired", False)),
        "authenticationFlowBindingOverrides": {"browser": "", "direct_grant": ""},
        "alwaysDisplayInConsole": bool(i.get("alwaysDisplayInConsole", False)),
    }
    if "rootUrl" in i:
        rep["rootUrl"] = i["rootUrl"]
    if i.get("clientSecret"):
        rep["secret"] = i["clientSecret"]  # json:"secret,omitempty"
    if rep["serviceAccountsEnabled"] and rep["publicClient"]:
        raise UnsupportedInput("service accounts (client credentials flow) cannot be enabled on public clients")
    return rep


# --------------------------------------------------------------------------------------------
# Protocol mappers: keycloak/protocol_mapper.go (type protocolMapper, config keys,
# protocolMapperPath = /realms/{realm}/clients/{id}/protocol-mappers/models),
# keycloak/openid_audience_protocol_mapper.go, keycloak/openid_group_membership_protocol_mapper.go
# (convertToGenericProtocolMapper) and the provider/resource_keycloak_openid_*_protocol_mapper.go
# schemas (defaults).
# --------------------------------------------------------------------------------------------

_AUDIENCE_INPUTS = {
    "realmId", "clientId", "clientScopeId", "name", "addToIdToken", "addToAccessToken",
    "addToTokenIntrospection", "includedClientAudience", "includedCustomAudience",
}
_GROUPS_INPUTS = {
    "realmId", "clientId", "clientScopeId", "name", "claimName", "fullPath", "addToIdToken",
    "addToAccessToken", "addToUserinfo", "addToTokenIntrospection",
}


def _mapper_target(kind: str, inputs: Mapping[str, Any]) -> None:
    if inputs.get("clientScopeId"):
        raise UnsupportedInput(f"{kind}: mappers on client scopes are not mapped (only on clients)")
    if not inputs.get("clientId"):
        raise UnsupportedInput(f"{kind}: clientId is required")


def audience_mapper_representation(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """pulumi-keycloak ``openid.AudienceProtocolMapper`` -> ProtocolMapperRepresentation."""
    _check_known("openid.AudienceProtocolMapper", inputs, _AUDIENCE_INPUTS)
    _mapper_target("openid.AudienceProtocolMapper", inputs)
    i = inputs
    if bool(i.get("includedClientAudience")) == bool(i.get("includedCustomAudience")):
        raise UnsupportedInput("exactly one of includedClientAudience, includedCustomAudience")
    return {
        "name": i["name"],
        "protocol": "openid-connect",
        "protocolMapper": "oidc-audience-mapper",
        "config": {
            "id.token.claim": _bool_quoted(bool(i.get("addToIdToken", True))),
            "access.token.claim": _bool_quoted(bool(i.get("addToAccessToken", True))),
            "introspection.token.claim": _bool_quoted(bool(i.get("addToTokenIntrospection", True))),
            "included.client.audience": i.get("includedClientAudience", ""),
            "included.custom.audience": i.get("includedCustomAudience", ""),
        },
    }


def group_membership_mapper_representation(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """pulumi-keycloak ``openid.GroupMembershipProtocolMapper`` -> ProtocolMapperRepresentation."""
    _check_known("openid.GroupMembershipProtocolMapper", inputs, _GROUPS_INPUTS)
    _mapper_target("openid.GroupMembershipProtocolMapper", inputs)
    i = inputs
    return {
        "name": i["name"],
        "protocol": "openid-connect",
        "protocolMapper": "oidc-group-membership-mapper",
        "config": {
            "full.path": _bool_quoted(bool(i.get("fullPath", True))),
            "id.token.claim": _bool_quoted(bool(i.get("addToIdToken", True))),
            "access.token.claim": _bool_quoted(bool(i.get("addToAccessToken", True))),
            "userinfo.token.claim": _bool_quoted(bool(i.get("addToUserinfo", True))),
            "introspection.token.claim": _bool_quoted(bool(i.get("addToTokenIntrospection", False))),
            "claim.name": i["claimName"],
        },
    }


# --------------------------------------------------------------------------------------------
# Groups: provider/resource_keycloak_group.go (mapFromDataToGroup) and keycloak/group.go
# (type Group; NewGroup = POST /realms/{realm}/groups, or .../groups/{parent}/children)
# --------------------------------------------------------------------------------------------

_GROUP_INPUTS = {"realmId", "name", "parentId", "description", "attributes"}
MULTIVALUE_ATTRIBUTE_SEPARATOR = "##"  # provider/utils.go


def group_representation(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """pulumi-keycloak ``Group`` inputs -> GroupRepresentation."""
    _check_known("Group", inputs, _GROUP_INPUTS)
    rep: dict[str, Any] = {
        "name": inputs["name"],
        "attributes": {
            k: str(v).split(MULTIVALUE_ATTRIBUTE_SEPARATOR)
            for k, v in (inputs.get("attributes") or {}).items()
        },
    }
    if inputs.get("description"):
        rep["description"] = inputs["description"]  # json:"description,omitempty"
    return rep


# --------------------------------------------------------------------------------------------
# Users: provider/resource_keycloak_user.go (mapFromDataToUser, resourceKeycloakUserCreate) and
# keycloak/user.go (type User, NewUser = POST /realms/{realm}/users, ResetUserPassword =
# PUT /realms/{realm}/users/{id}/reset-password with PasswordCredentials)
# --------------------------------------------------------------------------------------------

_USER_INPUTS = {
    "realmId", "username", "email", "emailVerified", "firstName", "lastName", "enabled",
    "attributes", "requiredActions", "initialPassword",
}


def user_representation(inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """pulumi-keycloak ``User`` inputs -> (UserRepresentation, password credential or None)."""
    _check_known("User", inputs, _USER_INPUTS)
    i = inputs
    rep = {
        "username": i["username"],
        "email": i.get("email", ""),
        "emailVerified": bool(i.get("emailVerified", False)),
        "firstName": i.get("firstName", ""),
        "lastName": i.get("lastName", ""),
        "enabled": bool(i.get("enabled", True)),
        "attributes": {
            k: str(v).split(MULTIVALUE_ATTRIBUTE_SEPARATOR)
            for k, v in (i.get("attributes") or {}).items()
        },
        "requiredActions": list(i.get("requiredActions") or []) or None,
    }
    password = None
    if i.get("initialPassword"):
        ip = i["initialPassword"]
        _check_known("User.initialPassword", ip, {"value", "temporary"})
        password = {"value": ip["value"], "type": "password", "temporary": bool(ip.get("temporary", False))}
    return rep, password


_USER_GROUPS_INPUTS = {"realmId", "userId", "groupIds", "exhaustive"}


def user_groups_plan(inputs: Mapping[str, Any], current: Iterable[str]) -> tuple[list[str], list[str]]:
    """provider/resource_keycloak_user_groups.go (resourceKeycloakUserGroupsReconcile): the group
    ids to add (PUT /users/{id}/groups/{gid}) and, if exhaustive, to remove (DELETE)."""
    _check_known("UserGroups", inputs, _USER_GROUPS_INPUTS)
    wanted = list(dict.fromkeys(inputs.get("groupIds") or []))
    have = list(current)
    add = [g for g in wanted if g not in have]
    remove = [g for g in have if g not in wanted] if inputs.get("exhaustive", True) else []
    return add, remove


# --------------------------------------------------------------------------------------------
# Reading the render
# --------------------------------------------------------------------------------------------


RENDER_KINDS = {
    "Realm": REALM,
    "openid/Client": CLIENT,
    "openid/AudienceProtocolMapper": AUDIENCE_MAPPER,
    "openid/GroupMembershipProtocolMapper": GROUP_MEMBERSHIP_MAPPER,
    "Group": GROUP,
    "User": USER,
    "UserGroups": USER_GROUPS,
}
"""keycloak.json section name (authproxy_local/render.py, _kind_of) -> pulumi-keycloak type token."""


def objects_from_render(data: Mapping[str, Any]) -> list[KeycloakObject]:
    """The Keycloak resources of a rendered ``keycloak.json`` (docs/render.md): sections named by
    kind, each a list of ``{"name", "id", "inputs"}``; ``providers`` and ``lookups`` are not
    resources. A section of a kind this module does not map raises :class:`UnsupportedInput`."""
    out = []
    for section, entries in sorted(data.items()):
        if section in ("providers", "lookups"):
            continue
        if section not in RENDER_KINDS:
            raise UnsupportedInput(f"keycloak.json section {section!r} is not mapped by keycloak_apply")
        for entry in entries:
            out.append(KeycloakObject(RENDER_KINDS[section], entry["name"], dict(entry.get("inputs") or {})))
    return out


def existing_objects(lookups: Iterable[Mapping[str, Any]]) -> list[tuple[str, dict[str, str]]]:
    """What the render looks up instead of creating (``realmMode: existing``, ``manageGroups:
    false``): ``("realm", {"realm": name})`` and ``("group", {"realmId", "name"})`` entries, in
    creation order. A real deployment finds these in Keycloak already; the harness creates them
    bare before applying, so the look-ups succeed."""
    realms, groups = [], []
    for lk in lookups:
        fn = lk["function"].rsplit(":", 1)[-1]
        args = dict(lk.get("args") or {})
        if fn == "getRealm":
            realms.append(("realm", {"realm": args["realm"]}))
        elif fn == "getGroup":
            groups.append(("group", {"realmId": args["realmId"], "name": args["name"]}))
        else:
            raise UnsupportedInput(f"look-up {lk['function']} is not mapped by keycloak_apply")
    return realms + groups


def create_existing(session: AdminSession, lookups: Iterable[Mapping[str, Any]],
                    realm_settings: Mapping[str, Any] | None = None) -> list[str]:
    """Create the realms and groups :func:`existing_objects` names: Keycloak's defaults plus
    ``realm_settings`` (a RealmRepresentation fragment)."""
    made = []
    for kind, args in existing_objects(lookups):
        if kind == "realm":
            rep = {"realm": args["realm"], "enabled": True, **(realm_settings or {})}
            session.call("POST", "/realms", rep, ok=(201,))
            made.append(f"realm {args['realm']}")
        else:
            session.create(f"/realms/{quote(args['realmId'])}/groups", {"name": args["name"]})
            made.append(f"group {args['name']}")
    return made


# --------------------------------------------------------------------------------------------
# The REST applier
# --------------------------------------------------------------------------------------------


@dataclass
class AdminSession:
    """Admin REST access: base URL (http://127.0.0.1:PORT) and master-realm admin credentials."""

    base_url: str
    username: str
    password: str
    realm: str = "master"
    client_id: str = "admin-cli"
    timeout: float = 30.0
    _token: str | None = field(default=None, repr=False)
    _token_expiry: float = 0.0

    def __post_init__(self) -> None:
        import requests

        self._http = requests.Session()

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
            raise KeycloakApplyError(f"admin login to realm {self.realm!r} failed: HTTP {r.status_code}")
        body = r.json()
        self._token = body["access_token"]
        self._token_expiry = time.monotonic() + float(body.get("expires_in", 60))
        return self._token

    def call(self, method: str, path: str, json: Any = None, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        """``method`` on /admin{path}; returns the response. Raises with method, path, status
        and Keycloak's error text (never the request body)."""
        r = self._http.request(
            method, f"{self.base_url}/admin{path}", json=json, timeout=self.timeout,
            headers={"Authorization": f"Bearer {self.token()}"},
        )
        if r.status_code not in ok:
            detail = r.text[:300].replace("\n", " ")
            raise KeycloakApplyError(f"{method} /admin{path}: HTTP {r.status_code}: {detail}")
        return r

    def create(self, path: str, body: Any) -> str:
        """POST and return the new object's id from the Location header (getIdFromLocationHeader)."""
        r = self.call("POST", path, body, ok=(201,))
        location = r.headers.get("Location", "")
        return location.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class Applied:
    """What :func:`apply` created: resource name -> Keycloak id, and the realm names used."""

    ids: dict[str, str] = field(default_factory=dict)
    realms: list[str] = field(default_factory=list)
    calls: int = 0


_LOOKUP_RE = re.compile(r"^(getRealm|getGroup)\(([^)]*)\)\.(\w+)$")


def apply(
    session: AdminSession,
    objects: Iterable[KeycloakObject],
    resolve_secret: Callable[[str], str],
) -> Applied:
    """Create every object in :data:`APPLY_ORDER`. ``resolve_secret(source)`` returns the value
    of a ``${secret:source}`` placeholder."""
    objs = sorted(objects, key=lambda o: APPLY_ORDER.index(o.type) if o.type in APPLY_ORDER else 99)
    unknown = [o.type for o in objs if o.type not in APPLY_ORDER]
    if unknown:
        raise UnsupportedInput(f"resource type(s) not mapped: {', '.join(sorted(set(unknown)))}")
    done = Applied()
    realm_of_name: dict[str, str] = {}

    def lookup(fn: str, args: dict[str, str], fld: str) -> str:
        if fn == "getRealm":
            realm = args["realm"]
            session.call("GET", f"/realms/{quote(realm)}")
            return realm if fld in ("id", "realm") else _fail(fld)
        if fn == "getGroup":
            realm, name = args["realmId"], args["name"]
            r = session.call("GET", f"/realms/{quote(realm)}/groups?search={quote(name)}&exact=true")
            for g in r.json():
                if g["name"] == name:
                    return g["id"] if fld == "id" else _fail(fld)
            raise KeycloakApplyError(f"group {name!r} not found in realm {realm!r}")
        return _fail(fn)

    def resolve(kind: str, source: str) -> str:
        if kind == "secret":
            return resolve_secret(source)
        if kind == "computed":
            m = _LOOKUP_RE.match(source)
            if m:
                args = dict(kv.split("=", 1) for kv in m.group(2).split(",") if kv)
                return lookup(m.group(1), args, m.group(3))
            name, _, fld = source.rpartition(".")
            if fld == "id" and name in done.ids:
                return done.ids[name]
            if fld == "clientId" and name in realm_of_name:
                return realm_of_name[name]
        raise KeycloakApplyError(f"cannot resolve ${{{kind}:{source}}} (not created yet?)")

    for obj in objs:
        inputs = placeholders.substitute(dict(obj.inputs), resolve)
        done.calls += 1
        if obj.type == REALM:
            rep = realm_representation(inputs)
            session.call("POST", "/realms", rep, ok=(201,))
            # The provider's id for a realm is its name (resourceKeycloakRealmCreate: SetId(realm.Realm)).
            done.ids[obj.name] = rep["realm"]
            done.realms.append(rep["realm"])
            continue
        realm = inputs["realmId"]
        r = quote(realm)
        if obj.type == CLIENT:
            rep = client_representation(inputs)
            done.ids[obj.name] = session.create(f"/realms/{r}/clients", rep)
            realm_of_name[obj.name] = rep["clientId"]
        elif obj.type == AUDIENCE_MAPPER:
            rep = audience_mapper_representation(inputs)
            cid = quote(inputs["clientId"])
            done.ids[obj.name] = session.create(f"/realms/{r}/clients/{cid}/protocol-mappers/models", rep)
        elif obj.type == GROUP_MEMBERSHIP_MAPPER:
            rep = group_membership_mapper_representation(inputs)
            cid = quote(inputs["clientId"])
            done.ids[obj.name] = session.create(f"/realms/{r}/clients/{cid}/protocol-mappers/models", rep)
        elif obj.type == GROUP:
            rep = group_representation(inputs)
            parent = inputs.get("parentId")
            path = f"/realms/{r}/groups/{quote(parent)}/children" if parent else f"/realms/{r}/groups"
            done.ids[obj.name] = session.create(path, rep)
        elif obj.type == USER:
            rep, password = user_representation(inputs)
            if rep["requiredActions"] is None:
                del rep["requiredActions"]
            uid = session.create(f"/realms/{r}/users", rep)
            done.ids[obj.name] = uid
            if password is not None:
                done.calls += 1
                session.call("PUT", f"/realms/{r}/users/{quote(uid)}/reset-password", password)
        elif obj.type == USER_GROUPS:
            uid = quote(inputs["userId"])
            current = [g["id"] for g in session.call("GET", f"/realms/{r}/users/{uid}/groups").json()]
            add, remove = user_groups_plan(inputs, current)
            for gid in add:
                done.calls += 1
                session.call("PUT", f"/realms/{r}/users/{uid}/groups/{quote(gid)}")
            for gid in remove:
                done.calls += 1
                session.call("DELETE", f"/realms/{r}/users/{uid}/groups/{quote(gid)}")
            done.ids[obj.name] = f"{realm}/{inputs['userId']}"
    return done


def _fail(what: str) -> str:
    raise KeycloakApplyError(f"look-up field {what!r} is not supported")
