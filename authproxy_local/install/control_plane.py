"""The rest of a control plane for the local kube-apiserver, in the cache:
kube-controller-manager and kube-scheduler from their official releases where those can be
downloaded, else built from the same k8s.io/kubernetes module, recipe and pin as kube-apiserver
(so they share its module and build caches: with kube-apiserver built, kube-controller-manager
takes about 2.6 CPU-minutes more and kube-scheduler seconds), and kwok (sigs.k8s.io/kwok, built
with Go), which plays the kubelets of simulated nodes, with the upstream stage files it
needs next to its binary. Facts: ../shared/third_party/README.md ("A control plane that acts").

Imports: the standard library, :mod:`.base`, :mod:`.gomod`, :mod:`.engine_tools`,
:mod:`.releases`, :mod:`.versions`, :mod:`authproxy_local.core.cache`.
"""

from __future__ import annotations

import os
import pathlib
import shutil

from authproxy_local.core.cache import cache_dir

from .base import Component, InstallError, go_version, require_go, run, stamp_matches, write_stamp
from .engine_tools import build_with_published_replaces, engine_dir
from .gomod import (
    go_build,
    go_directive,
    go_download,
    go_env,
    kubernetes_ldflags,
    plain_go_mod,
    version_tuple,
)
from .releases import release_or_source, releases
from .versions import KUBERNETES_MODULE, KWOK_MODULE, KWOK_STAGES, STAMP_NAME, VERSIONS


def kubernetes_tool_home(exe_name: str) -> pathlib.Path:
    """Where a k8s.io/kubernetes binary other than kube-apiserver keeps its wrapper, binary and
    stamp (beside kube-apiserver's, at the same pin)."""
    return engine_dir("kubernetes") / exe_name


def _find_kubernetes_tool(exe_name: str) -> pathlib.Path | None:
    exe = kubernetes_tool_home(exe_name) / "bin" / exe_name
    return exe if stamp_matches(exe.parent / STAMP_NAME, VERSIONS["kubernetes"], exe) else None


def _install_kubernetes_tool(exe_name: str) -> pathlib.Path:
    """``k8s.io/kubernetes/cmd/<exe_name>``: the official release where it can be downloaded
    (:func:`.releases.release_or_source`), else built like kube-apiserver (its staging replaces
    become the published v0.<minor>.<patch> modules)."""
    v = VERSIONS["kubernetes"]
    home = kubernetes_tool_home(exe_name)

    def build() -> pathlib.Path:
        return build_with_published_replaces(
            "kubernetes", KUBERNETES_MODULE, exe_name, replace_version="v0." + ".".join(v.split(".")[1:]),
            prefix="k8s.io/", ldflags=kubernetes_ldflags(v), pkg=f"{KUBERNETES_MODULE}/cmd/{exe_name}",
            version_text=f"v{v}", home=home)
    return release_or_source(releases()[exe_name], home / "bin", build)


def kwok_stage_files(kwok: pathlib.Path) -> list[pathlib.Path]:
    """The upstream stage files installed next to the kwok binary (kwok refuses to start without
    stages): nodes become Ready and keep their leases, scheduled pods run and become Ready,
    deleted pods go."""
    return sorted((kwok.parent / "stages").glob("*.yaml"))


def _find_kwok() -> pathlib.Path | None:
    exe = engine_dir("kwok") / "bin" / "kwok"
    if not stamp_matches(exe.parent / STAMP_NAME, VERSIONS["kwok"], exe):
        return None
    return exe if len(kwok_stage_files(exe)) == len(KWOK_STAGES) else None


def _install_kwok() -> pathlib.Path:
    """kwok through a wrapper module that requires it (its go.mod has no replaces), and its stage
    files copied out of the module."""
    v = VERSIONS["kwok"]
    go = require_go()
    root = engine_dir("kwok")
    wrapper = root / "wrapper"
    wrapper.mkdir(parents=True, exist_ok=True)
    env = go_env(os.environ, cache_dir())
    info = go_download(go, env, root, f"{KWOK_MODULE}@{v}")
    need = go_directive(pathlib.Path(info["GoMod"]).read_text()) or "1.25"
    have = go_version(go)
    if version_tuple(have) < version_tuple(need):
        raise InstallError(f"{KWOK_MODULE} {v} needs Go >= {need}; `go` on PATH is {have}. Install a newer Go.")
    (wrapper / "go.mod").write_text(plain_go_mod("authproxy.local/kwok", need, [(KWOK_MODULE, v)]))
    (wrapper / "go.sum").unlink(missing_ok=True)
    exe = root / "bin" / "kwok"
    secs = go_build(go, env, wrapper, exe, "-s -w", f"{KWOK_MODULE}/cmd/kwok", what="kwok")
    out = run([str(exe), "--version"], timeout=60, what="kwok --version")
    if f"kwok version {v}" not in out.stdout + out.stderr:
        raise InstallError(f"unexpected `kwok --version` output: {out.stdout}{out.stderr}")
    stages = exe.parent / "stages"
    shutil.rmtree(stages, ignore_errors=True)
    stages.mkdir()
    for rel in KWOK_STAGES:
        shutil.copyfile(pathlib.Path(info["Dir"]) / rel, stages / pathlib.Path(rel).name)
    write_stamp(exe.parent / STAMP_NAME, v, exe, build_seconds=round(secs, 1), go_version=have,
                stages=list(KWOK_STAGES))
    return exe


REGISTRY: dict[str, Component] = {
    "kube-controller-manager": Component(
        "kube-controller-manager", lambda: _find_kubernetes_tool("kube-controller-manager"),
        lambda: _install_kubernetes_tool("kube-controller-manager")),
    "kube-scheduler": Component(
        "kube-scheduler", lambda: _find_kubernetes_tool("kube-scheduler"),
        lambda: _install_kubernetes_tool("kube-scheduler")),
    "kwok": Component("kwok", _find_kwok, _install_kwok),
}
