"""Ambient apps (the ambient live case): the waypoint enforces the app's JWT and groups on its own,
and ztunnel at the app's pod refuses whatever does not come through the waypoint.

The waypoint admits a user's token only from the gateway's workload identity (the peer of the
gateway's HBONE connection): a token an app received, replayed from inside the mesh, is refused
there. So the waypoint's own group check is shown on requests from the gateway, with the
gateway's group policy left out of its translation.

Who refused is shown, not guessed: the waypoint's own RBAC counter (its Envoy's admin, in its pod
namespace) counts the refusal, and ztunnel's access log names the stack's L4 policy. Each test
also runs once against the unprotected behaviour, in the same live run, and shows the refusal is
the protection's: the waypoint on a translation without the app's waypoint policies lets the
outsider in; ztunnel on istiod's push without the L4 policy lets the bypass reach the app. Then
the real configuration is restored and checked again.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest

from authproxy_local.harness import Harness
from authproxy_local.mesh.adapter import Bootstraps
from tests.e2e.conftest import Attacks, echo_json, signed_in
from tests.e2e.kc_fixtures import forge

pytestmark = pytest.mark.ambient_only

MESH_CLIENT = "mesh-client-harness"
RBAC_DENIED = "rbac.denied"
"""The waypoint's RBAC filter counts each request it refuses under ``http.<chain>.rbac.denied``
(envoy/source/extensions/filters/http/rbac)."""


def _restricted(h: Harness):
    return next(a for a in h.config.ambient_apps if a.groups)


def _session_token(h: Harness, username: str, app: str) -> str:
    """The ID token a signed-in user's requests carry to the app (what the echo app received)."""
    b = signed_in(h, username, app="echo")
    doc = echo_json(b.open(h.app_url("echo")))
    assert doc is not None, "signed in, but the echo app did not answer"
    auth = doc["headers"].get("authorization", "")
    assert auth.startswith("Bearer "), doc["headers"]
    return auth.split(" ", 1)[1]


def _through_mesh(h: Harness, app: str, token: str | None, path: str = "/") -> tuple[int, str]:
    """From a workload in the mesh to the app's Service: its ztunnel sends it to the waypoint."""
    ip, port = h.service_vip(app)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return h.curl_from(MESH_CLIENT, f"http://{ip}:{port}{path}", headers)


def _is_waypoint_policy(o: dict[str, Any]) -> bool:
    return (o["kind"] in ("AuthorizationPolicy", "RequestAuthentication") and bool(o["spec"].get("targetRefs"))
            and any(r.get("kind") == "Service" for r in o["spec"]["targetRefs"]))


def _translation_without(h: Harness, leave_out: Callable[[dict[str, Any]], bool]) -> Bootstraps:
    objs = [o for o in copy.deepcopy(h.render.kubernetes) if not leave_out(o)]
    assert len(objs) < len(h.render.kubernetes)
    return h.translate(dataclasses.replace(h.render, kubernetes=objs))


def _without_waypoint_policies(h: Harness) -> Bootstraps:
    """The run's translation with the app-side policies (RequestAuthentication, ALLOW, DENY
    attached to the Services) left out: the unprotected waypoint."""
    return _translation_without(h, _is_waypoint_policy)


def _without_gateway_group_policy(h: Harness, app: str, waypoint_too: bool = False) -> Bootstraps:
    """The run's translation without the gateway's own DENY for ``app`` (its group check), so a
    signed-in outsider's request reaches the waypoint from the gateway's identity
    (``waypoint_too``: the waypoint policies left out as well)."""
    name = f"{h.config.istio.gateway.name}-{app}-gateway-authz"
    return _translation_without(h, lambda o: (o["kind"] == "AuthorizationPolicy" and o["metadata"]["name"] == name)
                                or (waypoint_too and _is_waypoint_policy(o)))


def _pod_of(h: Harness, app: str) -> str:
    assert h.ambient_pods is not None
    return next(p.name for p in h.ambient_pods.ambient_pods.values() if p.app == app)


