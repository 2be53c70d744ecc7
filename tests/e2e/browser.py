"""A scripted browser for the e2e tests: ``requests`` with manual redirects, a cookie jar, and a
real HTML form post to Keycloak's login page (the form and its action are parsed from the page by
:mod:`authproxy_local.keycloak.login`, the parser the bench signs in with too)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from authproxy_local.keycloak.login import LOGIN_FORM_ID, parse_forms

# A browser's User-Agent and Accept: oauth2-proxy decides between a sign-in redirect and a 401
# partly on Accept (browsers ask for text/html).
BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) authproxy-e2e",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
}


@dataclass
class Hop:
    method: str
    url: str
    status: int
    location: str = ""


@dataclass
class Browser:
    """One user agent: cookie jar + CA; every request is one hop, redirects followed by hand."""

    ca_file: str
    session: requests.Session = field(default_factory=requests.Session)
    history: list[Hop] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.session.verify = self.ca_file
        self.session.headers.update(BROWSER_HEADERS)
        self.session.trust_env = False

    def request(self, method: str, url: str, **kw: Any) -> requests.Response:
        kw.setdefault("allow_redirects", False)
        kw.setdefault("timeout", 30)
        r = self.session.request(method, url, **kw)
        self.history.append(Hop(method, url, r.status_code, r.headers.get("Location", "")))
        return r

    def get(self, url: str, **kw: Any) -> requests.Response:
        return self.request("GET", url, **kw)

    def follow(self, r: requests.Response, max_hops: int = 15) -> requests.Response:
        """Follow redirects from response ``r`` (GET, like a browser after 302/303)."""
        for _ in range(max_hops):
            if r.status_code not in (301, 302, 303, 307, 308):
                return r
            r = self.get(urljoin(r.url, r.headers["Location"]))
        raise AssertionError(f"more than {max_hops} redirects: {[h.url for h in self.history[-max_hops:]]}")

    def open(self, url: str) -> requests.Response:
        return self.follow(self.get(url))

    def submit(self, page: requests.Response, values: dict[str, str], form_id: str | None = None) -> requests.Response:
        """Fill and submit a form of ``page`` (the first, or the one with ``form_id``)."""
        forms = parse_forms(page.text, page.url)
        if form_id:
            forms = [f for f in forms if f.id == form_id]
        assert forms, f"no form{' ' + form_id if form_id else ''} on {page.url}"
        f = forms[0]
        data = {**f.fields, **values}
        if f.method == "post":
            return self.request("POST", f.action, data=data)
        return self.request("GET", f.action, params=data)

    def login(self, start_url: str, username: str, password: str) -> requests.Response:
        """Open ``start_url``, expect Keycloak's login form, sign in, follow back; returns the last
        response."""
        page = self.open(start_url)
        assert urlsplit(page.url).path.endswith("/protocol/openid-connect/auth"), (
            f"expected Keycloak's login page, got {page.status_code} {page.url}")
        return self.follow(self.submit(page, {"username": username, "password": password}, LOGIN_FORM_ID))

    def cookie(self, name: str) -> str | None:
        for c in self.session.cookies:
            if c.name == name:
                return c.value
        return None
