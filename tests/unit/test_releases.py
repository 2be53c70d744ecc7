"""Release downloads and the redis-ha chart, against a release host served on loopback: the
artifact is verified against the project's checksum file (a tampered one fails), unpacked, and
the chart comes from a mirror or the download with its pinned content digest, or the error names
the download. (The real release hosts are not reachable from the test machines.)"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from authproxy_local.core.paths import REDIS_CHART as MIRROR_CHART
from authproxy_local.install import releases as rl
from authproxy_local.install.base import ChecksumError, InstallError

NO_MIRROR = not MIRROR_CHART.is_file() and not os.environ.get("CI")
"""Without ../shared/charts a laptop skips the mirror tests; CI (CI=true) has the mirror and fails
without it."""


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static file server on loopback over ``tmp_path/www`` (a release host stand-in)."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(www), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", www
    finally:
        server.shutdown()


VERSIONS = {"pulumi-sdk": "3.272.0", "pulumi-random-sdk": "4.21.4", "pulumi-keycloak-sdk": "6.14.1",
            "pulumi-kubernetes-sdk": "4.34.2", "kubernetes": "1.35.4", "etcd": "3.6.16"}


def publish(www: Path, rel: rl.Release, base: str, payload: bytes, digest: str | None = None) -> None:
    """Lay out ``rel``'s artifact and checksum file under ``www`` as the project publishes them."""
    path = www / rel.url[len(base) + 1:]
    path.parent.mkdir(parents=True, exist_ok=True)
    if rel.executable:
        path.write_bytes(rl._tgz({rel.executable: payload}, ""))
    else:
        path.write_bytes(payload)
    sums = www / rel.checksums_url[len(base) + 1:]
    sums.parent.mkdir(parents=True, exist_ok=True)
    d = digest or hashlib.sha256(path.read_bytes()).hexdigest()
    sums.write_text(d + "\n" if rel.component == "kube-apiserver" else
                    f"{'0' * 64}  other-asset.tar.gz\n{d}  {rel.asset}\n")


def test_the_release_urls_are_the_projects_own() -> None:
    r = rl.releases(VERSIONS)
    assert r["pulumi"].url == ("https://github.com/pulumi/pulumi/releases/download/v3.272.0/"
                               "pulumi-v3.272.0-linux-x64.tar.gz")
    assert r["pulumi-kubernetes"].checksums_url.endswith(
        "/pulumi/pulumi-kubernetes/releases/download/v4.34.2/pulumi-kubernetes_4.34.2_checksums.txt")
    assert r["kube-apiserver"].url == "https://dl.k8s.io/release/v1.35.4/bin/linux/amd64/kube-apiserver"
    assert r["etcd"].executable == "etcd-v3.6.16-linux-amd64/etcd"


@pytest.mark.parametrize("component", ["pulumi", "pulumi-kubernetes", "kube-apiserver", "etcd"])
def test_a_verified_release_is_installed(host: tuple[str, Path], tmp_path: Path, component: str) -> None:
    base, www = host
    rel = rl.releases(VERSIONS, base=base, k8s_base=base)[component]
    publish(www, rel, base, b"#!/bin/sh\necho " + component.encode() + b"\n")
    exe, digest = rl.install_release(rel, tmp_path / "dest")
    assert exe.read_bytes().startswith(b"#!/bin/sh") and exe.stat().st_mode & 0o111
    assert len(digest) == 64


def test_a_tampered_release_is_refused(host: tuple[str, Path], tmp_path: Path) -> None:
    base, www = host
    rel = rl.releases(VERSIONS, base=base, k8s_base=base)["etcd"]
    publish(www, rel, base, b"etcd", digest="ab" * 32)
    with pytest.raises(ChecksumError, match=r"checksum file says abab"):
        rl.install_release(rel, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_an_asset_the_checksum_file_does_not_list_is_refused() -> None:
    with pytest.raises(ChecksumError, match=r"lists no x\.tgz"):
        rl.expected_digest(f"{'1' * 64}  y.tgz\n", "x.tgz")


def test_an_unreachable_host_is_reported() -> None:
    assert not rl.reachable("http://127.0.0.1:9/nothing", timeout=2)


# ------------------------------------------------------------------ the redis-ha chart
def helm_packaged(mirror: Path) -> bytes:
    """The chart as `helm package` writes it: the files .helmignore leaves, other tar details."""
    with tarfile.open(mirror) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore[union-attr]
                 if m.isfile() and "/ci/" not in m.name and not m.name.endswith(".gotmpl")}
    return rl._tgz({k.split("/", 1)[1]: v for k, v in files.items()}, "redis-ha")


@pytest.mark.skipif(NO_MIRROR, reason="no ../shared/charts mirror beside the checkout (not CI)")
def test_the_pinned_digest_is_the_mirrors_and_the_packaged_charts() -> None:
    assert rl.chart_digest(MIRROR_CHART) == rl.REDIS_HA_CHART.content_sha256


@pytest.mark.skipif(NO_MIRROR, reason="no ../shared/charts mirror beside the checkout (not CI)")
def test_the_chart_comes_from_the_mirror_else_the_download(host: tuple[str, Path], tmp_path: Path) -> None:
    base, www = host
    chart = rl.REDIS_HA_CHART
    checkout = tmp_path / "clone" / "authproxy"
    checkout.mkdir(parents=True)
    # a fresh clone with no ../shared and no download: the error names the download
    with pytest.raises(InstallError, match=re.escape(
            "download https://github.com/DandyDeveloper/charts/releases/download/redis-ha-4.39.0/"
            "redis-ha-4.39.0.tgz")):
        rl.ensure_chart(chart, tmp_path / "cache", checkout, {}, url=f"{base}/missing.tgz")
    # the release (as helm packages it) served: downloaded and verified
    (www / "redis-ha-4.39.0.tgz").write_bytes(helm_packaged(MIRROR_CHART))
    got = rl.ensure_chart(chart, tmp_path / "cache", checkout, {}, url=f"{base}/redis-ha-4.39.0.tgz")
    assert rl.chart_digest(got) == chart.content_sha256
    # a mirror beside the checkout is used as it is
    mirror = tmp_path / "clone" / "shared" / "charts"
    mirror.mkdir(parents=True)
    (mirror / chart.filename).write_bytes(MIRROR_CHART.read_bytes())
    assert rl.ensure_chart(chart, tmp_path / "cache2", checkout, {}).read_bytes() == MIRROR_CHART.read_bytes()
    # a tampered chart is refused, wherever it comes from
    (www / "bad.tgz").write_bytes(rl._tgz({"Chart.yaml": b"name: redis-ha\nversion: 4.39.0\n"}, "redis-ha"))
    with pytest.raises(ChecksumError):
        rl.ensure_chart(chart, tmp_path / "cache3", tmp_path / "elsewhere" / "x", {}, url=f"{base}/bad.tgz")
