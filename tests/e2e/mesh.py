"""Calls straight to an app's sidecar, as another workload in the mesh would make them: over Istio
mTLS with a workload identity's SPIFFE certificate (the gateway's, an app's), or in plain text.
The sidecars run istiod's inbound config with STRICT mTLS; the harness's mesh CA plays istiod's."""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass, field

from authproxy_local.harness import Harness

ISTIO_ALPN = ["istio-peer-exchange", "istio"]
"""What an Istio client offers on a mesh mTLS connection (istiod's outbound clusters); a sidecar
in PERMISSIVE mode tells Istio mTLS from an app's own TLS by it."""


@dataclass
class Answer:
    """What a direct call got: a status and body, or ``refused`` (no HTTP answer at all)."""

    status: int = 0
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    refused: str = ""


def call_sidecar(h: Harness, app: str, path: str = "/", token: str | None = None,
                 identity: str | None = "gateway", pod: str | None = None) -> Answer:
    """GET ``path`` at ``app``'s sidecar (or the sidecar of ``pod``) with an ``Authorization:
    Bearer`` ``token``; ``identity``: the workload certificate presented (``gateway``, an app's
    service account), None for plain text."""
    ip, port = h.endpoints.pod_sidecars[pod] if pod else h.endpoints.sidecars[app]
    a = next(x for x in h.config.apps if x.name == app)
    headers = {"Host": f"{a.service.name}.{a.service.namespace}.svc.cluster.local:{a.service.port}"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn: http.client.HTTPConnection
    if identity is None:
        conn = http.client.HTTPConnection(ip, port, timeout=10)
    else:
        ctx = ssl.create_default_context(cafile=h.endpoints.mesh_ca_file)
        ctx.check_hostname = False  # workload certificates name SPIFFE URIs, not hosts
        cert, key = h.endpoints.identities[identity]
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(ISTIO_ALPN)
        conn = http.client.HTTPSConnection(ip, port, timeout=10, context=ctx)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return Answer(r.status, r.read().decode(errors="replace"),
                      {k.lower(): v for k, v in r.getheaders()})
    except (TimeoutError, OSError, http.client.HTTPException) as e:
        return Answer(refused=f"{type(e).__name__}: {e}")
    finally:
        conn.close()
