"""Envoy processes: a bootstrap written to the run directory, checked with ``envoy --mode
validate`` (a field upstream Envoy rejects fails with Envoy's own message naming it, instead of a
dead process), then started; the readiness check (admin ``/ready`` and the listeners open); and
its counters (admin ``/stats``).

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.install`, PyYAML.
"""

from __future__ import annotations

import subprocess
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from authproxy_local import install
from authproxy_local.core.processes import HarnessError, Process, http_ok, tcp_open

Addr = tuple[str, int]


class EnvoyError(HarnessError):
    """Envoy rejected a bootstrap; the message carries Envoy's own words."""


def listen_addrs(boot: Mapping[str, Any]) -> list[Addr]:
    """The (address, port) of every listener of a static bootstrap."""
    return [(sa["address"], sa["port_value"]) for lst in boot["static_resources"]["listeners"]
            if "address" in lst  # internal listeners have none
            for sa in [lst["address"]["socket_address"]]]


def start(name: str, boot: Mapping[str, Any], directory: Path, *, what: str = "",
          args: Sequence[str] = (), cpu: int | None = None, log_level: str = "info",
          prefix: Sequence[str] = ()) -> Process:
    """Write ``boot`` to ``<directory>/<name>.yaml``, validate it and start Envoy on it (log
    ``<name>.log``; pinned to ``cpu`` with taskset when given; ``prefix`` runs it under another
    command, e.g. ``ip netns exec <ns>``). Does not wait for readiness."""
    exe = str(install.ensure("envoy"))
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(boot), sort_keys=False))
    check = subprocess.run([exe, "--mode", "validate", "-c", str(path)], capture_output=True, text=True,
                           timeout=120)
    if check.returncode != 0:
        (directory / f"{name}-validate.log").write_text(check.stdout + check.stderr)
        raise EnvoyError(f"Envoy rejected the {what or name} bootstrap:\n" + (check.stderr or check.stdout)[-3000:])
    cmd = [exe, "-c", str(path), "--disable-hot-restart", "--log-level", log_level, *args]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    cmd = [*prefix, *cmd]
    return Process(name, cmd, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, directory / f"{name}.log").start()


def ready(admin: Addr, listeners: Sequence[Addr]) -> bool:
    """Envoy's admin says ready and every given listener accepts connections."""
    return http_ok(f"http://{admin[0]}:{admin[1]}/ready") and all(tcp_open(a) for a in listeners)


def parse_stats(text: str) -> dict[str, int]:
    """Envoy admin ``/stats`` text (counters and gauges ``name: 123``); histograms skipped."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.strip().isdigit():
            out[name.strip()] = int(value)
    return out


def admin_stats(admin: Addr, pattern: str, timeout: float = 10) -> dict[str, int]:
    """The counters and gauges of the Envoy whose admin is at ``admin`` whose names match the
    regex ``pattern`` (straight to loopback: no proxy from the environment)."""
    url = f"http://{admin[0]}:{admin[1]}/stats?filter={urllib.parse.quote(pattern)}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as r:
        return parse_stats(r.read().decode())
