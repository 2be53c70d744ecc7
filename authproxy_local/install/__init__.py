"""Version-pinned, cached installer for the real components the tests run.

Usage::

    python -m authproxy_local.install [--json] COMPONENT...
    python -m authproxy_local.install [--json] --group e2e|demo|bench|engine|harness|stack|conformance|ambient

COMPONENT is one of keycloak, oauth2-proxy, redis, envoy, istioctl, istio-xds, loadgen, gateway-api-crds,
chromium, wrk, perf, pulumi, pulumi-random, pulumi-keycloak, pulumi-kubernetes, kube-apiserver,
etcd, kube-controller-manager, kube-scheduler, kwok, ztunnel, iptables, or ``all``; a group is a
make target's set (:data:`GROUPS`, the one table the Makefile, the e2e fixtures and the harness
read). Each install is idempotent: when the cached artifact exists and its stamp still matches, a
second run returns at once. ``--json`` prints a JSON map component -> path.

Python API (used by tests to decide skip/fail)::

    from authproxy_local import install
    install.find("redis")      # Path or None, never installs anything
    install.ensure("redis")    # installs if needed, returns the Path, or raises InstallError
    install.ensure_group("harness")

Downloads and builds go into :func:`authproxy_local.core.cache.cache_dir`, never into the
checkout. Rooms: :mod:`.versions` (pins, the groups table), :mod:`.base` (plumbing),
:mod:`.gomod` (go.mod and Go builds), :mod:`.tools`, :mod:`.engine_tools` and
:mod:`.control_plane` (the components).

Imports: the standard library, ``filelock`` and :mod:`authproxy_local.core`.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterable

from authproxy_local.core.locks import cache_lock

from . import control_plane, engine_tools, releases, tools, ztunnel
from .base import Component, InstallError, log
from .control_plane import kwok_stage_files
from .gomod import go_download, go_env
from .tools import gateway_api_crd_files, keycloak_java
from .versions import COMPONENTS, GROUPS, ISTIO_MODULE, VERSIONS

__all__ = [
    "COMPONENTS",
    "GROUPS",
    "ISTIO_MODULE",
    "VERSIONS",
    "InstallError",
    "ensure",
    "ensure_group",
    "expand",
    "find",
    "gateway_api_crd_files",
    "go_module",
    "keycloak_java",
    "kwok_stage_files",
    "require_go",
]

from .base import require_go

_MODULES = (tools, engine_tools, releases, control_plane, ztunnel)
_REGISTRY: dict[str, Component] = {k: v for m in _MODULES for k, v in m.REGISTRY.items()}
_REGISTRY = {name: _REGISTRY[name] for name in COMPONENTS}
assert set(_REGISTRY) == {k for m in _MODULES for k in m.REGISTRY}
assert {c for g in GROUPS.values() for c in g} <= set(COMPONENTS)

INSTALL_HINT = "python -m authproxy_local.install {name}"


def _component(name: str) -> Component:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InstallError(f"unknown component {name!r}; choose from {', '.join(COMPONENTS)}, all") from None


def find(name: str) -> pathlib.Path | None:
    """Path of an installed component (Keycloak: its home dir), or None. Never installs."""
    return _component(name).find()


def ensure(name: str) -> pathlib.Path:
    """Install ``name`` if needed and return its path (Keycloak: its home dir).

    Raises :class:`InstallError` with a message naming what is missing and how to get it.
    """
    comp = _component(name)
    found = comp.find()
    if found is not None:
        return found
    with cache_lock(name):  # one install of a component at a time on the machine
        found = comp.find()  # another process may have installed it meanwhile
        if found is not None:
            return found
        t0 = time.monotonic()
        try:
            path = comp.install()
        except InstallError as e:
            raise InstallError(f"{name}: {e}\n(retry with: {INSTALL_HINT.format(name=name)})") from e
        log(f"{name} installed in {time.monotonic() - t0:.1f}s: {path}")
        return path


def group(name: str) -> tuple[str, ...]:
    """The components of a group (:data:`GROUPS`)."""
    if name not in GROUPS:
        raise InstallError(f"unknown group {name!r}; choose from {', '.join(GROUPS)}")
    return GROUPS[name]


def ensure_group(name: str) -> dict[str, pathlib.Path]:
    """Every component of group ``name``, installed; raises on the first that cannot be."""
    return {c: ensure(c) for c in group(name)}


def go_module(module: str, version: str) -> pathlib.Path:
    """The source of a Go module (``module@version``) in the cache's Go module cache: downloaded
    through the Go module proxy once, checksum-verified like every module the installer uses."""
    import os
    import tempfile

    from authproxy_local.core.cache import cache_dir

    env = go_env(os.environ, cache_dir())
    with tempfile.TemporaryDirectory() as tmp:
        return pathlib.Path(go_download(require_go(), env, pathlib.Path(tmp), f"{module}@{version}")["Dir"])


def expand(names: Iterable[str]) -> list[str]:
    """Expand ``all`` and drop duplicates, keeping order; reject unknown names."""
    out: list[str] = []
    for n in names:
        for m in (COMPONENTS if n == "all" else (n,)):
            _component(m)
            if m not in out:
                out.append(m)
    return out
