"""The machine around a run: CPU layout and per-process / per-core CPU time (psutil), pinning,
Redis counters, versions and facts.

Imports: the standard library, psutil, :mod:`authproxy_local.install`, :mod:`.model`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import platform
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from .model import BenchError


def cpu_layout(cpus: Iterable[int]) -> tuple[int, int]:
    """(load generator CPU, system-under-test CPU): the first two CPUs this process may use; one
    CPU only: both on it."""
    cs = sorted(cpus)
    if not cs:
        raise ValueError("no CPU available")
    return cs[0], cs[1] if len(cs) > 1 else cs[0]


def parse_commandstats(info: str) -> dict[str, int]:
    """``INFO commandstats`` -> {command: calls}."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^cmdstat_([^:]+):calls=(\d+)", info, re.M)}


def parse_info_int(info: str, key: str) -> int:
    """One integer field of a Redis ``INFO`` reply."""
    m = re.search(rf"^{re.escape(key)}:(\d+)", info, re.M)
    if not m:
        raise ValueError(f"no {key} in the INFO reply")
    return int(m.group(1))


def jwt_claims(token: str) -> dict[str, Any]:
    """A JWT's payload, not verified (only to report its size and audience)."""
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))




def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def core_times(cpu: int) -> tuple[float, float]:
    """(busy, total) seconds of one CPU since boot (iowait counts as idle)."""
    per_cpu = psutil.cpu_times(percpu=True)
    if cpu >= len(per_cpu):
        raise BenchError(f"no CPU {cpu} (this machine has {len(per_cpu)})")
    t = per_cpu[cpu]
    total = float(sum(t))
    return total - t.idle - getattr(t, "iowait", 0.0), total


def group_pids(leader: int) -> list[int]:
    """The processes of ``leader``'s process group (kc.sh and its java child, for example)."""
    out = []
    for p in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(p.pid) == leader:
                out.append(p.pid)
    return out or [leader]


def _pin_threads(pid: int, cpu: int) -> None:
    with contextlib.suppress(psutil.Error):
        for t in psutil.Process(pid).threads():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(t.id, {cpu})


def pin(pid: int, cpu: int) -> None:
    """Every thread of every process in ``pid``'s process group onto ``cpu`` (what
    ``taskset -a -p -c CPU PID`` does per process)."""
    for p in group_pids(pid):
        _pin_threads(p, cpu)


def pin_self(cpu: int) -> None:
    _pin_threads(os.getpid(), cpu)


def _version(cmd: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1) if m else (out.stdout + out.stderr).strip().splitlines()[0][:80]


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory": mem, "kernel": platform.release(),
            "python": platform.python_version()}


def versions() -> dict[str, str]:
    from authproxy_local import install

    return {
        "envoy": _version([str(install.ensure("envoy")), "--version"], r"/(\d+\.\d+\.\d+)/"),
        "oauth2-proxy": _version([str(install.ensure("oauth2-proxy")), "--version"], r"(v\d+\.\d+\.\d+)"),
        "go (oauth2-proxy build)": _version([str(install.ensure("oauth2-proxy")), "--version"],
                                            r"(go\d+\.\d+(?:\.\d+)?)"),
        "redis": _version([str(install.ensure("redis")), "--version"], r"v=(\S+)"),
        "keycloak": Path(str(install.ensure("keycloak"))).name.removeprefix("keycloak-"),
        "wrk": _version([str(install.ensure("wrk")), "-v"], r"(wrk \S+)"),
    }


