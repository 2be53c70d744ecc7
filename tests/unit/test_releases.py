"""Release downloads and the redis-ha chart, against a release host served on loopback: the
installer takes the official release where its checksum file answers (verified against it; a
tampered artifact is an error, never a fallback), builds from source where the host cannot be
reached (one line says so), obeys AUTHPROXY_TOOLS_FROM, and the chart comes from a mirror or the
download with its pinned content digest, or the error names the download. (The real release
hosts are not reachable from the test machines.)"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from authproxy_local import install
from authproxy_local.core.paths import REDIS_CHART as MIRROR_CHART
from authproxy_local.install import control_plane, engine_tools, tools
from authproxy_local.install import releases as rl
from authproxy_local.install.base import ChecksumError, InstallError, read_stamp, stamp_matches
from authproxy_local.install.versions import STAMP_NAME, VERSIONS

NO_MIRROR = not MIRROR_CHART.is_file() and not os.environ.get("CI")
"""Without ../shared/charts a laptop skips the mirror tests; CI (CI=true) has the mirror and fails
without it."""
UNREACHABLE = "http://127.0.0.1:9"
"""Nothing listens on the discard port: the connection is refused (an unreachable host)."""


class Host:
    """A static file server on loopback (a release host stand-in) that records what is asked."""

    def __init__(self, www: Path) -> None:
        self.www = www
        self.requests: list[str] = []
        host = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: object, **kw: object) -> None:
                super().__init__(*a, directory=str(www), **kw)  # type: ignore[arg-type]

            def do_GET(self) -> None:
                host.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def releases(self) -> dict[str, rl.Release]:
        return rl.releases(base=self.base, k8s_base=self.base)

    def publish(self, rel: rl.Release, digest: str | None = None) -> bytes:
        """Lay out ``rel``'s artifact and checksum file as the project publishes them; the
        executable prints the version the install checks. Returns the artifact."""
        exe = f"#!/bin/sh\necho '{rel.component} {rel.version_text}'\n".encode()
        if rel.component == "pulumi":
            files = {f"pulumi/{n}": exe for n in ("pulumi", "pulumi-language-python",
                                                   "pulumi-language-python-exec", "pulumi-language-nodejs")}
            artifact = rl._tgz(files, "")
        elif rel.executable:
            artifact = rl._tgz({rel.executable: exe, "LICENSE": b"license"}, "")
        else:
            artifact = exe
        path = self.www / rel.url[len(self.base) + 1:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(artifact)
        sums = self.www / rel.checksums_url[len(self.base) + 1:]
        d = digest or hashlib.sha256(artifact).hexdigest()
        sums.write_text(d + "\n" if rel.component in rl.KUBERNETES_RELEASES else
                        f"{'0' * 64}  other-asset.tar.gz\n{d}  {rel.asset}\n")
        return artifact


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    www = tmp_path / "www"
    www.mkdir()
    h = Host(www)
    try:
        yield h
    finally:
        h.server.shutdown()


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without the process's memory of unreachable hosts."""
    monkeypatch.setattr(rl, "_unreachable", {})


def never(what: str = "the source build") -> Callable[[], Path]:
    def build() -> Path:
        raise AssertionError(f"{what} ran")
    return build


def test_the_release_urls_are_the_projects_own_at_the_source_builds_versions() -> None:
    r = rl.releases()
    assert {n: x.version for n, x in r.items()} == {
        "pulumi": VERSIONS["pulumi"], "pulumi-random": VERSIONS["pulumi-random"],
        "pulumi-keycloak": VERSIONS["pulumi-keycloak"], "pulumi-kubernetes": VERSIONS["pulumi-kubernetes"],
        "kube-apiserver": VERSIONS["kubernetes"], "kube-controller-manager": VERSIONS["kubernetes"],
        "kube-scheduler": VERSIONS["kubernetes"], "etcd": VERSIONS["etcd"], "oauth2-proxy": VERSIONS["oauth2-proxy"]}
    v = VERSIONS["pulumi"]
    assert r["pulumi"].url == f"https://github.com/pulumi/pulumi/releases/download/v{v}/pulumi-v{v}-linux-x64.tar.gz"
    assert r["pulumi"].checksums_url.endswith(f"/v{v}/pulumi-{v}-checksums.txt")
    v = VERSIONS["pulumi-kubernetes"]
    assert r["pulumi-kubernetes"].checksums_url == (
        f"https://github.com/pulumi/pulumi-kubernetes/releases/download/v{v}/pulumi-kubernetes_{v}_checksums.txt")
    for exe in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert r[exe].url == f"https://dl.k8s.io/release/v{VERSIONS['kubernetes']}/bin/linux/amd64/{exe}"
        assert r[exe].checksums_url == r[exe].url + ".sha256"
    assert r["etcd"].executable == f"etcd-v{VERSIONS['etcd']}-linux-amd64/etcd"
    v = VERSIONS["oauth2-proxy"]
    assert r["oauth2-proxy"].url == (f"https://github.com/oauth2-proxy/oauth2-proxy/releases/download/{v}/"
                                     f"oauth2-proxy-{v}.linux-amd64.tar.gz")
    assert r["oauth2-proxy"].checksums_url == r["oauth2-proxy"].url + "-sha256sum.txt"


