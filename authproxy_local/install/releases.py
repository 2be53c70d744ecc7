"""Official release downloads, verified: the engine's tools, oauth2-proxy and the redis-ha chart.

Where the machine reaches the projects' release downloads (a laptop, GitHub Actions), the pulumi
CLI (with its language hosts), the provider plugins, kube-apiserver, kube-controller-manager,
kube-scheduler, etcd and oauth2-proxy come
from the projects' own release artifacts, each checked against the checksum file the project
publishes beside it (goreleaser's ``<project>_<version>_checksums.txt``, Pulumi's
``pulumi-<version>-checksums.txt``, Kubernetes' ``<binary>.sha256``, etcd's ``SHA256SUMS``,
oauth2-proxy's ``<archive>-sha256sum.txt``); the digest and the URL are kept in the install's
stamp. Where they are not reachable (machines that reach only package registries), the same
versions are built from source (:mod:`.engine_tools`, :mod:`.tools`), with one line saying so.

``AUTHPROXY_TOOLS_FROM`` decides (:func:`release_or_source`):

- ``auto`` (default): the release when its checksum file answers within :data:`PROBE_TIMEOUT`
  seconds, else the source build (a host found unreachable is not asked again by this process);
- ``releases``: the release or an error (GitHub Actions: no silent hour-long fallback);
- ``source``: always the source build, nothing is downloaded.

Once the checksum file is read, the release is used: a digest that does not match, or an artifact
that cannot be downloaded, is an error, never a fallback. A host that answers with an HTTP error
(a release missing at the pinned version) is an error too; only a host that cannot be reached at
all (no DNS, no route, refused, timed out, a proxy refusing the tunnel) falls back.

The redis-ha chart the local stacks install comes from a local mirror (``../shared/charts`` beside
the checkout, or ``$AUTHPROXY_CHARTS``) or from its GitHub release; either way its contents must
match :data:`REDIS_HA_CHART`'s pinned digest (of the files ``helm package`` keeps, so a mirror
packaged from the same source folder and the release archive agree).

Imports: the standard library, :mod:`authproxy_local.core`, :mod:`.base` and :mod:`.versions`.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from authproxy_local.core.cache import cache_dir
from authproxy_local.core.paths import REPO

from .base import ChecksumError, Component, InstallError, log, run, write_stamp
from .versions import STAMP_NAME, VERSIONS

MAX_DOWNLOAD = 512 << 20
"""Bytes one download may have (the pulumi CLI archive is about 150 MB)."""
TOOLS_FROM = "AUTHPROXY_TOOLS_FROM"
TOOLS_FROM_MODES = ("auto", "releases", "source")
PROBE_TIMEOUT = 5.0
"""Seconds the checksum file of a release may take in ``auto`` mode before the source build is used."""
GITHUB = "https://github.com"
K8S_RELEASES = "https://dl.k8s.io"


class Unreachable(InstallError):
    """The download host could not be reached at all (as opposed to answering with an error)."""


@dataclass(frozen=True)
class Release:
    """One release artifact and the checksum file that lists it."""

    component: str
    version: str
    """The installer's pin (:data:`VERSIONS`), also the stamp's version."""
    url: str
    """The artifact (an archive, or the executable itself)."""
    checksums_url: str
    asset: str
    """The artifact's name in the checksum file."""
    executable: str
    """The executable's path inside the archive; empty when the download is the executable. The
    folder holding it becomes the install's ``bin`` (the pulumi CLI's language hosts come along)."""
    version_args: tuple[str, ...] = ()
    version_text: str = ""
    """``<executable> <version_args>`` must print this (checked after the install)."""
    companions: tuple[str, ...] = ()
    """Files that must sit next to the executable in the archive (the CLI's Python language host)."""

    @property
    def host(self) -> str:
        return urlsplit(self.checksums_url).netloc


KUBERNETES_RELEASES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
"""The k8s.io/kubernetes binaries taken from dl.k8s.io (each a bare executable with a
``<binary>.sha256`` beside it)."""


def releases(versions: Mapping[str, str] = VERSIONS, base: str = GITHUB,
             k8s_base: str = K8S_RELEASES) -> dict[str, Release]:
    """The release artifacts for linux/amd64 at the installer's pins (``base`` for tests): the
    same versions the source builds produce."""
    out: dict[str, Release] = {}
    v = versions["pulumi"]
    rel = f"{base}/pulumi/pulumi/releases/download/v{v}"
    out["pulumi"] = Release("pulumi", v, f"{rel}/pulumi-v{v}-linux-x64.tar.gz",
                            f"{rel}/pulumi-{v}-checksums.txt", f"pulumi-v{v}-linux-x64.tar.gz",
                            "pulumi/pulumi", ("version",), f"v{v}",
                            ("pulumi-language-python", "pulumi-language-python-exec"))
    for name in ("random", "keycloak", "kubernetes"):
        v = versions[f"pulumi-{name}"]
        asset = f"pulumi-resource-{name}-v{v}-linux-amd64.tar.gz"
        rel = f"{base}/pulumi/pulumi-{name}/releases/download/v{v}"
        out[f"pulumi-{name}"] = Release(f"pulumi-{name}", v, f"{rel}/{asset}",
                                        f"{rel}/pulumi-{name}_{v}_checksums.txt", asset,
                                        f"pulumi-resource-{name}")
    v = versions["kubernetes"]
    for exe in KUBERNETES_RELEASES:
        url = f"{k8s_base}/release/v{v}/bin/linux/amd64/{exe}"
        out[exe] = Release(exe, v, url, url + ".sha256", exe, "", ("--version",), f"v{v}")
    v = versions["etcd"]
    rel = f"{base}/etcd-io/etcd/releases/download/v{v}"
    asset = f"etcd-v{v}-linux-amd64.tar.gz"
    out["etcd"] = Release("etcd", v, f"{rel}/{asset}", f"{rel}/SHA256SUMS", asset,
                          f"etcd-v{v}-linux-amd64/etcd", ("--version",), v)
    v = versions["oauth2-proxy"]  # tagged with its "v"
    rel = f"{base}/oauth2-proxy/oauth2-proxy/releases/download/{v}"
    asset = f"oauth2-proxy-{v}.linux-amd64.tar.gz"
    out["oauth2-proxy"] = Release("oauth2-proxy", v, f"{rel}/{asset}", f"{rel}/{asset}-sha256sum.txt", asset,
                                  f"oauth2-proxy-{v}.linux-amd64/oauth2-proxy", ("--version",), v)
    return out


