"""The app's sidecar verifies every token itself, whatever the gateway did (issue 14).

The signed-in path's one signature check that must never go is the sidecar's: requests sent
straight to the echo app's sidecar (istiod's inbound config for the app, bypassing the gateway,
as a pod inside the mesh could) carry forged, expired or tampered tokens and are refused; the
control, a token signed with a key of the realm's JWKS, reaches the app. Each forgery follows a
valid token of the same shape, so a verification cache (Envoy's ``jwt_cache_config``) could
not let it through either: the cache is keyed by the whole token and re-checks ``exp``. The calls
come over Istio mTLS as the gateway's workload identity, the only one the sidecar admits a token
from (test_56 shows every other identity, and plain text, refused).
"""

from __future__ import annotations

import time

import pytest
import requests

from authproxy_local.harness import Harness
from tests.e2e.conftest import Attacks
from tests.e2e.kc_fixtures import forge
from tests.e2e.mesh import Answer, call_sidecar
from tests.e2e.test_50_attacks import _forgeries


def _sidecar_app(h: Harness) -> str:
    apps = [a.name for a in h.config.apps if a.name in h.endpoints.sidecars]
    if not apps:
        pytest.fail("the harness runs no app sidecar")
    return apps[0]


def _to_sidecar(h: Harness, app: str, token: str | None, path: str = "/private",
                identity: str | None = "gateway") -> Answer:
    """Straight to the app's sidecar over Istio mTLS as the gateway's workload identity (the only
    one its policy admits a token from), so only the token decides."""
    return call_sidecar(h, app, path, token, identity=identity)


def _reached_app(a: Answer) -> bool:
    return a.status == 200 and '"app"' in a.body and '"headers"' in a.body


def _tampered(token: str) -> str:
    head, body, sig = token.split(".")
    flipped = ("A" if sig[10] != "A" else "B")
    return f"{head}.{body}.{sig[:10]}{flipped}{sig[11:]}"


def test_sidecar_refuses_forged_expired_and_tampered_tokens(live: Harness, record, attacks: Attacks) -> None:
    app = _sidecar_app(live)
    good = forge(live)
    control = _to_sidecar(live, app, good)
    assert _reached_app(control), control
    assert _to_sidecar(live, app, None).status == 403  # no token: RBAC requires the principal
    now = int(time.time())
    cases = {**_forgeries(live), "tampered signature of a valid token": _tampered(good),
             # jwt_authn allows 60 s of clock skew (JwtProvider.clock_skew_seconds, Istio leaves
             # the default): two minutes past exp is expired for every verifier
             "expired two minutes ago": forge(live, iat=now - 420, exp=now - 120)}
    results = {}
    for name, token in cases.items():
        assert _to_sidecar(live, app, good).status == 200  # a valid token just before
        r = _to_sidecar(live, app, token)
        results[name] = r.status
        attacks.refused(f"forged JWT ({name}) at the sidecar", not _reached_app(r) and r.status in (401, 403), r)
    record("sidecar_forged_jwt_status", results)


def test_sidecar_accepts_the_id_token_a_session_carries(live: Harness) -> None:
    """The token the gateway forwards on the signed-in path is one the sidecar verifies on its
    own: oauth2-proxy's ID token for a real session reaches the app through the sidecar, and the
    same token with one signature character changed does not."""
    from tests.e2e.conftest import signed_in

    app = _sidecar_app(live)
    b = signed_in(live, "alice", app)
    host, port = live.endpoints.oauth2_proxy
    name = live.config.session.cookie_name
    cookie = "; ".join(f"{c.name}={c.value}" for c in b.session.cookies
                       if c.name == name or (c.name.startswith(name + "_") and "csrf" not in c.name))
    r = requests.get(f"http://{host}:{port}/oauth2/auth", headers={"Cookie": cookie}, timeout=10)
    assert r.status_code == 202, r.status_code
    token = r.headers["Authorization"].split(" ", 1)[1]
    ok = _to_sidecar(live, app, token)
    assert _reached_app(ok), ok
    bad = _to_sidecar(live, app, _tampered(token))
    assert bad.status == 401 and not _reached_app(bad), bad
