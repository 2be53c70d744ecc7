"""The real Pulumi engine's binaries in the cache: the pulumi CLI and its Python language host,
the random, keycloak and kubernetes provider plugins, kube-apiserver and etcd (the rest of the
control plane: :mod:`.control_plane`). Each is the project's official release where it can be
downloaded (:func:`.releases.release_or_source`), else built with Go here, at the same version.
Facts and recipes: ../shared/third_party/README.md.

Imports: the standard library, :mod:`.base`, :mod:`.gomod`, :mod:`.releases`, :mod:`.versions`,
:mod:`authproxy_local.core.cache`.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import tarfile
import urllib.request
from collections.abc import Callable

from authproxy_local.core.cache import cache_dir

from .base import (
    Component,
    InstallError,
    go_version,
    log,
    read_stamp,
    require_go,
    run,
    stamp_matches,
    untar,
    write_stamp,
)
from .gomod import (
    go_build,
    go_directive,
    go_download,
    go_env,
    kubernetes_ldflags,
    plain_go_mod,
    published_replaces,
)
from .releases import release_or_source, releases
from .versions import (
    ETCD_MODULE,
    K8S_PROVIDER_MODULE,
    K8S_SDK_MODULE,
    KUBERNETES_MODULE,
    PULUMI_PKG,
    PULUMI_REPLACES,
    PULUMI_SDK,
    STAMP_NAME,
    THIRD_PARTY_FILES,
    VERSIONS,
)


def third_party_dir() -> pathlib.Path:
    """Source snapshots no registry serves: $AUTHPROXY_THIRD_PARTY, else ../shared/third_party."""
    explicit = os.environ.get("AUTHPROXY_THIRD_PARTY", "")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    return pathlib.Path(__file__).resolve().parents[3] / "shared" / "third_party"


THIRD_PARTY_GITHUB: dict[str, tuple[str, str]] = {
    # snapshot -> (GitHub archive of the same revision, the part of it the build uses; "" = all)
    "pulumi-language-python": ("https://github.com/pulumi/pulumi/archive/{v}.tar.gz",
                               "sdk/python/cmd/pulumi-language-python/"),
    "pulumi-random": ("https://github.com/pulumi/pulumi-random/archive/refs/tags/v{v}.tar.gz", ""),
    "pulumi-keycloak": ("https://github.com/pulumi/pulumi-keycloak/archive/refs/tags/v{v}.tar.gz", ""),
    "terraform-provider-keycloak": (
        "https://github.com/keycloak/terraform-provider-keycloak/archive/refs/tags/v{v}.tar.gz", ""),
    "ztunnel": ("https://github.com/istio/ztunnel/archive/{v}.tar.gz", ""),
}
"""Where a machine with internet (a laptop, GitHub Actions) gets the snapshots ../shared/third_party
holds here: GitHub's archive of the same tag or commit, its top folder stripped."""


def repack_github_archive(archive: pathlib.Path, out: pathlib.Path, keep: str = "") -> int:
    """Write ``out`` (tar.gz) from a GitHub archive: the top folder (``repo-<ref>/``) stripped,
    and with ``keep`` only that sub-folder (plus LICENSE). Returns the number of files written."""
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
    url_t, keep = THIRD_PARTY_GITHUB[key]
    url = url_t.format(v=VERSIONS[key])
    cached.parent.mkdir(parents=True, exist_ok=True)
    archive = cached.with_name(name + ".github")
    log(f"{path} is not here: downloading {url}")
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



third_party_tarball = _third_party_tarball
"""The public name of :func:`_third_party_tarball` (other installers build from snapshots too)."""


def engine_dir(name: str) -> pathlib.Path:
    return cache_dir() / "engine" / f"{name}-{VERSIONS[name]}"


def find_built(name: str, exe_name: str) -> pathlib.Path | None:
    exe = engine_dir(name) / "bin" / exe_name
    return exe if stamp_matches(exe.parent / STAMP_NAME, VERSIONS[name], exe) else None


def _find_pulumi() -> pathlib.Path | None:
    exe = find_built("pulumi", "pulumi")
    host = exe.parent / "pulumi-language-python" if exe else None
    data = read_stamp(exe.parent / STAMP_NAME) if exe else None
    if exe is None or host is None or not host.is_file() or not (exe.parent / "pulumi-language-python-exec").is_file():
        return None
    # The release ships the language host built with the CLI; a source build records its snapshot.
    if not data or (data.get("origin") != "release"
                    and data.get("language_host") != VERSIONS["pulumi-language-python"]):
        return None
    return exe