def fetch(url: str, dest: pathlib.Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` (https only, bounded size). :class:`Unreachable` when the host
    cannot be reached, :class:`InstallError` when it answers with an error."""
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
    except urllib.error.HTTPError as e:
        dest.unlink(missing_ok=True)
        raise InstallError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        dest.unlink(missing_ok=True)
        raise Unreachable(f"cannot download {url}: {getattr(e, 'reason', e)}") from None


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


def release_digest(rel: Release, timeout: float = 60.0) -> str:
    """The digest the project's checksum file gives for the artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        sums = pathlib.Path(tmp) / "checksums"
        fetch(rel.checksums_url, sums, timeout=timeout)
        return expected_digest(sums.read_text(errors="replace"), rel.asset)


def install_release(rel: Release, bindir: pathlib.Path, want: str | None = None,
                    timeout: float = 600.0) -> tuple[pathlib.Path, str]:
    """Download ``rel``, check it against ``want`` (else its checksum file), unpack it; the folder
    holding the executable becomes ``bindir`` (replaced). Returns (executable, sha256). Nothing
    is left behind when the digest differs."""
    bindir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=bindir.parent) as tmp:
        work = pathlib.Path(tmp)
        if want is None:
            want = release_digest(rel)
        log(f"downloading {rel.url}")
        fetch(rel.url, work / rel.asset, timeout=timeout)
        got = sha256(work / rel.asset)
        if got != want:
            raise ChecksumError(f"{rel.url}: sha256 {got}, the project's checksum file says {want}; "
                                "the download is corrupt or was tampered with (it has been discarded)")
        out = work / "out"
        out.mkdir()
        if rel.executable:
            _safe_extract(work / rel.asset, out)
            exe = out / rel.executable
        else:
            exe = out / rel.asset
            shutil.move(str(work / rel.asset), exe)
        missing = [n for n in (exe.name, *rel.companions) if not (exe.parent / n).is_file()]
        if missing:
            raise InstallError(f"{rel.url} has no {', '.join(missing)} (next to {rel.executable or rel.asset})")
        exe.chmod(0o755)
        if bindir.exists():
            shutil.rmtree(bindir)
        shutil.move(str(exe.parent), bindir)
    return bindir / exe.name, got


def tools_from(environ: Mapping[str, str] | None = None) -> str:
    """``AUTHPROXY_TOOLS_FROM``: auto (default), releases or source."""
    mode = (os.environ if environ is None else environ).get(TOOLS_FROM, "").strip().lower() or "auto"
    if mode not in TOOLS_FROM_MODES:
        raise InstallError(f"{TOOLS_FROM}={mode!r}: use one of {', '.join(TOOLS_FROM_MODES)}")
    return mode


_unreachable: dict[str, str] = {}
"""Hosts this process found unreachable (auto mode asks each once) -> why."""


def release_or_source(rel: Release, bindir: pathlib.Path, build: Callable[[], pathlib.Path],
                      environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """``rel`` installed into ``bindir`` from the project's release (verified), or ``build()`` where
    the release host cannot be reached (:func:`tools_from` decides)."""
    mode = tools_from(environ)
    if mode == "source":
        return build()
    why = _unreachable.get(rel.host) if mode == "auto" else None
    want = None
    if why is None:
        try:
            want = release_digest(rel, timeout=PROBE_TIMEOUT if mode == "auto" else 60.0)
        except Unreachable as e:
            if mode == "releases":
                raise InstallError(f"{e}; the official release is required ({TOOLS_FROM}=releases): "
                                   f"let this machine reach {rel.host}, or set {TOOLS_FROM}=source to "
                                   "build it from source") from None
            why = _unreachable.setdefault(rel.host, str(e).rsplit(": ", 1)[-1])
    if want is None:
        log(f"{rel.component}: {rel.host} is not reachable ({why}): building {rel.version} from source "
            f"({TOOLS_FROM}=source skips this check)")
        return build()
    exe, digest = install_release(rel, bindir, want)
    if rel.version_args:
        out = run([str(exe), *rel.version_args], env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"},
                  timeout=120, what=f"{rel.component} {' '.join(rel.version_args)}")
        if rel.version_text not in out.stdout + out.stderr:
            raise InstallError(f"{rel.url}: `{exe.name} {' '.join(rel.version_args)}` does not report "
                               f"{rel.version_text}: {(out.stdout + out.stderr).strip()[:300]}")
    write_stamp(bindir / STAMP_NAME, rel.version, exe, origin="release", url=rel.url, sha256=digest)
    log(f"{rel.component} {rel.version}: the official release, sha256 {digest[:16]}... as its checksum file says")
    return exe


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
