"""Cross-process locks in the shared cache (``<cache>/locks/<name>.lock``), with ``filelock``.

The cache is shared by every checkout and CI run on the machine: installs of one component and
Keycloak's first start in its cached home (which may re-augment it) are serialised with these
locks. ``filelock`` takes ``fcntl.flock`` on the lock file and leaves the file in place, so it
excludes older checkouts that lock the same files with ``flock`` directly.

Imports: :mod:`authproxy_local.core.cache` and ``filelock``.
"""

from __future__ import annotations

from filelock import FileLock

from authproxy_local.core.cache import cache_dir


def cache_lock(name: str) -> FileLock:
    """The lock ``name`` (a component, ``keycloak-start``); use it as a context manager. Waits
    without a timeout: another process's install may take an hour on a cold cache."""
    d = cache_dir() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    return FileLock(d / f"{name}.lock")
