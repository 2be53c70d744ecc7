"""Generated secrets: cookie secret, OIDC client secret, Redis password.

All come from pulumi-random, are secret outputs, and are regenerated when their rotation marker
(`authproxy:rotation.*`) changes, because the marker is the resource's `keepers`.
"""

from __future__ import annotations

from typing import TypedDict

import pulumi
import pulumi_random as random

COOKIE_SECRET_BYTES = 32
"""oauth2-proxy accepts 16, 24 or 32 byte secrets (AES-128/192/256); we use 32 (AES-256)."""

URLSAFE_B64_SPECIAL = "-_"
"""With letters and digits, the URL-safe base64 alphabet (RFC 4648 section 5)."""

COOKIE_SECRET_LENGTH = (COOKIE_SECRET_BYTES * 8 + 5) // 6
"""43 characters of that alphabet: unpadded URL-safe base64 of 32 bytes, which oauth2-proxy
decodes to its key (each character uniform over 64 values, so the key is 256 random bits)."""


class SecretsArgs(TypedDict):
    """Rotation markers; changing one regenerates that secret."""

    cookie_secret_rotation: str
    client_secret_rotation: str
    redis_password_rotation: str


class Secrets(pulumi.ComponentResource):
    """The stack's generated secrets.

    Outputs (all secret):
      cookie_secret: unpadded URL-safe base64 of 32 random bytes, 43 characters (oauth2-proxy
        --cookie-secret).
      client_secret: 40 alphanumerics (Keycloak client secret, oauth2-proxy --client-secret).
      redis_password: 40 alphanumerics (Redis auth).
    """

    cookie_secret: pulumi.Output[str]
    client_secret: pulumi.Output[str]
    redis_password: pulumi.Output[str]

    def __init__(
        self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("authproxy:secrets:Secrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # A RandomPassword, not a RandomBytes: pulumi-random uses a RandomBytes' base64 value as
        # its resource ID, and IDs are never secret (the key would sit in plain text in the
        # state and in `pulumi stack export`). A RandomPassword's ID is "none".
        cookie = random.RandomPassword(
            f"{name}-cookie-secret",
            length=COOKIE_SECRET_LENGTH,
            special=True,
            override_special=URLSAFE_B64_SPECIAL,
            keepers={"rotation": args["cookie_secret_rotation"]},
            opts=child,
        )
        client = random.RandomPassword(
            f"{name}-client-secret",
            length=40,
            special=False,
            keepers={"rotation": args["client_secret_rotation"]},
            opts=child,
        )
        redis = random.RandomPassword(
            f"{name}-redis-password",
            length=40,
            special=False,
            keepers={"rotation": args["redis_password_rotation"]},
            opts=child,
        )
        self.cookie_secret = pulumi.Output.secret(cookie.result)
        self.client_secret = pulumi.Output.secret(client.result)
        self.redis_password = pulumi.Output.secret(redis.result)
        self.register_outputs(
            {
                "cookie_secret": self.cookie_secret,
                "client_secret": self.client_secret,
                "redis_password": self.redis_password,
            }
        )
