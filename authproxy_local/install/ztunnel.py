"""ztunnel, Istio ambient's per-node L4 proxy (Rust), built from the pinned source snapshot, and
``iptables`` for the in-pod redirection the harness sets up in each ambient pod's namespace.

Facts (../shared/third_party/README.md, "ztunnel"): ztunnel is not in the Rust crate registry, its
dependencies are. The build copy drops the optional git dependency ``boring-rustls-provider``
(cargo resolves it even with its feature off and fails offline; only the ``tls-boring`` feature
uses it, whose ``vendor/`` archives the snapshot leaves out); ``build.rs`` needs ``protoc``
(Debian ``protobuf-compiler``); ``--no-default-features --features tls-ring,testing`` gives the ring
TLS provider (no aws-lc/cmake build) and the fake CA (``FAKE_CA``) the harness runs it with.

Next to the binary the install keeps what a run needs from the snapshot: the fake CA's root
certificate and key (``src/tls/root-cert.pem``, ``ca-key.pem``: FAKE_CA signs every workload
certificate with them, so the harness signs the waypoint's and gateway's SPIFFE certificates with
the same key) and the in-pod redirection script (``scripts/ztunnel-redirect-inpod.sh``).

Imports: the standard library, :mod:`authproxy_local.core` and this room's :mod:`.base`,
:mod:`.engine_tools`, :mod:`.tools`, :mod:`.versions`.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import time

from authproxy_local.core.cache import cache_dir

from .base import (
    Component,
    InstallError,
    apt_install,
    log,
    run,
    stamp_matches,
    untar,
    which_or,
    write_stamp,
)
from .engine_tools import third_party_tarball
from .tools import apt_tool
from .versions import STAMP_NAME, VERSIONS

CARGO_FEATURES = ("--no-default-features", "--features", "tls-ring,testing")
DROPPED_DEPENDENCY = "boring-rustls-provider"
KEPT = {"fake-ca/root-cert.pem": "src/tls/root-cert.pem", "fake-ca/ca-key.pem": "src/tls/ca-key.pem",
        "ztunnel-redirect-inpod.sh": "scripts/ztunnel-redirect-inpod.sh"}
"""Files of the snapshot a run needs, kept next to the binary (install name -> snapshot path)."""


def cargo_toml_without_git_dependency(text: str) -> str:
    """The snapshot's Cargo.toml without the git dependency cargo cannot fetch offline (its
    ``[dependencies]`` line and its entry in the ``tls-boring`` feature)."""
    out = "\n".join(ln for ln in text.splitlines() if not ln.startswith(f"{DROPPED_DEPENDENCY} = ")) + "\n"
    out = out.replace(f', "{DROPPED_DEPENDENCY}/fips-only"', "")
    if DROPPED_DEPENDENCY in out:
        raise InstallError(f"ztunnel's Cargo.toml still names {DROPPED_DEPENDENCY} after dropping it: the "
                           "snapshot changed; update cargo_toml_without_git_dependency")
    return out


def ztunnel_dir() -> pathlib.Path:
    return cache_dir() / "ztunnel" / VERSIONS["ztunnel"]


def _exe() -> pathlib.Path:
    return ztunnel_dir() / "bin" / "ztunnel"


def _find() -> pathlib.Path | None:
    exe = _exe()
    if not all((exe.parent / k).is_file() for k in KEPT):
        return None
    return exe if stamp_matches(exe.parent / STAMP_NAME, VERSIONS["ztunnel"], exe) else None


def _cargo() -> str:
    cargo = shutil.which("cargo") or str(pathlib.Path.home() / ".cargo" / "bin" / "cargo")
    if not os.access(cargo, os.X_OK):
        raise InstallError("the Rust toolchain (`cargo`) is not on PATH; it builds ztunnel. Install it "
                           "with rustup (https://rustup.rs) and put ~/.cargo/bin on PATH.")
    return cargo


def _install() -> pathlib.Path:
    t0 = time.monotonic()
    cargo = _cargo()
    if which_or(["/usr/bin/protoc"], "protoc") is None:
        apt_install({"protobuf-compiler": None}, "protoc (ztunnel's build.rs compiles its xDS protos)")
    root = ztunnel_dir()
    src = root / "src"
    if src.exists():
        shutil.rmtree(src)
    untar(third_party_tarball("ztunnel"), src)
    if not (src / "Cargo.toml").is_file():
        # ../shared/third_party's snapshot keeps GitHub's top folder (ztunnel-<commit>/); the
        # repacked download does not
        tops = [p for p in src.iterdir() if p.is_dir()]
        if len(tops) != 1 or not (tops[0] / "Cargo.toml").is_file():
            raise InstallError(f"no Cargo.toml in the ztunnel snapshot ({src})")
        src = tops[0]
    toml = src / "Cargo.toml"
    toml.write_text(cargo_toml_without_git_dependency(toml.read_text()))
    env = {**os.environ, "CARGO_HOME": str(cache_dir() / "cargo"), "CARGO_TARGET_DIR": str(root / "target"),
           "CARGO_TERM_COLOR": "never"}
    log("cargo build --release ztunnel (about 6 min cold on 2 idle cores, more on a busy machine)")
    t_build = time.monotonic()
    run([cargo, "build", "--release", *CARGO_FEATURES], env=env, cwd=src, timeout=7200, what="building ztunnel")
    build_s = time.monotonic() - t_build
    exe = _exe()
    exe.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / "target" / "release" / "ztunnel", exe)
    for name, rel in KEPT.items():
        (exe.parent / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, exe.parent / name)
    out = run([str(exe), "version"], timeout=60, what="ztunnel version")
    text = re.sub(r"\s+", " ", out.stdout + out.stderr).strip()
    if "tls-ring" not in text:
        raise InstallError(f"unexpected `ztunnel version` output: {text}")
    shutil.rmtree(root / "src")  # the snapshot keeps the sources; target/ keeps cargo's incremental state
    write_stamp(exe.parent / STAMP_NAME, VERSIONS["ztunnel"], exe, build_seconds=round(build_s, 1),
                install_seconds=round(time.monotonic() - t0, 1), version_output=text)
    return exe


REGISTRY: dict[str, Component] = {
    "ztunnel": Component("ztunnel", _find, _install),
    "iptables": apt_tool("iptables", "iptables"),
}