@pytest.mark.parametrize("component", sorted(rl.releases()))
def test_a_reachable_release_is_installed_verified(host: Host, tmp_path: Path, component: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rel = host.releases()[component]
    artifact = host.publish(rel)
    bindir = tmp_path / "engine" / "bin"
    exe = rl.release_or_source(rel, bindir, never(), environ={})
    assert exe.parent == bindir and exe.stat().st_mode & 0o111
    assert exe.read_bytes().startswith(b"#!/bin/sh")
    stamp = read_stamp(bindir / STAMP_NAME)
    assert stamp is not None and stamp["origin"] == "release" and stamp["url"] == rel.url
    assert stamp["sha256"] == hashlib.sha256(artifact).hexdigest()
    assert stamp_matches(bindir / STAMP_NAME, rel.version, exe), "the installer's find() accepts it"
    if component == "pulumi":  # the language hosts come with the CLI
        assert {p.name for p in bindir.iterdir()} >= {"pulumi", "pulumi-language-python",
                                                      "pulumi-language-python-exec"}
    assert "as its checksum file says" in capsys.readouterr().err


def test_a_tampered_release_is_an_error_never_a_fallback(host: Host, tmp_path: Path) -> None:
    rel = host.releases()["etcd"]
    host.publish(rel, digest="ab" * 32)
    bindir = tmp_path / "bin"
    for mode in ("auto", "releases"):
        with pytest.raises(ChecksumError, match=r"checksum file says abab"):
            rl.release_or_source(rel, bindir, never(), environ={rl.TOOLS_FROM: mode})
        assert not bindir.exists()
    # an install already there stays as it was
    bindir.mkdir()
    (bindir / "etcd").write_text("old")
    with pytest.raises(ChecksumError):
        rl.release_or_source(rel, bindir, never(), environ={})
    assert (bindir / "etcd").read_text() == "old"


def test_an_unreachable_host_falls_back_to_the_source_build_saying_so_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    rels = rl.releases(base=UNREACHABLE, k8s_base=UNREACHABLE)
    built: list[str] = []
    calls: list[str] = []
    real_fetch = rl.fetch

    def fetch(url: str, dest: Path, timeout: float = 60.0) -> None:
        calls.append(url)
        real_fetch(url, dest, timeout)

    def builder(name: str) -> Callable[[], Path]:
        def build() -> Path:
            built.append(name)
            return Path(name)
        return build

    monkeypatch.setattr(rl, "fetch", fetch)
    for name in ("pulumi", "etcd"):
        assert rl.release_or_source(rels[name], tmp_path / name, builder(name), environ={}) == Path(name)
    assert built == ["pulumi", "etcd"]
    assert calls == [rels["pulumi"].checksums_url], "the host is asked once per process"
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "not reachable" in ln]
    assert len(lines) == 2 and all("from source" in ln and rl.TOOLS_FROM in ln for ln in lines)


def test_releases_required_and_unreachable_is_an_error(tmp_path: Path) -> None:
    rel = rl.releases(base=UNREACHABLE, k8s_base=UNREACHABLE)["pulumi-random"]
    with pytest.raises(InstallError, match=rf"{rl.TOOLS_FROM}=releases.*{rl.TOOLS_FROM}=source"):
        rl.release_or_source(rel, tmp_path / "bin", never(), environ={rl.TOOLS_FROM: "releases"})