def test_user_outside_the_group_is_refused_by_the_waypoint(live: Harness, record) -> None:
    """authorizeAt both (the default): the gateway refuses the outsider first. With the gateway's
    group policy left out, the outsider's request reaches the waypoint from the gateway's identity
    (the one source the waypoint admits a user's token from), and the waypoint refuses it on the
    group itself."""
    app = _restricted(live)
    outsider = next(u for u in live.users.values() if not set(u.groups) & set(app.groups))
    member = next(u for u in live.users.values() if set(u.groups) & set(app.groups))
    b = signed_in(live, outsider.username, app="echo")
    m = signed_in(live, member.username, app=app.name)
    denied_before = live.waypoint_stat(RBAC_DENIED)
    r = b.open(live.app_url(app.name))
    assert r.status_code == 403 and echo_json(r) is None, (r.status_code, r.text[:200])
    assert live.waypoint_stat(RBAC_DENIED) == denied_before, "the gateway should have refused this one"

    gateway_unchecked = _without_gateway_group_policy(live, app.name)
    try:
        live.run_gateway(gateway_unchecked)
        r = b.open(live.app_url(app.name))
        assert r.status_code == 403 and echo_json(r) is None, (r.status_code, r.text[:200])
        assert live.waypoint_stat(RBAC_DENIED) == denied_before + 1, "the refusal was not the waypoint's"
        # A member gets in through the same gateway: the waypoint sees the gateway's identity.
        ok = m.open(live.app_url(app.name))
        assert ok.status_code == 200 and (echo_json(ok) or {}).get("app") == app.name, ok.status_code
        record("ambient_group_refused_by", "waypoint")

        # Against the unprotected waypoint as well (no policies attached to the Services): in.
        live.run_gateway(_without_gateway_group_policy(live, app.name, waypoint_too=True))
        live.run_waypoints(_without_waypoint_policies(live))
        r = b.open(live.app_url(app.name))
        assert r.status_code == 200 and (echo_json(r) or {}).get("app") == app.name, (
            "without the waypoint's policies the outsider should reach the app: is the waypoint live?",
            r.status_code)
        record("ambient_group_without_waypoint_policies", r.status_code)
    finally:
        live.run_waypoints()
        live.run_gateway()
    r = b.open(live.app_url(app.name))
    assert r.status_code == 403 and echo_json(r) is None, (r.status_code, r.text[:200])
    assert m.open(live.app_url(app.name)).status_code == 200


def _waypoint_refuses(h: Harness, attacks: Attacks, name: str, call: Callable[[], tuple[int, str]]) -> None:
    before = h.waypoint_stat(RBAC_DENIED)
    code, body = call()
    attacks.refused(name, code == 403 and "RBAC: access denied" in body and '"app"' not in body
                    and h.waypoint_stat(RBAC_DENIED) == before + 1, (code, body[:200]))


def test_the_id_token_an_app_received_opens_no_other_app_through_its_waypoint(
        live: Harness, record, attacks: Attacks) -> None:
    """The ID token the echo app received (a member of admin's group signed in), replayed from
    inside the mesh at admin's Service: from echo's own pod (echo's identity) and from another
    workload. admin's waypoint refuses it, signed in and after sign-out; the same user's request
    through the gateway gets in."""
    target = _restricted(live)
    member = next(u for u in live.users.values() if set(u.groups) & set(target.groups))
    b = signed_in(live, member.username, app="echo")
    doc = echo_json(b.open(live.app_url("echo", "/where-the-token-lands")))
    assert doc is not None
    token = doc["headers"]["authorization"].split(" ", 1)[1]
    ok = b.open(live.app_url(target.name))
    assert ok.status_code == 200 and (echo_json(ok) or {}).get("app") == target.name, ok.status_code
    ip, port = live.service_vip(target.name)
    url = f"http://{ip}:{port}/"
    echo_pod = _pod_of(live, "echo")
    for when in ("signed in", "after sign-out"):
        _waypoint_refuses(live, attacks, f"ID token at {target.name}'s waypoint from echo's identity ({when})",
                          lambda: live.curl_from(echo_pod, url, {"Authorization": f"Bearer {token}"}))
        _waypoint_refuses(live, attacks, f"ID token at {target.name}'s waypoint from a mesh client ({when})",
                          lambda: _through_mesh(live, target.name, token))
        if when == "signed in":
            assert b.get(f"{live.auth_url}/oauth2/sign_out").status_code == 302
    record("ambient_replayed_id_token_refused_by", "waypoint")

    # Against the unprotected waypoint: the replay reaches admin.
    try:
        live.run_waypoints(_without_waypoint_policies(live))
        code, body = live.curl_from(echo_pod, url, {"Authorization": f"Bearer {token}"})
        assert code == 200 and '"app"' in body, ("without the waypoint's policies the replay should "
                                                  "reach the app: is the waypoint live?", code)
        record("ambient_replay_without_waypoint_policies", code)
    finally:
        live.run_waypoints()