def _install_pulumi() -> pathlib.Path:
    """The pulumi CLI (pkg/v3 from the proxy) and the Python language host next to it."""
    v = VERSIONS["pulumi"]
    go = require_go()
    root = engine_dir("pulumi")
    bindir = root / "bin"
    env = go_env(os.environ, cache_dir())
    requires = [(PULUMI_PKG, f"v{v}"), (PULUMI_SDK, f"v{v}")]
    version_x = f"-X {PULUMI_SDK}/go/common/version.Version=v{v}"

    cli = root / "cli"
    cli.mkdir(parents=True, exist_ok=True)
    (cli / "go.mod").write_text(plain_go_mod("authproxy.local/pulumi", "1.25", requires, PULUMI_REPLACES))
    (cli / "go.sum").unlink(missing_ok=True)
    cli_s = go_build(go, env, cli, bindir / "pulumi", f"-s -w {version_x}",
                      f"{PULUMI_PKG}/cmd/pulumi", what="the pulumi CLI")

    host = root / "language-python"
    shutil.rmtree(host, ignore_errors=True)
    untar(_third_party_tarball("pulumi-language-python"), root / "language-python-src")
    src = root / "language-python-src" / "sdk" / "python" / "cmd" / "pulumi-language-python"
    host.mkdir(parents=True)
    for f in src.glob("*.go"):
        shutil.copy2(f, host / f.name)
    (host / "go.mod").write_text(plain_go_mod("authproxy.local/pulumi-language-python", "1.25",
                                              requires, PULUMI_REPLACES))
    host_s = go_build(go, env, host, bindir / "pulumi-language-python", f"-s -w {version_x}",
                       what="pulumi-language-python")
    # The host runs the program through this script, which must sit next to it (sdk/v3 ships it).
    sdk_dir = pathlib.Path(go_download(go, env, root, f"{PULUMI_SDK}@v{v}")["Dir"])
    exec_script = bindir / "pulumi-language-python-exec"
    shutil.copyfile(sdk_dir / "python" / "cmd" / "pulumi-language-python-exec", exec_script)
    exec_script.chmod(0o755)

    exe = bindir / "pulumi"
    out = run([str(exe), "version"], env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"},
               timeout=120, what="pulumi version")
    if out.stdout.strip() != f"v{v}":
        raise InstallError(f"unexpected `pulumi version` output: {out.stdout}{out.stderr}")
    write_stamp(bindir / STAMP_NAME, v, exe, language_host=VERSIONS["pulumi-language-python"],
                cli_build_seconds=round(cli_s, 1), host_build_seconds=round(host_s, 1),
                go_version=go_version(go))
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
    root = engine_dir(f"pulumi-{name}")
    src = root / "src"
    shutil.rmtree(src, ignore_errors=True)
    untar(_third_party_tarball(f"pulumi-{name}"), src)
    if upstream:
        untar(_third_party_tarball(upstream), src / "upstream")
    env = go_env(os.environ, cache_dir())
    provider = src / "provider"
    cmd = provider / "cmd" / f"pulumi-resource-{name}"
    log(f"go run generate.go (pulumi-resource-{name} schema)")
    run([go, "run", "-mod=mod", "generate.go"], env={**env, "VERSION": v}, cwd=cmd, timeout=3600,
         what=f"generating the pulumi-resource-{name} schema")
    if name == "random":
        gomod = (provider / "go.mod").read_text()
        reps = _write_converter_stubs(root / "stubs", gomod)
        (provider / "go.mod").write_text(gomod + "\n// authproxy_local.install: converter stand-ins\n"
                                         + "".join(f"replace {r}\n" for r in reps))
    exe = root / "bin" / f"pulumi-resource-{name}"
    secs = go_build(go, env, provider, exe, f"-s -w -X {module}/pkg/version.Version={v}",
                     f"./cmd/pulumi-resource-{name}", what=f"pulumi-resource-{name}")
    write_stamp(exe.parent / STAMP_NAME, v, exe, build_seconds=round(secs, 1), go_version=go_version(go))
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
    root = engine_dir("pulumi-kubernetes")
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
    run([go, "run", "-mod=mod", "generate.go"], env={**env, "VERSION": v}, cwd=wrapper, timeout=3600,
         what="generating the pulumi-resource-kubernetes schema")
    exe = root / "bin" / "pulumi-resource-kubernetes"
    secs = go_build(go, env, wrapper, exe,
                     f"-s -w -X {K8S_PROVIDER_MODULE}/pkg/version.Version={v}",
                     what="pulumi-resource-kubernetes")
    write_stamp(exe.parent / STAMP_NAME, v, exe, build_seconds=round(secs, 1), go_version=go_version(go))
    return exe



