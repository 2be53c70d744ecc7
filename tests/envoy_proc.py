"""Shared by the tests that run a real Envoy or Istio's translation offline: the Envoy binary
(installed, or a skip outside CI), one Envoy process on a bootstrap, and the loopback endpoints
the translation adapter maps istiod's config onto."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from authproxy_local import install
from authproxy_local.core import local_map

CI = os.environ.get("CI", "").lower() == "true"


def envoy_exe() -> Path:
    try:
        return install.ensure("envoy")
    except install.InstallError as e:
        if CI:
            pytest.fail(f"CI=true and envoy cannot be installed: {e}")
        pytest.skip(f"envoy is not installed and could not be installed: {e}")


@contextmanager
def running_envoy(bootstrap: dict[str, Any], directory: Path, base_id: int,
                  ready: Callable[[], object]) -> Iterator[None]:
    """Envoy on ``bootstrap`` until the block ends; ``ready()`` raising OSError means not yet."""
    path = directory / "envoy.json"
    path.write_text(json.dumps(bootstrap))
    proc = subprocess.Popen([str(envoy_exe()), "-c", str(path), "--base-id", str(base_id), "-l", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"envoy did not start: {proc.stderr and proc.stderr.read()}") from None
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def offline_endpoints(tmp: Path, render_result: Any, ip: str) -> local_map.LocalEndpoints:
    """Fixed loopback endpoints for translating a render offline (nothing listens on them), with
    the mesh's workload certificates, as the harness has them."""
    from authproxy_local.core.pki import make_tls, mesh_identities
    from authproxy_local.mesh.workloads import app_pods, identities

    cfg = render_result.config
    tls = make_tls(sorted({*(a.host for a in cfg.apps), cfg.auth_hostname}), tmp,
                   keycloak_host=cfg.keycloak.host)
    mesh_ca, ids = mesh_identities(tmp / "mesh", identities(cfg))
    pods = app_pods(cfg)
    pod_sidecars = {p.name: (ip, 15100 + i) for i, p in enumerate(pods) if p.sidecar}
    return local_map.LocalEndpoints(
        gateway_ip=ip, keycloak=(ip, 8080), oauth2_proxy=(ip, 4180), oauth2_proxy_metrics=(ip, 44180),
        redis=(ip, 6379), sidecars={a.name: pod_sidecars[f"{a.name}-harness"] for a in cfg.apps},
        apps={a.name: (ip, 16000 + i) for i, a in enumerate(cfg.apps)}, envoy_admin=(ip, 15999),
        pods={p.name: (ip, 16100 + i) for i, p in enumerate(pods)}, pod_sidecars=pod_sidecars,
        mesh_ca_file=mesh_ca, identities=ids,
        ca_file=tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file,
        keycloak_cert_file=tls.keycloak_cert_file, keycloak_key_file=tls.keycloak_key_file)