def test_a_cli_archive_without_its_python_language_host_is_refused(host: Host, tmp_path: Path) -> None:
    rel = host.releases()["pulumi"]
    artifact = rl._tgz({"pulumi/pulumi": b"#!/bin/sh\n"}, "")
    (host.www / rel.url[len(host.base) + 1:]).parent.mkdir(parents=True)
    (host.www / rel.url[len(host.base) + 1:]).write_bytes(artifact)
    (host.www / rel.checksums_url[len(host.base) + 1:]).write_text(
        f"{hashlib.sha256(artifact).hexdigest()}  {rel.asset}\n")
    with pytest.raises(InstallError, match="has no pulumi-language-python, pulumi-language-python-exec"):
        rl.release_or_source(rel, tmp_path / "bin", never(), environ={})
    assert not (tmp_path / "bin").exists()


def test_a_release_the_host_does_not_have_is_an_error_not_a_fallback(host: Host, tmp_path: Path) -> None:
    rel = host.releases()["pulumi-keycloak"]  # nothing published: 404
    with pytest.raises(InstallError, match="HTTP 404"):
        rl.release_or_source(rel, tmp_path / "bin", never(), environ={})


def test_source_mode_downloads_nothing(host: Host, tmp_path: Path) -> None:
    rel = host.releases()["kube-apiserver"]
    host.publish(rel)
    assert rl.release_or_source(rel, tmp_path / "bin", lambda: Path("built"),
                                environ={rl.TOOLS_FROM: "Source"}) == Path("built")
    assert host.requests == [] and not (tmp_path / "bin").exists()


def test_an_unknown_mode_names_the_setting() -> None:
    with pytest.raises(InstallError, match=r"AUTHPROXY_TOOLS_FROM='binaries': use one of auto, releases, source"):
        rl.tools_from({rl.TOOLS_FROM: "binaries"})


def test_the_installer_takes_the_engine_tools_from_their_releases(
        host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """install.ensure (what every make target calls) installs the official release into the cache
    and finds it afterwards; the source builds are not run."""
    monkeypatch.setenv("AUTHPROXY_CACHE", str(tmp_path / "cache"))
    # "releases": should the wiring be wrong, the test fails instead of starting an hour of Go builds
    monkeypatch.setenv(rl.TOOLS_FROM, "releases")
    monkeypatch.setattr(engine_tools, "releases", host.releases)
    monkeypatch.setattr(tools, "releases", host.releases)
    monkeypatch.setattr(control_plane, "releases", host.releases)
    for name in ("pulumi", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                 "pulumi-kubernetes", "oauth2-proxy"):
        host.publish(host.releases()[name])
    assert install.find("etcd") is None
    etcd = install.ensure("etcd")
    assert etcd == tmp_path / "cache" / "engine" / f"etcd-{VERSIONS['etcd']}" / "bin" / "etcd"
    assert install.find("etcd") == etcd
    assert json.loads((etcd.parent / STAMP_NAME).read_text())["origin"] == "release"
    assert install.ensure("kube-apiserver").parent.parent.name == f"kubernetes-{VERSIONS['kubernetes']}"
    for exe in ("kube-controller-manager", "kube-scheduler"):  # beside kube-apiserver, as when built
        assert install.find(exe) is None
        assert install.ensure(exe) == (tmp_path / "cache" / "engine" / f"kubernetes-{VERSIONS['kubernetes']}"
                                       / exe / "bin" / exe)
        assert install.find(exe) == install.ensure(exe)
    assert install.find("pulumi-kubernetes") is None and install.ensure("pulumi-kubernetes").name == (
        "pulumi-resource-kubernetes")
    pulumi = install.ensure("pulumi")
    assert install.find("pulumi") == pulumi, "a released CLI needs no language-host snapshot stamp"
    proxy = install.ensure("oauth2-proxy")
    assert proxy == tmp_path / "cache" / "oauth2-proxy" / VERSIONS["oauth2-proxy"] / "bin" / "oauth2-proxy"
    assert install.find("oauth2-proxy") == proxy


def test_an_unreachable_host_is_reported() -> None:
    assert not rl.reachable(f"{UNREACHABLE}/nothing", timeout=2)


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
def test_the_chart_comes_from_the_mirror_else_the_download(host: Host, tmp_path: Path) -> None:
    base, www = host.base, host.www
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
