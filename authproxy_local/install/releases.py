"""Official release downloads, verified: the engine's tools and the redis-ha chart.

Where the machine reaches the projects' release downloads (a laptop, GitHub Actions), the pulumi
CLI (with its language hosts), the provider plugins, kube-apiserver and etcd come from the
projects' own release artifacts, each checked against the checksum file the project publishes
beside it (goreleaser's ``<project>_<version>_checksums.txt``, Kubernetes' ``<binary>.sha256``,
etcd's ``SHA256SUMS``); the digest is kept in the install's stamp. Where the downloads are not
reachable (machines that reach only package registries), :mod:`.engine_tools` builds the same
tools from source. With release binaries the versions are the SDK pins, so no plugin/SDK skew.

The redis-ha chart the local stacks install comes from a local mirror (``../shared/charts`` beside
the checkout, or ``$AUTHPROXY_CHARTS``) or from its GitHub release; either way its contents must
match :data:`REDIS_HA_CHART`'s pinned digest (of the files ``helm package`` keeps, so a mirror
packaged from the same source folder and the release archive agree).

Imports: the standard library, :mod:`authproxy_local.core` and :mod:`.base`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import pathlib
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass

from authproxy_local.core.cache import cache_dir
from authproxy_local.core.paths import REPO

from .base import ChecksumError, Component, InstallError, log

MAX_DOWNLOAD = 512 << 20
"""Bytes one download may have (the pulumi CLI archive is about 150 MB)."""


@dataclass(frozen=True)
class Release:
    """One release artifact and the checksum file that lists it."""

    component: str
    version: str
    url: str
    """The artifact (an archive, or the executable itself)."""
    checksums_url: str
    asset: str
    """The artifact's name in the checksum file."""
    executable: str
    """The executable's path inside the archive; empty when the download is the executable."""


def releases(versions: dict[str, str], base: str = "https://github.com",
             k8s_base: str = "https://dl.k8s.io") -> dict[str, Release]:
    """The release artifacts for linux/amd64 at the pinned versions (``base`` for tests)."""
    out: dict[str, Release] = {}
    v = versions["pulumi-sdk"]
    out["pulumi"] = Release(
        "pulumi", v, f"{base}/pulumi/pulumi/releases/download/v{v}/pulumi-v{v}-linux-x64.tar.gz",
        f"{base}/pulumi/pulumi/releases/download/v{v}/pulumi-{v}-checksums.txt",
        f"pulumi-v{v}-linux-x64.tar.gz", "pulumi/pulumi")
    for name in ("random", "keycloak", "kubernetes"):
        v = versions[f"pulumi-{name}-sdk"]
        asset = f"pulumi-resource-{name}-v{v}-linux-amd64.tar.gz"
        rel = f"{base}/pulumi/pulumi-{name}/releases/download/v{v}"
        out[f"pulumi-{name}"] = Release(f"pulumi-{name}", v, f"{rel}/{asset}",
                                        f"{rel}/pulumi-{name}_{v}_checksums.txt", asset,
                                        f"pulumi-resource-{name}")
    v = versions["kubernetes"]
    url = f"{k8s_base}/release/v{v}/bin/linux/amd64/kube-apiserver"
    out["kube-apiserver"] = Release("kube-apiserver", v, url, url + ".sha256", "kube-apiserver", "")
    v = versions["etcd"]
    rel = f"{base}/etcd-io/etcd/releases/download/v{v}"
    asset = f"etcd-v{v}-linux-amd64.tar.gz"
    out["etcd"] = Release("etcd", v, f"{rel}/{asset}", f"{rel}/SHA256SUMS", asset,
                          f"etcd-v{v}-linux-amd64/etcd")
    return out


