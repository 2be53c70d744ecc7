"""Keycloak: the realm (created or looked up), the OIDC client for oauth2-proxy, its protocol
mappers, the groups apps name and, for dev stacks, demo users.

The client is confidential, standard flow only, PKCE S256, with exactly one redirect URI on the
auth host. Which settings the client gets is decided by :func:`client_settings`, a pure function,
so tests and the local harness read the same decision.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

import pulumi
import pulumi_keycloak as keycloak
import pulumi_random as random


class AdminCredentials(TypedDict):
    """How the provider logs in to Keycloak's admin API."""

    auth: Literal["password", "client-credentials"]
    realm: str
    username: str
    client_id: str
    secret: pulumi.Input[str]
    """Admin password (auth=password) or admin client secret (auth=client-credentials)."""


class DemoUserSpec(TypedDict):
    username: str
    email: str
    first_name: str
    last_name: str
    groups: list[str]
    """Full group paths."""


def group_chain(path: str) -> list[str]:
    """Every group path from the top down to ``path``: ``/a/b`` -> ``[/a, /a/b]``."""
    parts = [p for p in path.split("/") if p]
    if not path.startswith("/") or not parts:
        raise ValueError(f"{path!r} is not a full group path")
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def groups_to_create(paths: list[str]) -> list[str]:
    """The group paths to create for ``paths`` (each with its parents), parents first, once."""
    out: list[str] = []
    for p in paths:
        for step in group_chain(p):
            if step not in out:
                out.append(step)
    return sorted(out, key=lambda x: (x.count("/"), x))


class IdentityArgs(TypedDict):
    """Inputs of the identity component (all plain values except the secrets)."""

    keycloak_url: str
    realm: str
    realm_mode: Literal["create", "existing"]
    manage_groups: bool
    admin: AdminCredentials
    client_id: str
    client_secret: pulumi.Input[str]
    redirect_uri: str
    """The single sign-in callback, https://<auth host>/oauth2/callback."""
    post_logout_redirect_uris: list[str]
    web_origins: list[str]
    groups: list[str]
    """Full group paths (``/admins``, ``/platform/sre``), as the tokens' ``groups`` claim carries
    them."""
    demo_users: list[DemoUserSpec]
    demo_password_rotation: str
    access_token_lifespan: int
    sso_session_idle_timeout: int
    sso_session_max_lifespan: int
    ca_certificate: NotRequired[str | None]
    client_timeout: NotRequired[int]
    """PEM of the CA behind Keycloak's TLS certificate (admin API calls); None = system store."""


class ClientSettings(TypedDict):
    """Keyword arguments of pulumi-keycloak's `openid.Client` (as it spells them, so mypy checks
    the `**` splat against the constructor: names and types)."""

    client_id: str
    name: str
    description: str
    enabled: bool
    access_type: str
    client_authenticator_type: str
    standard_flow_enabled: bool
    implicit_flow_enabled: bool
    direct_access_grants_enabled: bool
    service_accounts_enabled: bool
    pkce_code_challenge_method: str
    valid_redirect_uris: list[str]
    valid_post_logout_redirect_uris: list[str]
    web_origins: list[str]
    root_url: str
    consent_required: bool
    full_scope_allowed: bool
    frontchannel_logout_enabled: bool
    access_token_lifespan: str
    client_session_idle_timeout: NotRequired[str]
    client_session_max_lifespan: NotRequired[str]


class RealmSettings(TypedDict):
    """Keyword arguments of pulumi-keycloak's `Realm` (checked like :class:`ClientSettings`)."""

    realm: str
    enabled: bool
    display_name: str
    ssl_required: str
    registration_allowed: bool
    reset_password_allowed: bool
    remember_me: bool
    login_with_email_allowed: bool
    duplicate_emails_allowed: bool
    access_token_lifespan: str
    sso_session_idle_timeout: str
    sso_session_max_lifespan: str
    revoke_refresh_token: bool
    refresh_token_max_reuse: int
    security_defenses: keycloak.RealmSecurityDefensesArgsDict


