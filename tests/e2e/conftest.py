"""E2E fixtures: the live harness, started once per (ingress API, ext_authz mode) and shared by
every test of that case (pytest groups the tests by the session fixture's parameter, so each
case's stack runs once; the fault tests run last in each group). The cases: the dev stack (Istio
Gateway + VirtualServices) and the gateway-api stack (the same apps behind a Gateway API Gateway +
HTTPRoutes, Pulumi.gateway-api.yaml), each in both ext_authz modes.

``AUTHPROXY_E2E_MODES=envoy-filter`` restricts the modes (default: both),
``AUTHPROXY_E2E_INGRESS=gateway-api`` the ingress APIs (default: istio,gateway-api). With
``CI=true`` a component that cannot be installed fails the run; otherwise the tests skip with the
reason.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from authproxy_local import install
from authproxy_local.core.cache import cache_dir
from authproxy_local.harness import Harness
from authproxy_local.render import project_config
from tests.e2e.browser import Browser
from tests.e2e.kc_fixtures import add_prod_test_objects, add_test_objects

ALL_MODES = ("extension-provider", "envoy-filter")
MODES = tuple(m for m in os.environ.get("AUTHPROXY_E2E_MODES", ",".join(ALL_MODES)).split(",") if m)
INGRESS_STACKS = {"istio": "dev", "gateway-api": "gateway-api"}
"""Ingress API -> the stack whose live run covers it (same apps, users and protection)."""
INGRESS = tuple(i for i in os.environ.get("AUTHPROXY_E2E_INGRESS", ",".join(INGRESS_STACKS)).split(",") if i)
CASES = [(INGRESS_STACKS[i], m) for i in INGRESS for m in MODES]
CI = os.environ.get("CI", "").lower() == "true"


def case_key(stack: str, mode: str) -> str:
    """The report key of a live case: the mode for the dev stack (as before), else stack/mode."""
    return mode if stack == "dev" else f"{stack}/{mode}"

REPORT: dict[str, Any] = {"modes": {}}


def _record(mode: str, key: str, value: Any) -> None:
    REPORT["modes"].setdefault(mode, {})[key] = value


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Fault tests stop components: keep them after every other test of the same mode (runs
    # before pytest groups the items by the session fixture's mode, which keeps this order).
    items.sort(key=lambda it: it.nodeid.split("::")[0] if "/test_9" in it.nodeid else "")


def _ensure_components() -> None:
    # The harness brings the stack up with the real `pulumi up` (CLI, providers, kube-apiserver).
    for component in install.group("harness"):
        try:
            install.ensure(component)
        except install.InstallError as e:
            if CI:
                pytest.fail(f"CI=true and {component} is missing: {e}", pytrace=False)
            pytest.skip(f"{component} is not installed and could not be installed: {e}")


def _running(stack: str, mode: str | None, key: str, hook,
             overrides: dict[str, Any] | None = None) -> Iterator[Harness]:
    _ensure_components()
    h = Harness(stack, mode=mode, before_gateway=hook, overrides=overrides)
    t0 = time.monotonic()
    try:
        h.start()
    except Exception:
        h.stop()
        raise
    _record(key, "startup_seconds", h.timings.seconds)
    _record(key, "gateway_config", h.gateway_config)
    _record(key, "istio_only_removed", h.translation.removed if h.translation else None)
    _record(key, "logs", str(h.run_dir))
    try:
        with h.resolving():
            yield h
    finally:
        _record(key, "fixture_seconds", round(time.monotonic() - t0, 1))
        h.stop()


@pytest.fixture(scope="session", params=CASES, ids=[case_key(s, m) for s, m in CASES])
def live(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The dev stack (Istio ingress) or the gateway-api stack running for one ext_authz mode, with
    the public hosts resolving to its gateway inside this process."""
    stack, mode = request.param
    yield from _running(stack, mode, case_key(stack, mode), add_test_objects)


PROD_COOKIE_OPT_OUT = "wiki"
"""The one change the live prod run makes to Pulumi.prod.yaml: this app opts out of the gateway's
session-cookie stripping (``apps[].stripSessionCookies: false``), so the per-app opt-out runs live
next to an app that keeps the default."""


def prod_overrides() -> dict[str, Any]:
    apps = [dict(a) for a in project_config("prod")["apps"]]
    assert any(a["name"] == PROD_COOKIE_OPT_OUT for a in apps)
    for a in apps:
        if a["name"] == PROD_COOKIE_OPT_OUT:
            a["stripSessionCookies"] = False
    return {"apps": apps}


@pytest.fixture(scope="module")
def prod_live() -> Iterator[Harness]:
    """The prod stack (existing realm, Redis replication + sentinels, wildcard gateway host), with
    a test user in each app group added (prod has no demo users) and :data:`PROD_COOKIE_OPT_OUT`
    opted out of cookie stripping."""
    yield from _running("prod", None, "prod", add_prod_test_objects, prod_overrides())


@pytest.fixture
def record(request: pytest.FixtureRequest):
    """record(key, value): a number for the closing report (cache dir e2e-report.json), under the
    mode (dev) or 'prod'."""
    if "prod_live" in request.fixturenames:
        return lambda key, value: _record("prod", key, value)
    h = request.getfixturevalue("live")
    return lambda key, value: _record(case_key(h.stack, h.render.mode), key, value)


@pytest.fixture
def browser(live: Harness) -> Browser:
    return Browser(live.ca_file)


def new_browser(h: Harness) -> Browser:
    return Browser(h.ca_file)


def signed_in(h: Harness, username: str, app: str = "echo") -> Browser:
    """A browser signed in as ``username`` through the real login form, landed on ``app``."""
    b = Browser(h.ca_file)
    u = h.users[username]
    r = b.login(h.app_url(app), u.username, u.password)
    assert r.status_code in (200, 403), f"sign-in as {username} ended with {r.status_code} at {r.url}"
    return b


def echo_json(r: Any) -> dict[str, Any] | None:
    """The echo app's JSON if the response came from an app, else None."""
    if r.headers.get("content-type", "").startswith("application/json"):
        try:
            doc = r.json()
        except ValueError:
            return None
        if isinstance(doc, dict) and "app" in doc and "headers" in doc:
            return doc
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    if REPORT["modes"]:
        path = cache_dir() / "e2e-report.json"
        path.write_text(json.dumps(REPORT, indent=2, sort_keys=True, default=str))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT["modes"]:
        terminalreporter.section("authproxy e2e numbers")
        for mode, data in sorted(REPORT["modes"].items()):
            terminalreporter.write_line(f"{mode}: {json.dumps(data, sort_keys=True, default=str)}")
