"""Where the checkout and the files beside it are (the one place that knows the folder layout).

Imports: the standard library only.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The checkout's root (Pulumi.yaml, __main__.py, components/)."""

SHARED = REPO.parent / "shared"
"""``../shared`` beside the checkout: third-party sources and the redis-ha chart copy."""

REDIS_CHART = SHARED / "charts" / "redis-ha-4.39.0.tgz"
"""The redis-ha chart the local stacks install (no chart repository is reachable here)."""
