"""Preflight: read-only checks of the live cluster and Keycloak, run by ``__main__.py`` during
`pulumi preview` and `pulumi up` before any resource is registered (docs/preflight.md).

``core`` is the framework (queries, snapshot, registry, verdict), ``checks`` the built-in checks
(pure functions), ``reader`` the one reader of the cluster. Other modules plug checks in with
``preflight.core.register`` / ``preflight.core.check``; importing this package loads the built-in
ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pulumi

from components.config import NAMESPACE, StackConfig
from preflight import app_selectors as _selectors  # noqa: F401 - registers the selector checks
from preflight import checks as _builtin  # noqa: F401 - registers the built-in checks
from preflight.core import (
    CHECKS,
    Failure,
    PreflightError,
    Reader,
    Verdict,
    evaluate,
    gather,
    judge,
    selected,
)
from preflight.reader import KubeTarget, LiveReader, TargetError

OFF_ENV = "AUTHPROXY_PREFLIGHT"
"""`AUTHPROXY_PREFLIGHT=off` switches the preflight off for one command, as
`authproxy:preflight.enabled false` does for the stack."""


def under_mocks() -> bool:
    """Pulumi's mock runtime (unit tests, the offline render): no engine, nothing is deployed."""
    from pulumi.runtime import mocks, settings

    return isinstance(settings.get_monitor(), mocks.MockMonitor)


def switched_off(cfg: StackConfig, environ: dict[str, str] | None = None) -> str | None:
    """Why the preflight does not run, or None."""
    env = os.environ if environ is None else environ
    if not cfg.preflight.enabled:
        return f"{NAMESPACE}:preflight.enabled is false"
    if env.get(OFF_ENV, "").lower() in ("off", "false", "0", "no"):
        return f"{OFF_ENV}={env[OFF_ENV]}"
    return None


def run(cfg: StackConfig, target: KubeTarget, dry_run: bool, reader: Reader | None = None,
        warn: Callable[[str], None] = pulumi.log.warn,
        info: Callable[[str], None] = pulumi.log.info) -> Verdict:
    """Run every check not skipped; raise PreflightError (one line per failure) or return."""
    chosen = selected(cfg.preflight.skip)
    if reader is None:
        try:
            reader = LiveReader.connect(target, cfg.preflight.timeout)
        except TargetError as e:
            raise PreflightError([Failure("cluster", f"{e}; or set {NAMESPACE}:preflight.enabled "
                                                     "false for an offline preview")]) from None
    snap = gather(cfg, chosen, reader)
    verdict = judge(evaluate(cfg, chosen, snap), chosen, dry_run)
    for w in verdict.warnings:
        warn(f"preflight: {w.line()} (`pulumi up` refuses until this is fixed)")
    if verdict.errors:
        raise PreflightError(verdict.errors, reader.where)
    if verdict.warnings:
        info(f"preflight: {len(chosen)} checks against {reader.where}, {len(verdict.warnings)} "
             "warning(s) that `pulumi up` refuses")
    else:
        info(f"preflight: {len(chosen)} checks passed against {reader.where}")
    return verdict


__all__ = ["CHECKS", "KubeTarget", "PreflightError", "run", "switched_off", "under_mocks"]
