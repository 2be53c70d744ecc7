"""A session outlives a session-store outage: the gateway never passes a *deletion* of the session
cookie on an app route.

**Why.** oauth2-proxy v7 clears a session it cannot load, whatever the reason
(pkg/middleware/stored_session.go ``loadSession``: "Error loading cookied session ... removing
session"): a session that expired or was revoked, but equally a Redis that is failing over or
briefly unreachable. Behind ext_authz its answer (a 302 to sign-in, or 401 on API routes) goes to
the browser with ``Set-Cookie: <name>=; Expires=<past>`` (``set-cookie`` is among the headers sent
downstream on deny, for the sign-in's CSRF cookie). So every user who makes a request during a
sentinel failover loses the cookie, although the session itself is still in Redis and works again
seconds later: measured on the live harness, 100 of 100 active sessions lost to one failover
(docs/reliability.md).

**What.** A response-only Lua filter placed *before* ext_authz in the gateway's chain (so it sees
the denial ext_authz answers with, which only runs through the filters before it) drops any
``Set-Cookie`` that deletes the session cookie or one of its split parts (empty value, or
``Max-Age`` <= 0) and leaves every other ``Set-Cookie`` alone (the CSRF cookie of the sign-in
redirect, a refreshed session cookie, the apps' own cookies). It is switched off on the routes to
oauth2-proxy (``/oauth2/*`` on app hosts, the auth host), where sign-out must delete the cookie:
ending a browser's session is the sign-out endpoint's job alone.

**Why that is safe.** The cookie is only a ticket; whether it is worth anything is decided in
Redis on every request. A cookie whose session really is gone (expired, revoked, signed out
elsewhere, or signed with a rotated cookie secret) keeps being sent and keeps being answered with
the sign-in redirect; the next sign-in overwrites it (oauth2-proxy reuses a valid ticket or issues
a new one). A script error leaves the response untouched (oauth2-proxy's behaviour).
"""

from __future__ import annotations

import json

from components.cookies import LUA_PER_ROUTE_TYPE, LUA_TYPE, SessionCookies

KEEP_FILTER_NAME = "authproxy.session_cookie_keep"
"""The HTTP filter's name in the gateway's chain (per-route configs are keyed by it)."""


def deletes_session_cookie(cookies: SessionCookies, set_cookie: str) -> bool:
    """Whether one ``Set-Cookie`` value deletes the session cookie (or a split part): the rule the
    script applies, as Python for the tests."""
    head, _, attrs = set_cookie.partition(";")
    name, eq, value = head.partition("=")
    if not eq or not cookies.is_session(name.strip()):
        return False
    if value.strip() in ("", '""'):
        return True
    for attr in attrs.split(";"):
        key, _, val = attr.partition("=")
        if key.strip().lower() == "max-age":
            try:
                return int(val.strip()) <= 0
            except ValueError:
                return False
    return False


def keep_lua_source(cookies: SessionCookies) -> str:
    """The response script: the rule of :func:`deletes_session_cookie`, written out for Envoy
    (JSON string syntax is valid Lua for the ASCII names :class:`SessionCookies` admits)."""
    return f"""\
-- authproxy: never pass a deletion of the session cookie on an app route (a session-store
-- outage must not sign users out; components/session_keep.py). For --cookie-name={cookies.name}.
local NAME = {json.dumps(cookies.name)}
local PREFIX = NAME .. "_"

local function is_session(name)
  if name == NAME then return true end
  if name:sub(1, #PREFIX) ~= PREFIX then return false end
  return name:sub(#PREFIX + 1):match("^%d+$") ~= nil
end

local function deletes(v)
  local head = v:match("^[^;]*")
  local name, value = head:match("^%s*(.-)%s*=(.*)$")
  if name == nil or not is_session(name) then return false end
  value = value:match("^%s*(.-)%s*$")
  if value == "" or value == '""' then return true end
  for attr in v:sub(#head + 1):gmatch(";([^;]*)") do
    local key, val = attr:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
    if key ~= nil and key:lower() == "max-age" then
      local age = tonumber(val)
      return age ~= nil and age <= 0
    end
  end
  return false
end

local function keep(handle)
  local headers = handle:headers()
  local n = headers:getNumValues("set-cookie")
  if n == 0 then return end
  local kept, dropped = {{}}, false
  for i = 0, n - 1 do
    local v = headers:getAtIndex("set-cookie", i)
    if deletes(v) then dropped = true else kept[#kept + 1] = v end
  end
  if not dropped then return end
  headers:remove("set-cookie")
  for _, v in ipairs(kept) do headers:add("set-cookie", v) end
end

function envoy_on_response(handle)
  local ok, err = pcall(keep, handle)
  if not ok then
    handle:logErr("authproxy session cookie keep filter failed: " .. tostring(err))
  end
end
"""


def keep_filter(cookies: SessionCookies) -> dict[str, object]:
    """The gateway HTTP filter (Envoy ``Lua``) that drops deletions of the session cookie."""
    return {
        "name": KEEP_FILTER_NAME,
        "typed_config": {
            "@type": LUA_TYPE,
            "default_source_code": {"inline_string": keep_lua_source(cookies)},
            "stat_prefix": "authproxy_cookie_keep",
        },
    }


def keep_disabled_per_route() -> dict[str, object]:
    """``typed_per_filter_config`` entry switching the keep filter off on one route."""
    return {KEEP_FILTER_NAME: {"@type": LUA_PER_ROUTE_TYPE, "disabled": True}}
