"""The header flow between client, gateway, oauth2-proxy and apps (components/headers.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from components.headers import (
    AUTHORIZATION,
    CLIENT_ADDRESS_HEADER,
    HEADERS,
    REDIRECT_HEADER,
    early_header_mutation,
    identity_headers,
    is_stripped,
    list_matcher,
    never_upstream,
    string_matcher,
)

ALL_LISTS = {
    "check_request": HEADERS.check_request,
    "upstream_on_allow": HEADERS.upstream_on_allow,
    "downstream_on_allow": HEADERS.downstream_on_allow,
    "downstream_on_deny": HEADERS.downstream_on_deny,
    "strip_exact": HEADERS.strip_exact,
    "strip_prefixes": HEADERS.strip_prefixes,
}


def apply_early_mutation(headers: dict[str, str]) -> dict[str, str]:
    """What Envoy's early header mutation does to a request's headers (remove / remove_on_match
    with prefix, case-insensitive keys)."""
    out = {k.lower(): v for k, v in headers.items()}
    for m in early_header_mutation()["typed_config"]["mutations"]:
        if "remove" in m:
            out.pop(m["remove"].lower(), None)
        else:
            prefix = m["remove_on_match"]["key_matcher"]["prefix"].lower()
            out = {k: v for k, v in out.items() if not k.startswith(prefix)}
    return out


def matcher_matches(m: dict, name: str) -> bool:
    n = name.lower()
    if "exact" in m:
        return n == m["exact"]
    if "prefix" in m:
        return n.startswith(m["prefix"])
    return n.endswith(m["suffix"])


def test_every_list_is_lower_case_without_duplicates():
    for field, names in ALL_LISTS.items():
        assert names, field
        assert all(n == n.lower() for n in names), field
        assert len(set(names)) == len(names), field


def test_check_carries_the_session_cookie_and_the_return_url_from_the_gateway():
    assert {"cookie", AUTHORIZATION} <= set(HEADERS.check_request)
    assert "accept" in HEADERS.check_request  # XHR gets 401 instead of a redirect
    added = dict(HEADERS.check_additional)
    # The return URL is built by Envoy from the request, never copied from the client.
    assert REDIRECT_HEADER not in HEADERS.check_request
    assert added[REDIRECT_HEADER] == "https://%REQ(:authority)%%REQ(:path)%"


def test_the_client_address_oauth2_proxy_logs_is_the_gateways():
    """The check carries the address the gateway determined, overriding whatever the client sent
    under that name; the client's own forwarding headers are not copied into the check."""
    added = dict(HEADERS.check_additional)
    assert added[CLIENT_ADDRESS_HEADER] == "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
    for h in ("x-forwarded-for", "x-real-ip", "x-forwarded-host", "x-forwarded-uri",
              CLIENT_ADDRESS_HEADER):
        assert h not in HEADERS.check_request, h


def test_upstream_gets_the_token_and_identity_but_not_the_access_token():
    up = set(HEADERS.upstream_on_allow)
    assert {AUTHORIZATION, "x-auth-request-user", "x-auth-request-email",
            "x-auth-request-groups", "x-auth-request-preferred-username"} == up
    assert "x-auth-request-access-token" not in up
    assert "cookie" not in up and "set-cookie" not in up


def test_deny_list_is_not_empty_and_keeps_the_redirect_and_csrf_cookie():
    # An empty deny list would make Envoy pass every header of oauth2-proxy's reply.
    assert {"location", "set-cookie", "content-type"} <= set(HEADERS.downstream_on_deny)
    assert HEADERS.downstream_on_allow == ("set-cookie",)


def test_forged_identity_headers_are_stripped_before_any_filter():
    attack = {
        "X-Auth-Request-User": "admin",
        "X-Auth-Request-Groups": "admins",
        "x-auth-request-email": "root@example.com",
        "X-Auth-Request-Preferred-Username": "admin",
        "X-Auth-Request-Access-Token": "forged",
        "X-Auth-Request-Redirect": "https://evil.example/",
        "X-Forwarded-User": "admin",
        "X-Forwarded-Email": "root@example.com",
        "X-Forwarded-Groups": "admins",
        "X-Forwarded-Preferred-Username": "admin",
        "X-Forwarded-Access-Token": "forged",
        "GAP-Auth": "admin",
    }
    legit = {
        "cookie": "_authproxy=x",
        "authorization": "Bearer t",
        "x-forwarded-for": "203.0.113.7",
        "x-forwarded-proto": "https",
        "accept": "text/html",
        "host": "app.example.com",
    }
    assert apply_early_mutation({**attack, **legit}) == legit


def test_every_identity_header_oauth2_proxy_may_omit_is_stripped_at_the_edge():
    # Envoy only overrides an allowed upstream header when oauth2-proxy returns it; oauth2-proxy
    # omits e.g. x-auth-request-groups for a user without groups. So every one of them must be
    # stripped from the client request, or a forged value would survive.
    for h in HEADERS.upstream_on_allow:
        if h != AUTHORIZATION:
            assert is_stripped(h), h
            assert h not in apply_early_mutation({h: "forged"})
    for h in identity_headers():
        assert is_stripped(h), h


@given(st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True), st.booleans())
def test_any_x_auth_request_header_is_stripped_whatever_its_case(suffix, upper):
    name = "x-auth-request-" + suffix
    name = name.upper() if upper else name
    assert is_stripped(name)
    assert apply_early_mutation({name: "forged"}) == {}


def test_the_edge_keeps_what_envoy_and_oauth2_proxy_need():
    for h in ("authorization", "cookie", "x-forwarded-for", "x-forwarded-proto",
              "x-forwarded-host", "accept", "host"):
        assert not is_stripped(h), h


def test_route_removal_lists():
    ids = set(identity_headers())
    assert AUTHORIZATION not in ids
    assert "x-auth-request-access-token" in ids and "x-forwarded-user" in ids
    never = set(never_upstream())
    # Removing a header oauth2-proxy forwards would drop it after ext_authz set it.
    assert never.isdisjoint(HEADERS.upstream_on_allow)
    assert never == ids - set(HEADERS.upstream_on_allow)


def test_string_matchers_follow_istios_exact_prefix_suffix_rules():
    assert string_matcher("cookie") == {"exact": "cookie", "ignore_case": True}
    assert string_matcher("x-auth-*") == {"prefix": "x-auth-", "ignore_case": True}
    assert string_matcher("*-token") == {"suffix": "-token", "ignore_case": True}
    lm = list_matcher(HEADERS.upstream_on_allow)
    assert [p["exact"] for p in lm["patterns"]] == list(HEADERS.upstream_on_allow)
    assert any(matcher_matches(p, "X-Auth-Request-User") for p in lm["patterns"])
    assert not any(matcher_matches(p, "x-auth-request-access-token") for p in lm["patterns"])
