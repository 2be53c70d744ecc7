"""Generated secrets: cookie secret, OIDC client secret, Redis password.

All come from pulumi-random, are secret outputs, and are regenerated when their rotation marker
(`authproxy:rotation.*`) changes, because the marker is the resource's `keepers`.
"""

from __future__ import annotations

from typing import TypedDict

import pulumi
import pulumi_random as random

COOKIE_SECRET_BYTES = 32
"""oauth2-proxy accepts 16, 24 or 32 byte secrets (AES-128/192/256)."""


def urlsafe_b64(std_b64: str) -> str:
    """Turn standard base64 into the URL-safe alphabet oauth2-proxy decodes.

    oauth2-proxy rejects standard base64 of 32 bytes (it contains '+' and '/'), but decodes URL-safe
    base64 (with or without padding) to the raw key.
    """
    return std_b64.replace("+", "-").replace("/", "_")


class SecretsArgs(TypedDict):
    """Rotation markers; changing one regenerates that secret."""

    cookie_secret_rotation: str
    client_secret_rotation: str
    redis_password_rotation: str


class Secrets(pulumi.ComponentResource):
    """The stack's generated secrets.

    Outputs (all secret):
      cookie_secret: URL-safe base64 of 32 random bytes (oauth2-proxy --cookie-secret).
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
        cookie = random.RandomBytes(
            f"{name}-cookie-secret",
            length=COOKIE_SECRET_BYTES,
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
        self.cookie_secret = pulumi.Output.secret(cookie.base64.apply(urlsafe_b64))
        self.client_secret = pulumi.Output.secret(client.result)
        self.redis_password = pulumi.Output.secret(redis.result)
        self.register_outputs(
            {
                "cookie_secret": self.cookie_secret,
                "client_secret": self.client_secret,
                "redis_password": self.redis_password,
            }
        )
