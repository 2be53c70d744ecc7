"""Shared test helper: a stack file's config, with top-level overrides, through config.load."""

from __future__ import annotations

from typing import Any

from authproxy_local.render.mockrun import DEFAULT_TEST_SECRETS, project_config
from components import config as C


def load_stack(stack: str = "dev", **overrides: Any) -> C.StackConfig:
    """Pulumi.<stack>.yaml's authproxy:* values, each override merged one level deep."""
    data = project_config(stack)
    for k, v in overrides.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return C.load(data, secrets_set=DEFAULT_TEST_SECRETS.keys())
