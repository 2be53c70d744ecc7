"""Where authproxy keeps downloaded and built test components.

Nothing is ever cached inside the checkout: the cache lives in
``$AUTHPROXY_CACHE`` if that is set, else in ``${XDG_CACHE_HOME:-~/.cache}/authproxy``.

Imports: the standard library only.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping

__all__ = ["cache_dir", "resolve_cache_dir"]


def resolve_cache_dir(env: Mapping[str, str] | None = None) -> pathlib.Path:
    """Return the cache directory that ``env`` selects, without creating it.

    Pure: reads only ``env`` (default: ``os.environ``) and the user's home.
    Empty variables count as unset, as the XDG spec says.
    """
    env = os.environ if env is None else env
    explicit = env.get("AUTHPROXY_CACHE", "")
    if explicit:
        return pathlib.Path(explicit).expanduser().absolute()
    xdg = env.get("XDG_CACHE_HOME", "")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return (base / "authproxy").absolute()


def cache_dir() -> pathlib.Path:
    """Return the authproxy cache directory, creating it on demand."""
    path = resolve_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path
