"""HTML forms of a page, parsed as a browser submits them: the one login-form parser of the e2e
tests' scripted browser (tests/e2e/browser.py) and the bench's sign-in.

Imports: the standard library only.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin

LOGIN_FORM_ID = "kc-form-login"
"""The id of Keycloak's username/password form."""


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str]
    id: str = ""


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._cur: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._cur = Form(html.unescape(a.get("action", "")), a.get("method", "get").lower(), {}, a.get("id", ""))
            self.forms.append(self._cur)
        elif tag in ("input", "button") and self._cur is not None and a.get("name"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self._cur.fields.setdefault(a["name"], a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._cur = None


def parse_forms(page: str, base_url: str) -> list[Form]:
    """Every form of ``page`` with its absolute action URL and the fields a browser would send
    (unchecked boxes left out)."""
    p = _FormParser()
    p.feed(page)
    for f in p.forms:
        f.action = urljoin(base_url, f.action) if f.action else base_url
    return p.forms


def login_form(page: str, base_url: str) -> Form | None:
    """Keycloak's login form on ``page``, or None."""
    return next((f for f in parse_forms(page, base_url) if f.id == LOGIN_FORM_ID), None)
