"""Faults: the stack fails closed and loses nothing. Runs last in each mode (components are
stopped and started; Keycloak stays down at the end)."""

from __future__ import annotations

import time

from authproxy_local.harness import Harness
from tests.e2e.browser import Browser
from tests.e2e.conftest import echo_json, gateway_answered, signed_in


def _ok(b: Browser, h: Harness) -> bool:
    r = b.get(h.app_url("echo"))
    return r.status_code == 200 and echo_json(r) is not None


def _proxy_ready_again(h: Harness) -> None:
    """After Redis is back, as in a cluster: oauth2-proxy's readiness (its `/ready` pings Redis)
    turns at a probe after Redis answers again, then istiod pushes the endpoint; until then the
    gateway has no ready replica. One probe period for the prober to look again, then until every
    pod is ready and pushed."""
    time.sleep(h.pod_facts().probe_period + 0.5)
    h.wait_ready(h.endpoints.proxy_pods, timeout=30)


def test_session_survives_oauth2_proxy_restart(live: Harness, record) -> None:
    b = signed_in(live, "alice")
    seconds = live.restart_component("oauth2-proxy")
    record("oauth2_proxy_restart_seconds", round(seconds, 2))
    assert _ok(b, live)


def test_session_survives_redis_restart_with_persistence(live: Harness, record) -> None:
    b = signed_in(live, "bob")
    seconds = live.restart_component("redis")
    record("redis_restart_seconds", round(seconds, 2))
    _proxy_ready_again(live)
    assert _ok(b, live)


def test_redis_down_grants_nothing(live: Harness, record) -> None:
    b = signed_in(live, "alice")
    fresh = Browser(live.ca_file)
    live.stop_component("redis")
    try:
        r = b.get(live.app_url("echo"))
        assert echo_json(r) is None, "a session was accepted without its store"
        assert r.status_code >= 400 or r.status_code == 302, r.status_code
        r2 = fresh.get(live.app_url("echo"))
        assert echo_json(r2) is None
        # A clear error rather than a sign-in loop: sign-in cannot store a session either.
        assert r.status_code in (302, 403, 500, 502, 503), r.status_code
        record("redis_down_status", {"session": r.status_code, "new": r2.status_code})
    finally:
        live.start_component("redis")
        _proxy_ready_again(live)
    assert _ok(b, live), "the session is back once Redis is"


def test_oauth2_proxy_down_gateway_denies(live: Harness, record) -> None:
    b = signed_in(live, "bob")
    live.stop_component("oauth2-proxy")
    try:
        statuses = []
        for br in (b, Browser(live.ca_file)):
            r = br.get(live.app_url("echo"))
            statuses.append(r.status_code)
            # The gateway's own 503 (statusOnError): it failed closed; nothing behind it answered.
            assert r.status_code == 503 and gateway_answered(r) and echo_json(r) is None, (
                r.status_code, dict(r.headers))
        record("oauth2_proxy_down_status", statuses)
        # Public paths do not depend on oauth2-proxy.
        assert echo_json(Browser(live.ca_file).get(live.app_url("echo", "/healthz"))) is not None
    finally:
        live.start_component("oauth2-proxy")
    assert _ok(b, live)


def test_keycloak_down_sessions_keep_working_new_sign_ins_fail(live: Harness, record) -> None:
    b = signed_in(live, "alice")
    live.stop_component("keycloak")
    t0 = time.monotonic()
    assert _ok(b, live), "an existing session keeps working without Keycloak"
    fresh = Browser(live.ca_file)
    r = fresh.get(live.app_url("echo"))
    assert r.status_code == 302  # still sent to sign in...
    page = fresh.get(r.headers["Location"])
    assert page.status_code >= 500, page.status_code  # ...where the gateway answers with an error
    assert echo_json(page) is None
    record("keycloak_down_status", {"session": 200, "new_sign_in": page.status_code})
    record("keycloak_down_checked_seconds", round(time.monotonic() - t0, 2))
