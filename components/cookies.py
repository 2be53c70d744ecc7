"""oauth2-proxy's cookies, and the gateway filter that keeps them away from the apps.

One definition (:class:`SessionCookies`) read by oauth2-proxy's flags (components/proxy_settings.py:
``--cookie-name``, ``--cookie-csrf-per-request``), by the gateway's cookie filter
(components/authz.py) and by the benchmark. For ``--cookie-name=N`` oauth2-proxy v7 sets
(pkg/sessions/cookie/session_store.go, pkg/cookies/csrf.go):

* ``N``: the session (a ticket into Redis here);
* ``N_0``, ``N_1``, ...: the same session split over several cookies when it exceeds 4 KiB
  (cookie session store, or a very long ticket);
* ``N_csrf`` (fixed CSRF cookie) or, with ``--cookie-csrf-per-request``, ``N_<8 characters of the
  hashed OAuth state>_csrf``: the sign-in's CSRF cookie (oauth2-proxy's own clean-up treats every
  ``N_*_csrf`` as one).

**Why strip them.** The browser sends every cookie of the cookie domain (``.domain``) to every
app on it. An app that received ``N`` (compromised, or merely logging headers) could replay it
against any other protected app and act as the user until the session ends, defeating the per-app
group checks. The apps need none of these cookies: the gateway hands them the user's identity as
a verified ID token (``Authorization``) and ``X-Auth-Request-*`` headers.

**How.** Envoy has no native filter that removes one cookie from the ``Cookie`` header (header
mutations work on whole headers), so the gateway runs Envoy's Lua filter, which Istio's proxy and
upstream Envoy both ship: :func:`lua_source` generates the script. It runs *after* ext_authz
(oauth2-proxy must still see the cookies) and before the router, on every route except those that
go to oauth2-proxy (``/oauth2/*`` on app hosts, the auth host), where it is switched off per route.
It keeps every other cookie byte for byte (only the removed ``name=value`` pairs and their
separator go), drops the ``Cookie`` header when nothing is left, leaves the route choice alone
(``clear_route_cache: false``: the route ext_authz checked is the route taken) and fails closed:
a script error answers 500 instead of forwarding the cookie.

**Responses too.** An app's response could *set* or *clear* oauth2-proxy's cookies for the parent
domain (``Set-Cookie: _authproxy=<attacker's session>; Domain=.example.com``: session fixation,
login CSRF; or ``Max-Age=0``: sign-out). On the same routes the script's ``envoy_on_response``
removes every ``Set-Cookie`` whose cookie name (:func:`set_cookie_name`, the browser's parse: the
text before the first ``=`` of the part before the first ``;``, the whole part when it has no
``=``) oauth2-proxy owns; other ``Set-Cookie`` headers pass unchanged. oauth2-proxy's own
refreshed session cookie is added by ext_authz *after* this filter (an earlier filter encodes
later), and its routes (``/oauth2/*``, the auth host) have the filter switched off. Only responses
to requests this filter passed on (a dynamic-metadata mark set on the request side) are filtered:
Envoy runs a local reply of an earlier filter through this one too, and ext_authz's redirect to
sign-in carries oauth2-proxy's CSRF cookie. A script error on a response removes every
``Set-Cookie`` of that response (fail closed: a response cannot be refused any more at that
point).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

LUA_FILTER_NAME = "authproxy.session_cookie_strip"
"""The HTTP filter's name in the gateway's chain (per-route configs are keyed by it)."""
LUA_TYPE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
LUA_PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute"
CSRF_SUFFIX = "_csrf"
COOKIE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""The cookie names the stack accepts (`session.cookieName`): safe to quote in the Lua script."""


@dataclass(frozen=True)
class SessionCookies:
    """The cookies oauth2-proxy sets for one ``--cookie-name``."""

    name: str
    csrf_per_request: bool = True
    """``--cookie-csrf-per-request``: one CSRF cookie per sign-in attempt (parallel tabs)."""

    def __post_init__(self) -> None:
        if not COOKIE_NAME.match(self.name):
            raise ValueError(f"{self.name!r} is not a cookie name this stack uses "
                             "(letters, digits, '_' or '-')")

    def is_session(self, cookie: str) -> bool:
        """The session cookie or one of its split parts."""
        prefix = self.name + "_"
        return cookie == self.name or (
            cookie.startswith(prefix) and cookie[len(prefix):].isdigit()
            and cookie[len(prefix):].isascii()
        )

    def is_csrf(self, cookie: str) -> bool:
        """A CSRF cookie of a sign-in (fixed or per request)."""
        # oauth2-proxy's own test (csrf.go ClearExtraCsrfCookies): prefix "N_" and suffix "_csrf",
        # which also matches the fixed name "N_csrf".
        return cookie.startswith(self.name + "_") and cookie.endswith(CSRF_SUFFIX)

    def owns(self, cookie: str) -> bool:
        """Whether a cookie name is one of oauth2-proxy's (what the gateway strips)."""
        return self.is_session(cookie) or self.is_csrf(cookie)


