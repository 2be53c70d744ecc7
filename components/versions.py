"""Release pins that the stack and the local harness must agree on (one definition each).

``OAUTH2_PROXY_VERSION`` is the tag of the image the stack deploys by default (``proxy.image``)
*and* the release the harness builds from source and every live test runs
(authproxy_local's installer reads it), so what is proven is what is deployed. Every flag in
components/proxy_settings.py is checked against this release's ``pkg/apis/options``.
"""

from __future__ import annotations

OAUTH2_PROXY_REPOSITORY = "quay.io/oauth2-proxy/oauth2-proxy"
OAUTH2_PROXY_VERSION = "v7.15.6"
"""The newest v7.15.x release: the one the Go module proxy serves and quay.io tags."""
