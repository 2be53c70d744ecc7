"""The installer's plumbing: errors, logging, running commands, checksums, stamps, archives, apt.

Imports: the standard library and :mod:`.versions`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .versions import APT_LISTS_DIR


class InstallError(RuntimeError):
    """A component could not be found or installed; the message says how to fix it."""


class ChecksumError(InstallError):
    """A downloaded file does not match its published checksum."""


def log(msg: str) -> None:
    print(f"[authproxy-install] {msg}", file=sys.stderr, flush=True)


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
def run(cmd: list[str], *, env: Mapping[str, str] | None = None, cwd: pathlib.Path | None = None,
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



def require_go() -> str:
    go = shutil.which("go")
    if not go:
        raise InstallError(
            "the Go toolchain (`go`) is not on PATH; it is needed to build oauth2-proxy and istioctl. "
            "Install Go >= 1.25 and put its bin directory on PATH "
            "(Debian bookworm's golang-go package is too old)."
        )
    return go


def go_version(go: str) -> str:
    out = run([go, "env", "GOVERSION"], what="go").stdout.strip()
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
        log("apt-get update")
        run(["apt-get", "update"], env=env, timeout=600, what="apt-get update")
        _apt_updated = True

    if not _apt_updated and not _apt_lists_fresh():
        update()
    pinned = [f"{n}={v}" if v else n for n, v in packages.items()]
    for _attempt in range(3):
        try:
            log(f"apt-get install {' '.join(pinned)}")
            run(base + pinned, env=env, timeout=1800, what=f"installing {names}")
            return
        except InstallError as e:
            msg = str(e)
            if "was not found" in msg or "Version '" in msg:
                log(f"warning: pinned Debian version(s) not served any more, installing current: {names}")
                pinned = list(packages)
                continue
            if ("Unable to locate package" in msg or "has no installation candidate" in msg) and not _apt_updated:
                update()
                continue
            raise
    raise InstallError(f"could not install Debian package(s) {names}")


def which_or(path_candidates: Iterable[str], name: str) -> pathlib.Path | None:
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



def untar(tarball: pathlib.Path, dest: pathlib.Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tf:
        tf.extractall(dest, filter="data")
