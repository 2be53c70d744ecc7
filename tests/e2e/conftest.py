"""E2E fixtures: the live harness, started once per (ingress API, ext_authz mode) and shared by
every test of that case (pytest groups the tests by the session fixture's parameter, so each
case's stack runs once; the fault tests run last in each group). The cases: the dev stack (Istio
Gateway + VirtualServices) and the gateway-api stack (the same apps behind a Gateway API Gateway +
HTTPRoutes, Pulumi.gateway-api.yaml), each in both ext_authz modes.

The ambient case (Pulumi.ambient.yaml: the dev stack's apps in Istio ambient mode, checked in a
waypoint, ztunnel at their pods; extension-provider mode) runs the same tests; tests marked
``ambient_only`` run only there, tests marked ``sidecar_only`` only in the sidecar cases (the others
are deselected, not skipped).

``AUTHPROXY_E2E_MODES=envoy-filter`` restricts the modes (default: both),
``AUTHPROXY_E2E_INGRESS=gateway-api`` the ingress APIs (default: istio,gateway-api),
``AUTHPROXY_E2E_DATAPLANES=sidecar`` the data planes (default: sidecar,ambient). With
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
DATAPLANES = tuple(d for d in os.environ.get("AUTHPROXY_E2E_DATAPLANES", "sidecar,ambient").split(",") if d)
AMBIENT_CASES = [("ambient", "extension-provider")]
"""The ambient case: the ambient stack, its apps checked in a waypoint (one mode: the gateway's
ext_authz is the same Envoy as in the sidecar cases, run in both modes there)."""
CASES = [(INGRESS_STACKS[i], m) for i in INGRESS for m in MODES] * ("sidecar" in DATAPLANES)
CASES += [c for c in AMBIENT_CASES if c[1] in MODES] * ("ambient" in DATAPLANES)
CI = os.environ.get("CI", "").lower() == "true"


def case_key(stack: str, mode: str) -> str:
    """The report key of a live case: the mode for the dev stack (as before), else stack/mode."""
    return mode if stack == "dev" else f"{stack}/{mode}"

REPORT: dict[str, Any] = {"modes": {}}


def _record(mode: str, key: str, value: Any) -> None:
    REPORT["modes"].setdefault(mode, {})[key] = value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ambient_only: runs only in the ambient live case")
    config.addinivalue_line("markers", "sidecar_only: runs only in the sidecar live cases")


def _dataplane_mismatch(item: pytest.Item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "live" not in params:
        return False
    ambient = params["live"] in AMBIENT_CASES
    return bool((item.get_closest_marker("ambient_only") and not ambient)
                or (item.get_closest_marker("sidecar_only") and ambient))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests of the other data plane: deselected (reported as such), never skipped as a pass.
    other = [it for it in items if _dataplane_mismatch(it)]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [it for it in items if not _dataplane_mismatch(it)]
    # Fault tests stop components: keep them after every other test of the same mode (runs
    # before pytest groups the items by the session fixture's mode, which keeps this order).
    items.sort(key=lambda it: it.nodeid.split("::")[0] if "/test_9" in it.nodeid else "")


def _ensure_components() -> None:
    # The harness brings the stack up with the real `pulumi up` (CLI, providers, kube-apiserver).
    for component in (*install.group("harness"), *(install.group("ambient") if "ambient" in DATAPLANES else ())):
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
    _record(key, "dataplane", "ambient" if h.is_ambient else "sidecar")
    if h.is_ambient:
        _record(key, "waypoint_config", h.gateway_config)  # istiod's translation, the waypoint's part
        _record(key, "hbone_terminated_at_app_by", h.ztunnel_version)
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


@pytest.fixture(scope="session")
def prod_live() -> Iterator[Harness]:
    """The prod stack (existing realm, Redis replication + sentinels, wildcard gateway host), with
    a test user in each app group added (prod has no demo users) and :data:`PROD_COOKIE_OPT_OUT`
    opted out of cookie stripping. One run for test_97_prod and test_98_reliability (which
    replaces pods and kills the Redis master, so it runs last)."""
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


UPSTREAM_MARK = "x-envoy-upstream-service-time"
"""Set by the gateway's router on every response that came from upstream (an app's sidecar, an
app, oauth2-proxy on its routes); a reply the gateway made itself (ext_authz's redirect or 503,
an RBAC refusal, a 400) never has it. So it tells *who* refused: the gateway, or something
behind it."""


def gateway_answered(r: Any) -> bool:
    """The gateway itself answered (its own redirect, refusal or error); nothing behind it did."""
    return UPSTREAM_MARK not in r.headers


SECURITY: dict[str, dict[str, bool]] = {}
"""Live case -> attack case -> whether it passed through (reached what it attacked)."""


class Attacks:
    """Records attack cases of one live case: each one counted once, in the closing line
    ``security: <n> attack cases, <m> passed through``."""

    def __init__(self, key: str) -> None:
        self.key = key

    def refused(self, name: str, refused: bool, detail: Any = "") -> None:
        """One attack case: ``refused`` is what the test observed; a pass-through fails the test."""
        cases = SECURITY.setdefault(self.key, {})
        cases[name] = cases.get(name, False) or not refused
        assert refused, f"attack {name!r} passed through: {detail}"

    def by_gateway(self, name: str, r: Any, *statuses: int) -> None:
        """An attack the gateway itself must refuse with one of ``statuses``: no app (and no
        sidecar behind the gateway) answered."""
        ok = r.status_code in statuses and gateway_answered(r) and echo_json(r) is None
        self.refused(name, ok, f"{r.status_code}, upstream answered: {not gateway_answered(r)}, "
                               f"reached an app: {echo_json(r) is not None}")


    def kept_from_apps(self, name: str, r: Any) -> None:
        """A request that may lawfully end at oauth2-proxy's own route (a path that decodes to
        ``/oauth2/...``): refused by the gateway, or answered by oauth2-proxy, never by an app."""
        if gateway_answered(r):
            self.by_gateway(name, r, 301, 302, 308, 400, 401, 403, 404)
        else:
            self.refused(name, echo_json(r) is None and r.status_code in (302, 403, 404), r.status_code)


@pytest.fixture
def attacks(request: pytest.FixtureRequest) -> Attacks:
    if "prod_live" in request.fixturenames:
        return Attacks("prod")
    h = request.getfixturevalue("live")
    return Attacks(case_key(h.stack, h.render.mode))


def security_line() -> str | None:
    if not SECURITY:
        return None
    n = sum(len(c) for c in SECURITY.values())
    through = sum(v for c in SECURITY.values() for v in c.values())
    return f"security: {n} attack cases, {through} passed through"


def pytest_sessionfinish(session: pytest.Session) -> None:
    if REPORT["modes"] or SECURITY:
        REPORT["security"] = {"line": security_line(), "cases": SECURITY}
        path = cache_dir() / "e2e-report.json"
        path.write_text(json.dumps(REPORT, indent=2, sort_keys=True, default=str))


def ambient_line(case: str, data: dict[str, Any]) -> str | None:
    """The ambient case's closing line: what the waypoint and ztunnel refused (test_53), and what
    got through without them; "not recorded" where a test did not get that far."""
    if data.get("dataplane") != "ambient":
        return None
    forged = data.get("waypoint_forged_jwt_status") or {}
    refused = [k for k, v in forged.items() if v in (401, 403)]
    group = data.get("ambient_group_refused_by")
    bypass = data.get("ambient_bypass_attempts_refused")
    return (f"ambient {case}: waypoint refused "
            f"{'the outsider of the group' if group == 'waypoint' else 'the outsider: not recorded'} and "
            f"{len(refused)}/{len(forged)} missing or forged tokens; ztunnel refused "
            f"{bypass if bypass is not None else 'not recorded'} connections around the waypoint "
            f"(policy {data.get('ambient_bypass_refused_by', 'not recorded')}); unprotected: outsider "
            f"{data.get('ambient_group_without_waypoint_policies', 'not recorded')} without the waypoint's "
            f"policies, bypass {data.get('ambient_bypass_without_l4_policy', 'not recorded')} without the "
            f"L4 policy")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT["modes"] or SECURITY:
        terminalreporter.section("authproxy e2e numbers")
        for mode, data in sorted(REPORT["modes"].items()):
            terminalreporter.write_line(f"{mode}: {json.dumps(data, sort_keys=True, default=str)}")
        for mode, data in sorted(REPORT["modes"].items()):
            line = ambient_line(mode, data)
            if line:
                terminalreporter.write_line(line)
        line = security_line()
        if line:
            terminalreporter.write_line(line)
