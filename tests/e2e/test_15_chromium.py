"""A real browser, in each mode: headless Debian Chromium (driven by Playwright) signs in through
the login form, lands on the app, opens the group-restricted app and signs out. Screenshots go to
the run's log directory, and to docs/images/ when AUTHPROXY_UPDATE_SCREENSHOTS=1 (how the
README's pictures are made)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authproxy_local import install
from authproxy_local.core import local_map
from authproxy_local.harness import Harness
from tests.e2e.conftest import CI

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def _spki_hash(cert_file: str) -> str:
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_chromium_signs_in_and_sees_the_app(live: Harness, record) -> None:
    try:
        exe = install.ensure("chromium")
    except install.InstallError as e:
        if CI:
            pytest.fail(f"CI=true and chromium is missing: {e}", pytrace=False)
        pytest.skip(f"chromium is not installed: {e}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:  # pragma: no cover
        pytest.fail(f"playwright is a dev dependency (requirements-dev.txt): {e}")

    out_dirs = [live.run_dir]
    if os.environ.get("AUTHPROXY_UPDATE_SCREENSHOTS") == "1" and live.render.mode == "extension-provider":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        out_dirs.append(DOCS_IMAGES)

    def shot(page, name: str) -> None:
        for d in out_dirs:
            page.screenshot(path=str(d / name), full_page=False)

    alice = live.users["alice"]
    args = [
        # Name resolution for the test hosts only, without touching the system.
        f"--host-resolver-rules={local_map.host_resolver_rules(live.public_hosts, live.gateway_ip)}",
        # Trust exactly the run's server keys (no system CA store change).
        "--ignore-certificate-errors-spki-list=" + ",".join(
            _spki_hash(f) for f in (live.endpoints.cert_file, live.endpoints.keycloak_cert_file) if f),
        "--no-sandbox",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(exe), headless=True, args=args)
        try:
            page = browser.new_context(viewport={"width": 1100, "height": 760}).new_page()
            page.goto(live.app_url("echo", "/hello"))
            page.wait_for_selector("#kc-form-login", timeout=30_000)
            assert page.url.startswith(f"{live.issuer}/protocol/openid-connect/auth")
            page.fill("#username", alice.username)
            page.fill("#password", alice.password)
            shot(page, "e2e-1-keycloak-login.png")
            page.click("#kc-login")
            page.wait_for_url(live.app_url("echo", "/hello"), timeout=30_000)
            body = page.inner_text("body")
            doc = json.loads(body)
            assert doc["headers"]["x-auth-request-preferred-username"] == "alice"
            shot(page, "e2e-2-app-signed-in.png")
            admin = next(a for a in live.config.apps if a.groups)
            resp = page.goto(live.app_url(admin.name))
            assert resp is not None and resp.status == 200
            page.goto(f"{live.auth_url}/oauth2/sign_out?rd={live.app_url('echo')}")
            page.wait_for_selector("#kc-form-login", timeout=30_000)
            shot(page, "e2e-3-signed-out.png")
        finally:
            browser.close()
    record("chromium_screenshots", [str(d) for d in out_dirs])
