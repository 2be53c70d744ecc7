"""Group-restricted apps: a member gets in, a signed-in user outside the groups does not."""

from __future__ import annotations

from authproxy_local.harness import Harness
from tests.e2e.conftest import echo_json, signed_in


def _restricted_app(h: Harness):
    apps = [a for a in h.config.apps if a.groups]
    assert apps, "the dev stack has an app restricted to groups"
    return apps[0]


def test_member_of_the_group_is_allowed(live: Harness) -> None:
    app = _restricted_app(live)
    member = next(u for u in live.users.values() if set(u.groups) & set(app.groups))
    b = signed_in(live, member.username, app=app.name)
    r = b.open(live.app_url(app.name))
    assert r.status_code == 200
    doc = echo_json(r)
    assert doc is not None and doc["app"] == app.name
    assert doc["headers"]["x-auth-request-preferred-username"] == member.username


def test_user_outside_the_groups_is_refused(live: Harness) -> None:
    app = _restricted_app(live)
    outsider = next(u for u in live.users.values() if not set(u.groups) & set(app.groups))
    b = signed_in(live, outsider.username, app="echo")  # signed in, but not a member
    r = b.open(live.app_url(app.name))
    assert r.status_code == 403, (r.status_code, r.text[:200])
    assert echo_json(r) is None
    # The same session is fine on an app without groups.
    assert b.open(live.app_url("echo")).status_code == 200
