"""Small pure helpers every component shares: the labels every object carries, oauth2-proxy's path
prefix, the duration format of Go flags. No config, no resources; imports nothing of the project."""

from __future__ import annotations

COMMON_LABELS: dict[str, str] = {
    "app.kubernetes.io/part-of": "authproxy",
    "app.kubernetes.io/managed-by": "pulumi",
}
"""Labels every Kubernetes object of the stack carries (one definition for every component)."""

OAUTH2_PREFIX = "/oauth2/"
"""oauth2-proxy's own endpoints; always routed to oauth2-proxy and never behind ext_authz."""


def format_duration(seconds: int) -> str:
    """Format seconds the way Go's time.Duration flags accept ('1h30m0s' style, compact)."""
    if seconds == 0:
        return "0s"
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v)