def client_settings(args: IdentityArgs) -> ClientSettings:
    """The OIDC client's settings (pulumi-keycloak `openid.Client` inputs, secret excluded).

    Confidential client, authorization-code flow only, PKCE S256, exact redirect and post-logout
    URIs (no wildcards), tokens bounded by the stack's lifetime. Client session lifetimes are
    set only on a realm the stack creates: Keycloak refuses a client session idle timeout longer
    than its realm's (HTTP 400), and an existing realm's lifetimes are not the stack's to know.
    """
    if "*" in args["redirect_uri"] or not args["redirect_uri"].startswith("https://"):
        raise ValueError("the redirect URI must be one exact https URI")
    settings: ClientSettings = {
        "client_id": args["client_id"],
        "name": "authproxy (oauth2-proxy)",
        "description": "Managed by Pulumi (authproxy). Sign-in for the protected applications.",
        "enabled": True,
        "access_type": "CONFIDENTIAL",
        "client_authenticator_type": "client-secret",
        "standard_flow_enabled": True,
        "implicit_flow_enabled": False,
        "direct_access_grants_enabled": False,
        "service_accounts_enabled": False,
        "pkce_code_challenge_method": "S256",
        "valid_redirect_uris": [args["redirect_uri"]],
        "valid_post_logout_redirect_uris": sorted(set(args["post_logout_redirect_uris"])),
        "web_origins": sorted(set(args["web_origins"])),
        "root_url": args["redirect_uri"].rsplit("/oauth2/", 1)[0],
        "consent_required": False,
        "full_scope_allowed": False,
        "frontchannel_logout_enabled": False,
        "access_token_lifespan": str(args["access_token_lifespan"]),
    }
    if args["realm_mode"] == "create":
        settings["client_session_idle_timeout"] = str(args["sso_session_idle_timeout"])
        settings["client_session_max_lifespan"] = str(args["sso_session_max_lifespan"])
    return settings


def realm_settings(args: IdentityArgs) -> RealmSettings:
    """The realm's settings when the stack creates it (pulumi-keycloak `Realm` inputs)."""
    return {
        "realm": args["realm"],
        "enabled": True,
        "display_name": "authproxy",
        "ssl_required": "external",
        "registration_allowed": False,
        "reset_password_allowed": False,
        "remember_me": False,
        "login_with_email_allowed": True,
        "duplicate_emails_allowed": False,
        "access_token_lifespan": f"{args['access_token_lifespan']}s",
        "sso_session_idle_timeout": f"{args['sso_session_idle_timeout']}s",
        "sso_session_max_lifespan": f"{args['sso_session_max_lifespan']}s",
        "revoke_refresh_token": True,
        "refresh_token_max_reuse": 0,
        "security_defenses": {
            "brute_force_detection": {
                "permanent_lockout": False,
                "max_login_failures": 10,
                "wait_increment_seconds": 60,
                "max_failure_wait_seconds": 900,
                "failure_reset_time_seconds": 43200,
            },
            "headers": {
                "x_frame_options": "DENY",
                "content_security_policy": "frame-src 'self'; frame-ancestors 'self'; object-src 'none';",
                "x_content_type_options": "nosniff",
                "strict_transport_security": "max-age=31536000; includeSubDomains",
                "referrer_policy": "no-referrer",
                "x_robots_tag": "none",
            },
        },
    }


