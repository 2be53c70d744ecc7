"""The translator is live: the gateway runs what istiod makes of the render, so a deliberately
wrong AuthorizationPolicy changes what the gateway lets through, and the tests see it.

The wrong policy is the CUSTOM (ext_authz) policy with ``/private*`` added to its ``notPaths``
(the extension-provider render; in envoy-filter mode the same render is translated on this run's
addresses). The gateway Envoy is restarted on that translation, then on the real one again.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from authproxy_local import render as render_mod
from authproxy_local.harness import Harness
from tests.e2e.browser import Browser
from tests.e2e.conftest import echo_json, gateway_answered


def _wrong_render(live: Harness) -> Any:
    base = live.render if live.render.mode == "extension-provider" else render_mod.render(
        live.stack, "extension-provider", live.overrides or None)
    objs = copy.deepcopy(base.kubernetes)
    changed = 0
    for o in objs:
        if o.get("kind") == "AuthorizationPolicy" and o["spec"].get("action") == "CUSTOM":
            for rule in o["spec"].get("rules", []):
                for to in rule.get("to", []):
                    op = to.get("operation", {})
                    if "notPaths" in op:
                        op["notPaths"] = [*op["notPaths"], "/private*"]
                        changed += 1
    assert changed, "the render has no CUSTOM AuthorizationPolicy with notPaths to break"
    return dataclasses.replace(base, kubernetes=objs)


def _unauthenticated(live: Harness, path: str) -> Any:
    return Browser(live.ca_file).get(live.app_url("echo", path), allow_redirects=False)


def test_wrong_authorization_policy_lets_an_unauthenticated_request_through(live: Harness, record) -> None:
    kc = live.config.keycloak.host
    before = _unauthenticated(live, "/private-report")
    assert before.status_code == 302, before.status_code
    assert "/oauth2/start" in before.headers["Location"] or kc in before.headers["Location"]

    wrong = live.translate(_wrong_render(live))
    try:
        live.run_gateway(wrong)
        leaked = _unauthenticated(live, "/private-report")
        control = _unauthenticated(live, "/other")
        # The gateway no longer sends /private* to sign-in: the request meets the next check, the
        # gateway's own DENY policy for the app (no principal of the realm), which refuses it.
        assert leaked.status_code != 302, "the wrong policy changed nothing: is the translation live?"
        assert leaked.status_code == 403, leaked.status_code
        assert "RBAC: access denied" in leaked.text and gateway_answered(leaked)
        assert echo_json(leaked) is None
        # Paths the wrong policy does not touch are still sent to sign-in.
        assert control.status_code == 302, control.status_code
        record("translator_live", {"wrong_policy_private": leaked.status_code, "control": control.status_code})
    finally:
        live.run_gateway()
    after = _unauthenticated(live, "/private-report")
    assert after.status_code == 302, after.status_code