def test_waypoint_refuses_forged_expired_and_missing_tokens(live: Harness, record) -> None:
    """Straight to the waypoint from inside the mesh (not through the gateway): it verifies every
    token itself. A token signed with a key of the realm's JWKS is refused there too, by the RBAC
    filter (not from the gateway's identity: 403); the tokens its JWT filter rejects (another key,
    another issuer, expired) get its 401 before that."""
    app = next(a.name for a in live.config.ambient_apps if not a.groups)
    code, body = _through_mesh(live, app, forge(live))
    assert code == 403 and "RBAC: access denied" in body, (code, body[:200])
    now = int(time.time())
    cases = {
        "no token": None,
        "signed by another key": forge(live, key=_other_key()),
        "wrong issuer": forge(live, iss="https://evil.example/realms/x"),
        "wrong audience": forge(live, aud="someone-else"),
        "expired two minutes ago": forge(live, iat=now - 420, exp=now - 120),
    }
    results = {}
    for name, token in cases.items():
        code, body = _through_mesh(live, app, token, "/private")
        results[name] = code
        assert code in (401, 403), f"{name}: {code} {body[:200]}"
        if name in ("signed by another key", "wrong issuer", "expired two minutes ago"):
            assert code == 401 and "Jwt" in body, f"{name}: not the JWT filter's refusal: {code} {body[:200]}"
        assert '"app"' not in body, f"{name}: reached the app"
    record("waypoint_forged_jwt_status", results)


def _other_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_request_skipping_the_waypoint_is_refused_by_ztunnel(live: Harness, record) -> None:
    """Straight to the app's pod, around the waypoint: from a workload in the mesh (HBONE with its
    own identity) and in plain text (no identity). ztunnel at the pod refuses both by the stack's
    L4 policy, which it names in its log."""
    app = live.config.ambient_apps[0]
    ip, port = live.pod_address(app.name)
    policy = f"{app.service.namespace}/{live.config.istio.gateway.name}-{app.name}-waypoint-only"
    log_before = len(live.ztunnel_log(app.name))
    code, body = live.curl_from(MESH_CLIENT, f"http://{ip}:{port}/")
    assert code == 0 and '"app"' not in body, (code, body[:200])
    assert live.ambient_pods is not None
    waypoint_pod = next(iter(live.ambient_pods.waypoints.values())).name
    plain, body = live.curl_from(waypoint_pod, f"http://{ip}:{port}/")  # the waypoint pod is not in the mesh
    assert plain == 0 and '"app"' not in body, (plain, body[:200])
    log = live.ztunnel_log(app.name)[log_before:]
    refusals = [line for line in log.splitlines() if f"explicitly denied by: {policy}" in line]
    assert any("src.identity=\"spiffe://cluster.local/ns/" in line and "sa/mesh-client" in line
               for line in refusals), log[-2000:]
    assert any("src.identity" not in line for line in refusals), log[-2000:]
    # Through the gateway and the waypoint the same app answers.
    user = next(u for u in live.users.values() if set(u.groups) & set(app.groups) or not app.groups)
    ok = signed_in(live, user.username, app=app.name).open(live.app_url(app.name))
    assert ok.status_code == 200 and (echo_json(ok) or {}).get("app") == app.name, ok.status_code
    record("ambient_bypass_refused_by", policy)
    record("ambient_bypass_attempts_refused", 2)  # HBONE with the client's identity, plain text

    # Against the unprotected behaviour: ztunnel on istiod's push without the L4 policy.
    try:
        live.run_ztunnels(without_policies=[policy.split("/", 1)[1]])
        code, body = live.curl_from(MESH_CLIENT, f"http://{ip}:{port}/")
        assert code == 200 and '"app"' in body, (
            "without the L4 policy the bypass should reach the app: is ztunnel's config live?", code)
        record("ambient_bypass_without_l4_policy", code)
    finally:
        live.run_ztunnels()
    code, _ = live.curl_from(MESH_CLIENT, f"http://{ip}:{port}/")
    assert code == 0