class Identity(pulumi.ComponentResource):
    """Keycloak realm, OIDC client, mappers, groups and demo users.

    Outputs:
      issuer_url: https://<keycloak>/realms/<realm>
      realm_id: the realm's id
      client_id: the OIDC client id oauth2-proxy uses
      demo_user_passwords: secret map username -> initial password (empty unless demo users)
    """

    issuer_url: pulumi.Output[str]
    realm_id: pulumi.Output[str]
    client_id: pulumi.Output[str]
    demo_user_passwords: pulumi.Output[dict[str, str]]

    def __init__(
        self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("authproxy:identity:Identity", name, None, opts)
        admin = args["admin"]
        # An explicit provider: no ambient keycloak:* config is ever used.
        provider = keycloak.Provider(
            f"{name}-keycloak",
            url=args["keycloak_url"],
            base_path="",
            realm=admin["realm"],
            client_id=admin["client_id"],
            username=admin["username"] if admin["auth"] == "password" else None,
            password=pulumi.Output.secret(admin["secret"]) if admin["auth"] == "password" else None,
            client_secret=(
                pulumi.Output.secret(admin["secret"])
                if admin["auth"] == "client-credentials"
                else None
            ),
            root_ca_certificate=args.get("ca_certificate") or None,
            client_timeout=args.get("client_timeout", 30),
            initial_login=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        kc = pulumi.ResourceOptions(parent=self, provider=provider)

        realm_id: pulumi.Output[str]
        if args["realm_mode"] == "create":
            realm = keycloak.Realm(f"{name}-realm", **realm_settings(args), opts=kc)
            realm_id = realm.id
        else:
            found = keycloak.get_realm_output(
                realm=args["realm"], opts=pulumi.InvokeOutputOptions(parent=self, provider=provider)
            )
            realm_id = found.id

        client = keycloak.openid.Client(
            f"{name}-client",
            realm_id=realm_id,
            client_secret=pulumi.Output.secret(args["client_secret"]),
            **client_settings(args),
            opts=kc,
        )
        # `aud` must contain our client id in ID *and* access tokens: oauth2-proxy checks the ID
        # token, Istio's RequestAuthentication (audiences = client id) checks whichever it gets.
        keycloak.openid.AudienceProtocolMapper(
            f"{name}-audience",
            realm_id=realm_id,
            client_id=client.id,
            name="audience",
            included_client_audience=client.client_id,
            add_to_id_token=True,
            add_to_access_token=True,
            opts=kc,
        )
        # Full paths (`/admins`, `/platform/sre`): a leaf name would let any same-named group
        # elsewhere in the realm satisfy an app's group (docs/security.md).
        keycloak.openid.GroupMembershipProtocolMapper(
            f"{name}-groups",
            realm_id=realm_id,
            client_id=client.id,
            name="groups",
            claim_name="groups",
            full_path=True,
            add_to_id_token=True,
            add_to_access_token=True,
            add_to_userinfo=True,
            opts=kc,
        )

        group_ids: dict[str, pulumi.Output[str]] = {}
        if args["manage_groups"]:
            for path in groups_to_create(list(args["groups"])):
                parent, _, leaf = path.rpartition("/")
                group_ids[path] = keycloak.Group(
                    # The top-level logical names stay as they were (`-group-admins`).
                    f"{name}-group-{path[1:].replace('/', '--')}",
                    realm_id=realm_id,
                    name=leaf,
                    parent_id=group_ids[parent] if parent else None,
                    opts=kc,
                ).id
        else:
            for path in args["groups"]:
                # By full path (Keycloak's group-by-path endpoint): a lookup by name returns the
                # first group of that name anywhere in the realm.
                group_ids[path] = keycloak.get_group_output(
                    realm_id=realm_id,
                    group_path=path,
                    opts=pulumi.InvokeOutputOptions(parent=self, provider=provider),
                ).id

        passwords: dict[str, pulumi.Output[str]] = {}
        for user in args["demo_users"]:
            uname = user["username"]
            password = random.RandomPassword(
                f"{name}-user-{uname}-password",
                length=20,
                special=False,
                keepers={"rotation": args["demo_password_rotation"]},
                opts=pulumi.ResourceOptions(parent=self),
            )
            created = keycloak.User(
                f"{name}-user-{uname}",
                realm_id=realm_id,
                username=uname,
                enabled=True,
                email=user["email"],
                email_verified=True,
                first_name=user["first_name"],
                last_name=user["last_name"],
                initial_password=keycloak.UserInitialPasswordArgs(
                    value=pulumi.Output.secret(password.result), temporary=False
                ),
                opts=kc,
            )
            if user["groups"]:
                keycloak.UserGroups(
                    f"{name}-user-{uname}-groups",
                    realm_id=realm_id,
                    user_id=created.id,
                    group_ids=[group_ids[g] for g in user["groups"]],
                    exhaustive=True,
                    opts=kc,
                )
            passwords[uname] = password.result

        self.issuer_url = pulumi.Output.from_input(f"{args['keycloak_url']}/realms/{args['realm']}")
        self.realm_id = realm_id
        self.client_id = client.client_id
        self.demo_user_passwords = pulumi.Output.secret(
            pulumi.Output.all(**passwords) if passwords else pulumi.Output.from_input({})
        )
        self.register_outputs(
            {
                "issuer_url": self.issuer_url,
                "realm_id": self.realm_id,
                "client_id": self.client_id,
                "demo_user_passwords": self.demo_user_passwords,
            }
        )
