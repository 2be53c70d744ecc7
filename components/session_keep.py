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
redirect, a refreshed session cookie, the apps' own cookies). It does not drop anything on the routes to
oauth2-proxy (``/oauth2/*`` on app hosts, the auth host), where sign-out must delete the cookie:
ending a browser's session is the sign-out endpoint's job alone.

**Why that is safe.** The cookie is only a ticket (a key into Redis and the secret the session
is encrypted with); whether it is worth anything is decided in Redis on every request. Every
deletion oauth2-proxy v7.15 answers an app's check with comes from its session store's ``Clear``
(``loadSession``'s error path: the session is missing, expired, invalid, or Redis failed; a refresh
Keycloak refused with ``invalid_grant``; an authorization that failed), which also ``DEL``s the
session from Redis whenever the ticket still decodes; a ticket that does not decode (another
cookie secret, tampered, past ``cookieExpire``) names nothing oauth2-proxy will ever load. So a
kept cookie whose session is gone keeps being answered with the sign-in redirect. One way back
existed: a sign-in *reuses* the ticket of the request's session cookie when it decodes
(``persistence.Manager.Save``), so the next sign-in in that browser would have written the new
session under the old ticket, and a copy of that ticket (the reason a session gets revoked)
would work again. Hence the filter's other half: on oauth2-proxy's routes it removes the session
cookie from sign-in callbacks (``/oauth2/callback``) before they reach oauth2-proxy, so every
sign-in issues a fresh ticket (what OWASP asks of any login: a new session identifier). Nothing
else changes on those routes: sign-out still reads the cookie and still deletes it. A script
error leaves a response untouched (oauth2-proxy's behaviour) and answers a callback with 500
(never forwards the old ticket). Proven live: tests/e2e/test_57_session_keep.py.
"""

from __future__ import annotations

import json

from components.common import OAUTH2_PREFIX
from components.cookies import LUA_PER_ROUTE_TYPE, LUA_TYPE, SessionCookies

KEEP_FILTER_NAME = "authproxy.session_cookie_keep"
"""The HTTP filter's name in the gateway's chain (per-route configs are keyed by it)."""
CALLBACK_PATH = OAUTH2_PREFIX + "callback"
"""oauth2-proxy's sign-in callback (``--proxy-prefix`` /oauth2), where it saves a new session."""


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


def _lua_session_names(cookies: SessionCookies) -> str:
    """Lua: ``NAME``, ``PREFIX`` and ``is_session(name)`` (:meth:`SessionCookies.is_session`)."""
    return f"""local NAME = {json.dumps(cookies.name)}
local PREFIX = NAME .. "_"

local function is_session(name)
  if name == NAME then return true end
  if name:sub(1, #PREFIX) ~= PREFIX then return false end
  return name:sub(#PREFIX + 1):match("^%d+$") ~= nil
end
"""


def keep_lua_source(cookies: SessionCookies) -> str:
    """The response script: the rule of :func:`deletes_session_cookie`, written out for Envoy
    (JSON string syntax is valid Lua for the ASCII names :class:`SessionCookies` admits)."""
    return f"""\
-- authproxy: never pass a deletion of the session cookie on an app route (a session-store
-- outage must not sign users out; components/session_keep.py). For --cookie-name={cookies.name}.
{_lua_session_names(cookies)}
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


def callback_strips_ticket(cookies: SessionCookies, path: str, cookie_header: str) -> str | None:
    """What the callback script leaves of one ``Cookie`` header on a request for ``path`` (None:
    the header goes): on a sign-in callback every session cookie pair (the name as Go's
    ``net/http`` reads it: the text before the first ``=``, trimmed; the whole pair without one)
    is removed, every other pair kept byte for byte. The rule as Python, for the tests."""
    if not path.startswith(CALLBACK_PATH):
        return cookie_header
    kept, removed = [], False
    for segment in cookie_header.split(";"):
        name, eq, _ = segment.partition("=")
        if cookies.is_session(name.strip() if eq else segment.strip()):
            removed = True
        else:
            kept.append(segment)
    if not removed:
        return cookie_header
    out = ";".join(kept).lstrip()
    return None if not out.replace(";", "").strip() else out


def callback_lua_source(cookies: SessionCookies) -> str:
    """The keep filter's script on oauth2-proxy's routes: a sign-in callback reaches oauth2-proxy
    without the session cookie (so it issues a new ticket); responses pass untouched (sign-out
    deletes the cookie). The rule of :func:`callback_strips_ticket`."""
    return f"""\
-- authproxy: a sign-in callback never carries a session ticket, so oauth2-proxy issues a new one
-- instead of reusing a ticket whose session is gone (components/session_keep.py).
-- For --cookie-name={cookies.name}.
local CALLBACK = {json.dumps(CALLBACK_PATH)}
{_lua_session_names(cookies)}
local function strip(value)
  local kept, removed = {{}}, false
  for segment in (value .. ";"):gmatch("([^;]*);") do
    local name = segment:match("^%s*([^=]-)%s*=") or segment:match("^%s*(.-)%s*$")
    if is_session(name) then removed = true else kept[#kept + 1] = segment end
  end
  if not removed then return value end
  return (table.concat(kept, ";"):gsub("^%s+", ""))
end

local function strip_tickets(handle)
  local headers = handle:headers()
  local path = headers:get(":path") or ""
  if path:sub(1, #CALLBACK) ~= CALLBACK then return end
  local n = headers:getNumValues("cookie")
  if n == 0 then return end
  local values = {{}}
  for i = 0, n - 1 do values[#values + 1] = strip(headers:getAtIndex("cookie", i)) end
  headers:remove("cookie")
  for _, v in ipairs(values) do
    if not v:match("^[%s;]*$") then headers:add("cookie", v) end
  end
end

function envoy_on_request(handle)
  local ok, err = pcall(strip_tickets, handle)
  if not ok then
    handle:logErr("authproxy callback ticket filter failed: " .. tostring(err))
    handle:respond({{[":status"] = "500"}}, "sign-in callback filter failed")
  end
end
"""


def keep_on_proxy_routes(cookies: SessionCookies) -> dict[str, object]:
    """``typed_per_filter_config`` entry for oauth2-proxy's routes: the callback script instead of
    the keep script (no deletion dropped there; callbacks without the session ticket)."""
    return {KEEP_FILTER_NAME: {"@type": LUA_PER_ROUTE_TYPE,
                               "source_code": {"inline_string": callback_lua_source(cookies)}}}
