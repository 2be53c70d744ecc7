"""Signing in for the benchmark: a real login through Keycloak's form, like a browser (the one
form parser, :mod:`authproxy_local.keycloak.login`), and the session cookie it gets.

Imports: the standard library, requests, :mod:`authproxy_local.keycloak`, :mod:`.model`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from authproxy_local.keycloak.login import login_form as _keycloak_login_form

from .model import UPSTREAM_BODY, BenchError

BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) authproxy-bench",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
}




def login_form(page: str, base_url: str) -> tuple[str, dict[str, str]]:
    """(absolute action URL, fields) of Keycloak's login form, as a browser would submit it."""
    form = _keycloak_login_form(page, base_url)
    if form is None:
        raise BenchError(f"no Keycloak login form (kc-form-login) on {base_url}")
    return form.action, form.fields


def session_cookie_header(jar: Iterable[Any], cookie_name: str, host: str) -> str:
    """The Cookie header a browser sends to ``host`` for the session: the cookie itself or its
    ``_0``, ``_1`` ... parts when oauth2-proxy split a large one."""
    parts = []
    for c in jar:
        dom = (c.domain or "").lstrip(".")
        if (c.name == cookie_name or re.fullmatch(re.escape(cookie_name) + r"_\d+", c.name)) and (
                host == dom or host.endswith("." + dom)):
            parts.append((c.name, c.value))
    if not parts:
        raise BenchError(f"no {cookie_name} session cookie after sign-in")
    return "; ".join(f"{n}={v}" for n, v in sorted(parts))


def sign_in(ca_file: str, url: str, username: str, password: str) -> Any:
    """A requests.Session signed in through the real login form; the app's answer must be the
    bench upstream's."""
    import requests

    s = requests.Session()
    s.verify = ca_file
    s.trust_env = False
    s.headers.update(BROWSER_HEADERS)
    page = s.get(url, timeout=30)
    if not urlsplit(page.url).path.endswith("/protocol/openid-connect/auth"):
        raise BenchError(f"expected Keycloak's login page from {url}, got {page.status_code} {page.url}")
    action, fields = login_form(page.text, page.url)
    r = s.post(action, data={**fields, "username": username, "password": password}, timeout=30)
    if r.status_code != 200 or r.text != UPSTREAM_BODY:
        raise BenchError(f"sign-in as {username} ended with {r.status_code} at {r.url}")
    return s


