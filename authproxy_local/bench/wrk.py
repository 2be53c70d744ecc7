"""wrk: its report parsed (:func:`parse_wrk`) and the Lua script that sets the request headers.

Imports: the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def latency_ms(text: str) -> float:
    """wrk's latency notation ('845.00us', '1.23ms', '1.02s', '2.00m') in milliseconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s|m|h)\s*", text)
    if not m:
        raise ValueError(f"not a wrk latency: {text!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int
    non_2xx_3xx: int


def parse_wrk(text: str) -> WrkResult:
    """The numbers of a ``wrk --latency`` report. Fails on output without the latency
    distribution (run without ``--latency``) or without a request count."""
    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", text, re.M))
    if set(dist) != {"50", "75", "90", "99"}:
        raise ValueError("wrk output has no latency distribution (run wrk with --latency)")
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", text, re.M)
    if not m:
        raise ValueError("wrk output has no 'N requests in T' line")
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    lat = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    seconds = latency_ms(m.group(2) + m.group(3)) / 1000
    requests = int(m.group(1))
    return WrkResult(
        requests=requests,
        seconds=seconds,
        rps=float(rps.group(1)) if rps else requests / seconds,
        p50_ms=latency_ms(dist["50"]),
        p75_ms=latency_ms(dist["75"]),
        p90_ms=latency_ms(dist["90"]),
        p99_ms=latency_ms(dist["99"]),
        max_ms=latency_ms(lat.group(3)) if lat else float("nan"),
        socket_errors=sum(int(x) for x in errs.groups()) if errs else 0,
        non_2xx_3xx=int(non.group(1)) if non else 0,
    )


def wrk_script(headers: Mapping[str, str]) -> str:
    """A wrk Lua script that only sets request headers (wrk then builds the request once; no Lua
    runs per request). Values are Lua long strings, so no escaping is needed."""
    lines = []
    for k, v in headers.items():
        if "]==]" in v or "\n" in v or "\n" in k:
            raise ValueError(f"header {k!r} cannot go into a wrk script")
        lines.append(f'wrk.headers["{k}"] = [==[{v}]==]')
    return "\n".join(lines) + "\n"