def set_cookie_name(value: str) -> str:
    """The name of the cookie a ``Set-Cookie`` value sets, as browsers parse it (RFC 6265bis
    5.6): the cookie-pair is the text before the first ``;``; its name is the text before the
    first ``=``, trimmed; a pair without ``=`` is a nameless cookie whose value is the whole pair
    (sent back as the bare string, which oauth2-proxy's Go parser reads as a cookie of that name),
    so that string counts as the name."""
    pair = value.split(";", 1)[0]
    name, eq, _ = pair.partition("=")
    return name.strip(" \t") if eq else pair.strip(" \t")


def _lua_string(value: str) -> str:
    # JSON string syntax is valid Lua for the ASCII names SessionCookies admits.
    return json.dumps(value)


def lua_source(cookies: SessionCookies) -> str:
    """The Lua script of the gateway's cookie filter: the same rules as
    :meth:`SessionCookies.owns`, written out for Envoy."""
    return f"""\
-- authproxy: remove oauth2-proxy's cookies before the request goes to an app
-- (components/cookies.py). Generated for --cookie-name={cookies.name}.
local NAME = {_lua_string(cookies.name)}
local PREFIX = NAME .. "_"
local CSRF = {_lua_string(CSRF_SUFFIX)}

local function owned(name)
  if name == NAME then return true end
  if name:sub(1, #PREFIX) ~= PREFIX then return false end
  if name:sub(#PREFIX + 1):match("^%d+$") then return true end
  return name:sub(-#CSRF) == CSRF
end

-- One Cookie header value: drop owned name=value pairs, keep every other byte.
local function strip(value)
  local kept, removed = {{}}, false
  for segment in (value .. ";"):gmatch("([^;]*);") do
    local name = segment:match("^%s*([^=]-)%s*=") or segment:match("^%s*(.-)%s*$")
    if owned(name) then
      removed = true
    else
      kept[#kept + 1] = segment
    end
  end
  if not removed then return value, false end
  return (table.concat(kept, ";"):gsub("^%s+", "")), true
end

local function strip_all(handle)
  local headers = handle:headers()
  local n = headers:getNumValues("cookie")
  if n == 0 then return end
  local values, changed = {{}}, false
  for i = 0, n - 1 do
    local v, c = strip(headers:getAtIndex("cookie", i))
    values[#values + 1] = v
    changed = changed or c
  end
  if not changed then return end
  headers:remove("cookie")
  for _, v in ipairs(values) do
    if not v:match("^[%s;]*$") then headers:add("cookie", v) end
  end
end

-- Marks a request this filter saw on its way to the app: only their responses come from an app.
-- (A local reply of an earlier filter, ext_authz's redirect with oauth2-proxy's CSRF cookie,
-- passes this filter's response side too, and must keep its Set-Cookie.)
local MARK_NS = "authproxy.session_cookie_strip"

function envoy_on_request(handle)
  local ok, err = pcall(strip_all, handle)
  if not ok then
    handle:logErr("authproxy session cookie filter failed: " .. tostring(err))
    handle:respond({{[":status"] = "500"}}, "session cookie filter failed")
    return
  end
  handle:streamInfo():dynamicMetadata():set(MARK_NS, "to_app", true)
end

-- The cookie a Set-Cookie value sets (components/cookies.py set_cookie_name).
local function set_cookie_name(value)
  local pair = value:match("^([^;]*)")
  local name = pair:match("^[ \\t]*([^=]-)[ \\t]*=")
  if name then return name end
  return (pair:match("^[ \\t]*(.-)[ \\t]*$"))
end

-- Drop every Set-Cookie of the app's response that sets or clears one of oauth2-proxy's cookies.
local function strip_set_cookies(handle)
  local headers = handle:headers()
  local n = headers:getNumValues("set-cookie")
  if n == 0 then return end
  local kept, changed = {{}}, false
  for i = 0, n - 1 do
    local v = headers:getAtIndex("set-cookie", i)
    if owned(set_cookie_name(v)) then
      changed = true
    else
      kept[#kept + 1] = v
    end
  end
  if not changed then return end
  headers:remove("set-cookie")
  for _, v in ipairs(kept) do headers:add("set-cookie", v) end
end

local function to_app(handle)
  local md = handle:streamInfo():dynamicMetadata():get(MARK_NS)
  return md ~= nil and md["to_app"] == true
end

function envoy_on_response(handle)
  if not to_app(handle) then return end
  local ok, err = pcall(strip_set_cookies, handle)
  if not ok then
    handle:logErr("authproxy set-cookie filter failed: " .. tostring(err))
    handle:headers():remove("set-cookie")
  end
end
"""


def lua_filter(cookies: SessionCookies) -> dict[str, object]:
    """The gateway HTTP filter (Envoy ``Lua`` typed config) that strips oauth2-proxy's cookies."""
    return {
        "name": LUA_FILTER_NAME,
        "typed_config": {
            "@type": LUA_TYPE,
            "default_source_code": {"inline_string": lua_source(cookies)},
            "stat_prefix": "authproxy_cookie_strip",
            "clear_route_cache": False,
        },
    }


def lua_disabled_per_route() -> dict[str, object]:
    """``typed_per_filter_config`` entry switching the cookie filter off on one route."""
    return {LUA_FILTER_NAME: {"@type": LUA_PER_ROUTE_TYPE, "disabled": True}}