def fetch(url: str, dest: pathlib.Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` (https only, bounded size)."""
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise InstallError(f"refusing to download {url}: not https")
    req = urllib.request.Request(url, headers={"User-Agent": "authproxy-installer"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest, "wb") as out:
            size = 0
            while chunk := resp.read(1 << 20):
                size += len(chunk)
                if size > MAX_DOWNLOAD:
                    raise InstallError(f"{url} is larger than {MAX_DOWNLOAD >> 20} MiB")
                out.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        dest.unlink(missing_ok=True)
        raise InstallError(f"cannot download {url}: {getattr(e, 'reason', e)}") from None


def reachable(url: str, timeout: float = 8.0) -> bool:
    """Whether ``url`` answers (the release host can be used at all)."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fetch(url, pathlib.Path(tmp) / "probe", timeout)
        return True
    except InstallError:
        return False


def expected_digest(checksums: str, asset: str) -> str:
    """The SHA-256 a checksum file gives for ``asset`` (``<hex>  <name>`` lines, or a bare hex
    digest as in Kubernetes' ``.sha256`` files)."""
    lines = [ln.split() for ln in checksums.splitlines() if ln.strip()]
    if len(lines) == 1 and len(lines[0]) == 1:
        return lines[0][0].lower()
    for parts in lines:
        if len(parts) >= 2 and parts[-1].lstrip("*") == asset:
            return parts[0].lower()
    raise ChecksumError(f"the checksum file lists no {asset}")


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _safe_extract(archive: pathlib.Path, dest: pathlib.Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")


def install_release(rel: Release, dest: pathlib.Path, timeout: float = 300.0) -> tuple[pathlib.Path, str]:
    """Download ``rel`` into ``dest`` (replaced), verify it, unpack it; (executable, sha256)."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        work = pathlib.Path(tmp)
        fetch(rel.checksums_url, work / "checksums", timeout=60)
        want = expected_digest((work / "checksums").read_text(), rel.asset)
        log(f"downloading {rel.url}")
        fetch(rel.url, work / rel.asset, timeout=timeout)
        got = sha256(work / rel.asset)
        if got != want:
            raise ChecksumError(f"{rel.url}: sha256 {got}, the project's checksum file says {want}")
        out = work / "out"
        out.mkdir()
        if rel.executable:
            _safe_extract(work / rel.asset, out)
            exe = out / rel.executable
        else:
            exe = out / rel.asset
            shutil.move(str(work / rel.asset), exe)
        if not exe.is_file():
            raise InstallError(f"{rel.url} has no {rel.executable}")
        exe.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(out), dest)
    return dest / (rel.executable or rel.asset), got


# --------------------------------------------------------------------------------------------
# The redis-ha chart
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    name: str
    version: str
    url: str
    content_sha256: str
    """:func:`chart_digest` of the chart: pinned, so a mirror and the release must agree."""

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.tgz"


REDIS_HA_CHART = Chart(
    "redis-ha", "4.39.0",
    "https://github.com/DandyDeveloper/charts/releases/download/redis-ha-4.39.0/redis-ha-4.39.0.tgz",
    "2bf0d9f276727fb2c13a9303ab066f2372d4577f1d8b25f7467b0293b51aaab7",
)


def _ignored(path: str, patterns: list[str]) -> bool:
    """``.helmignore`` matching for the patterns charts use (globs, `dir/`, no negation)."""
    parts = path.split("/")
    for pat in patterns:
        if pat.endswith("/"):
            if pat.rstrip("/") in parts[:-1]:
                return True
        elif fnmatch.fnmatch(parts[-1], pat) or fnmatch.fnmatch(path, pat):
            return True
    return False


def chart_digest(archive: pathlib.Path) -> str:
    """SHA-256 over the chart's files that ``helm package`` keeps (its ``.helmignore`` applied),
    by path and content: independent of tar and gzip details."""
    with tarfile.open(archive) as tar:
        files: dict[str, bytes] = {}
        for m in tar.getmembers():
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                files[m.name.split("/", 1)[1] if "/" in m.name else m.name] = f.read()
    patterns = [ln.strip() for ln in files.get(".helmignore", b"").decode().splitlines()
                if ln.strip() and not ln.startswith("#")]
    h = hashlib.sha256()
    for path in sorted(files):
        if path == ".helmignore" or _ignored(path, patterns):
            continue
        h.update(path.encode() + b"\0" + hashlib.sha256(files[path]).hexdigest().encode() + b"\n")
    return h.hexdigest()


def chart_mirrors(checkout: pathlib.Path, environ: dict[str, str] | None = None) -> list[pathlib.Path]:
    env = os.environ if environ is None else environ
    dirs = [pathlib.Path(env["AUTHPROXY_CHARTS"])] if env.get("AUTHPROXY_CHARTS") else []
    return [*dirs, checkout.parent / "shared" / "charts"]


def ensure_chart(chart: Chart, cache: pathlib.Path, checkout: pathlib.Path,
                 environ: dict[str, str] | None = None, url: str | None = None) -> pathlib.Path:
    """The chart archive in the cache: from a mirror, else downloaded; verified either way."""
    target = cache / "charts" / chart.filename
    if target.is_file() and chart_digest(target) == chart.content_sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for mirror in chart_mirrors(checkout, environ):
        copy = mirror / chart.filename
        if copy.is_file():
            got = chart_digest(copy)
            if got != chart.content_sha256:
                raise ChecksumError(f"{copy} is not {chart.name} {chart.version} (content digest {got}, "
                                    f"pinned {chart.content_sha256})")
            shutil.copyfile(copy, target)
            return target
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        part = pathlib.Path(tmp) / chart.filename
        try:
            fetch(url or chart.url, part)
        except InstallError as e:
            raise InstallError(
                f"the {chart.name} {chart.version} chart is in no local mirror "
                f"({', '.join(str(m) for m in chart_mirrors(checkout, environ))}) and {e}; download "
                f"{chart.url} into one of them") from None
        got = chart_digest(part)
        if got != chart.content_sha256:
            raise ChecksumError(f"{url or chart.url}: content digest {got}, pinned {chart.content_sha256}")
        shutil.move(str(part), target)
    return target


def _tgz(files: dict[str, bytes], root: str) -> bytes:
    """A gzipped tar of ``files`` under ``root/`` (tests build release-like archives with it)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{root}/{name}" if root else name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _find_chart() -> pathlib.Path | None:
    target = cache_dir() / "charts" / REDIS_HA_CHART.filename
    if target.is_file() and chart_digest(target) == REDIS_HA_CHART.content_sha256:
        return target
    return None


REGISTRY: dict[str, Component] = {
    "redis-ha-chart": Component(
        "redis-ha-chart", _find_chart, lambda: ensure_chart(REDIS_HA_CHART, cache_dir(), REPO)),
}
