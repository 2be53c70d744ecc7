"""The top-level component: composes secrets, identity, session store, oauth2-proxy, ingress and
authorization from the validated stack config."""

from __future__ import annotations

from typing import TypedDict

import pulumi

from components.config import StackConfig
from components.identity import DemoUserSpec, Identity, IdentityArgs
from components.secrets import Secrets


class StackSecrets(TypedDict, total=False):
    """Secret config values (Outputs marked secret); only the ones that are set."""

    keycloakAdminPassword: pulumi.Output[str]
    keycloakAdminClientSecret: pulumi.Output[str]
    externalRedisPassword: pulumi.Output[str]


class AuthProxyArgs(TypedDict):
    config: StackConfig
    secrets: StackSecrets


def identity_args(cfg: StackConfig, secrets: StackSecrets, client_secret: pulumi.Input[str]) -> IdentityArgs:
    """Map the stack config onto the identity component's arguments."""
    kc = cfg.keycloak
    admin_secret = (
        secrets["keycloakAdminPassword"]
        if kc.admin.auth == "password"
        else secrets["keycloakAdminClientSecret"]
    )
    app_urls = [a.url for a in cfg.apps]
    return IdentityArgs(
        keycloak_url=kc.url,
        realm=kc.realm,
        realm_mode=kc.realm_mode,
        manage_groups=kc.manage_groups,
        admin={
            "auth": kc.admin.auth,
            "realm": kc.admin.realm,
            "username": kc.admin.username,
            "client_id": kc.admin.client_id,
            "secret": admin_secret,
        },
        client_id=kc.client_id,
        client_secret=client_secret,
        redirect_uri=cfg.redirect_url,
        post_logout_redirect_uris=[*app_urls, f"https://{cfg.auth_hostname}/"],
        web_origins=[f"https://{cfg.auth_hostname}"],
        groups=list(cfg.groups),
        demo_users=[
            DemoUserSpec(
                username=u.username,
                email=u.email or f"{u.username}@{cfg.domain}",
                first_name=u.first_name,
                last_name=u.last_name or u.username.capitalize(),
                groups=list(u.groups),
            )
            for u in kc.demo_users
        ],
        demo_password_rotation=cfg.rotation.client_secret,
        access_token_lifespan=cfg.session.access_token_lifespan,
        sso_session_idle_timeout=cfg.session.sso_session_idle_timeout,
        sso_session_max_lifespan=cfg.session.sso_session_max_lifespan,
    )


class AuthProxy(pulumi.ComponentResource):
    """The whole authenticated ingress.

    Outputs:
      issuer_url, client_id, auth_host, protected_urls (list), demo_user_passwords (secret).
    """

    issuer_url: pulumi.Output[str]
    client_id: pulumi.Output[str]
    auth_host: pulumi.Output[str]
    protected_urls: pulumi.Output[list[str]]
    demo_user_passwords: pulumi.Output[dict[str, str]]

    def __init__(
        self, name: str, args: AuthProxyArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("authproxy:stack:AuthProxy", name, None, opts)
        cfg = args["config"]
        child = pulumi.ResourceOptions(parent=self)

        secrets = Secrets(
            "secrets",
            {
                "cookie_secret_rotation": cfg.rotation.cookie_secret,
                "client_secret_rotation": cfg.rotation.client_secret,
                "redis_password_rotation": cfg.rotation.redis_password,
            },
            opts=child,
        )
        identity = Identity(
            "identity", identity_args(cfg, args["secrets"], secrets.client_secret), opts=child
        )
        self.secrets = secrets
        self.identity = identity

        self.issuer_url = identity.issuer_url
        self.client_id = identity.client_id
        self.auth_host = pulumi.Output.from_input(cfg.auth_hostname)
        self.protected_urls = pulumi.Output.from_input([a.url for a in cfg.apps])
        self.demo_user_passwords = identity.demo_user_passwords
        self.register_outputs(
            {
                "issuer_url": self.issuer_url,
                "client_id": self.client_id,
                "auth_host": self.auth_host,
                "protected_urls": self.protected_urls,
                "demo_user_passwords": self.demo_user_passwords,
            }
        )