def build_with_published_replaces(key: str, module: str, exe_name: str, *, replace_version: str,
                                  prefix: str, ldflags: str, pkg: str, version_text: str,
                                  home: pathlib.Path | None = None) -> pathlib.Path:
    """``pkg`` built from ``module`` at ``v<VERSIONS[key]>``: the module's local-path replaces
    (staging or sibling modules, which do not exist outside its repository) become the published
    modules of ``replace_version`` (generated from its go.mod, not by hand); ``<exe> --version``
    must print ``version_text``. Wrapper, binary and stamp go under ``home`` (default: the key's
    engine dir), so several binaries of one module each keep their own."""
    v = VERSIONS[key]
    go = require_go()
    root = home or engine_dir(key)
    wrapper = root / "wrapper"
    wrapper.mkdir(parents=True, exist_ok=True)
    env = go_env(os.environ, cache_dir())
    gomod = pathlib.Path(go_download(go, env, root, f"{module}@v{v}")["GoMod"]).read_text()
    replaces = published_replaces(gomod, replace_version, prefix=prefix)
    (wrapper / "go.mod").write_text(plain_go_mod(
        f"authproxy.local/{exe_name}", go_directive(gomod) or "1.25", [(module, f"v{v}")], replaces))
    (wrapper / "go.sum").unlink(missing_ok=True)
    exe = root / "bin" / exe_name
    secs = go_build(go, env, wrapper, exe, ldflags, pkg, what=exe_name)
    out = run([str(exe), "--version"], timeout=60, what=f"{exe_name} --version")
    if version_text not in out.stdout:
        raise InstallError(f"unexpected `{exe_name} --version` output: {out.stdout}{out.stderr}")
    write_stamp(exe.parent / STAMP_NAME, v, exe, build_seconds=round(secs, 1), replaces=len(replaces),
                go_version=go_version(go))
    return exe


def _install_kube_apiserver() -> pathlib.Path:
    """kube-apiserver from k8s.io/kubernetes; its 31 staging replaces become the published
    v0.<minor>.<patch> modules."""
    v = VERSIONS["kubernetes"]
    return build_with_published_replaces(
        "kubernetes", KUBERNETES_MODULE, "kube-apiserver", replace_version="v0." + ".".join(v.split(".")[1:]),
        prefix="k8s.io/", ldflags=kubernetes_ldflags(v), pkg=f"{KUBERNETES_MODULE}/cmd/kube-apiserver",
        version_text=f"v{v}")


def _install_etcd() -> pathlib.Path:
    """etcd: go.etcd.io/etcd/server/v3 is the main package; its ../ replaces become the published
    modules of the same version."""
    v = VERSIONS["etcd"]
    return build_with_published_replaces(
        "etcd", ETCD_MODULE, "etcd", replace_version=f"v{v}", prefix="go.etcd.io/",
        ldflags=f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v{v}", pkg=ETCD_MODULE, version_text=v)


def _release_else(component: str, key: str, build: Callable[[], pathlib.Path]) -> Callable[[], pathlib.Path]:
    """Install ``component`` from its official release into ``engine_dir(key)/bin``, else ``build``."""
    return lambda: release_or_source(releases()[component], engine_dir(key) / "bin", build)


REGISTRY: dict[str, Component] = {
    "pulumi": Component("pulumi", _find_pulumi, _release_else("pulumi", "pulumi", _install_pulumi)),
    "pulumi-random": Component("pulumi-random", lambda: find_built("pulumi-random", "pulumi-resource-random"),
                               _release_else("pulumi-random", "pulumi-random", _install_pulumi_random)),
    "pulumi-keycloak": Component("pulumi-keycloak",
                                 lambda: find_built("pulumi-keycloak", "pulumi-resource-keycloak"),
                                 _release_else("pulumi-keycloak", "pulumi-keycloak", _install_pulumi_keycloak)),
    "pulumi-kubernetes": Component("pulumi-kubernetes",
                                   lambda: find_built("pulumi-kubernetes", "pulumi-resource-kubernetes"),
                                   _release_else("pulumi-kubernetes", "pulumi-kubernetes",
                                                 _install_pulumi_kubernetes)),
    "kube-apiserver": Component("kube-apiserver", lambda: find_built("kubernetes", "kube-apiserver"),
                                _release_else("kube-apiserver", "kubernetes", _install_kube_apiserver)),
    "etcd": Component("etcd", lambda: find_built("etcd", "etcd"), _release_else("etcd", "etcd", _install_etcd)),
}
