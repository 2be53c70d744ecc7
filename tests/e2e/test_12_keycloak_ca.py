"""A private Keycloak CA reaches oauth2-proxy through its Deployment: the stack's
``keycloak.caCertificate`` (the run's private CA) is in the ConfigMap `pulumi up` created, the pod
mounts it and ``--provider-ca-file`` names it. The run's oauth2-proxy gets exactly that (no other
trust store), so every sign-in of the suite goes through the mount; the same command without the
flag is refused by Keycloak's TLS."""

from __future__ import annotations

import subprocess
from pathlib import Path

from authproxy_local.core.processes import free_port
from authproxy_local.harness import Harness
from components.oauth2_proxy import KEYCLOAK_CA_DIR, KEYCLOAK_CA_FILE, KEYCLOAK_CA_KEY

FLAG = "--provider-ca-file="


def test_oauth2_proxy_trusts_keycloak_only_through_the_ca_its_deployment_mounts(live: Harness) -> None:
    ca = Path(live.ca_file).read_text()
    cmd, env = live.oauth2_proxy_command()
    other_trust = sorted({"SSL_CERT_FILE", "SSL_CERT_DIR"} & set(env))  # (env holds secrets: not shown)
    assert other_trust == [], "oauth2-proxy gets no other trust store"
    flags = [a for a in cmd if a.startswith(FLAG)]
    assert len(flags) == 1, "--provider-ca-file names the mounted CA"
    flag = flags[0]
    local = Path(flag[len(FLAG):])
    assert local.read_text() == ca and local.name == Path(KEYCLOAK_CA_FILE).name

    mounts = live.oauth2_proxy_configmaps()
    assert set(mounts) == {KEYCLOAK_CA_DIR}, mounts
    _, data = mounts[KEYCLOAK_CA_DIR]
    assert data == {KEYCLOAK_CA_KEY: ca}, "the ConfigMap holds the stack's keycloak.caCertificate"

    # The same command without the mounted CA: Keycloak's discovery fails its TLS check and
    # oauth2-proxy does not start.
    ip = live.gateway_ip
    bare = [a for a in cmd if not a.startswith(FLAG) and not a.startswith(("--http-address=", "--metrics-address="))]
    bare += [f"--http-address={ip}:{free_port(ip)}", f"--metrics-address={ip}:{free_port(ip)}"]
    proc = subprocess.run(bare, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert "certificate signed by unknown authority" in out, out[-2000:]
