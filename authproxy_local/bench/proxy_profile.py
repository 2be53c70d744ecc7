"""Where oauth2-proxy's CPU goes per check: a CPU profile of the real binary under the bench's load.

oauth2-proxy v7 has no pprof endpoint, and the released binary is stripped; Go still keeps its
function table (``.gopclntab``) in a stripped binary, so the profile is taken with Linux ``perf``
(frame-pointer call chains, which Go keeps on amd64) and its addresses are named with
``go tool addr2line``. Used by ``python -m authproxy_local.bench --profile-proxy SECONDS``:
the bench runs the signed-in path at 16 connections for that long while ``perf`` samples the
oauth2-proxy process, then reports the share of samples per function (self and inclusive) and
per area (:data:`AREAS`). Proportions of a CPU profile stay meaningful when other load shares
the machine: they are shares of oauth2-proxy's own samples.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KERNEL = "[kernel]"
KERNEL_START = 0xFFFF_8000_0000_0000
"""Addresses from here up are the kernel's (x86-64): named :data:`KERNEL`."""

AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("session cookie: HMAC-SHA256 signature check", ("crypto/hmac.", "crypto/sha256.", "crypto/internal/fips140/hmac.",
                                                      "crypto/internal/fips140/sha256.")),
    ("session: AES decryption of the ticket / session", ("crypto/aes.", "crypto/cipher.",
                                                         "crypto/internal/fips140/aes")),
    ("Redis client (go-redis)", ("github.com/redis/go-redis/",)),
    ("session decoding (msgpack, lz4, JSON)", ("github.com/vmihailenco/msgpack", "github.com/pierrec/lz4",
                                               "encoding/json.")),
    ("oauth2-proxy request handling (own code)", ("github.com/oauth2-proxy/",)),
    ("Go HTTP server (parsing, headers, writing)", ("net/http.", "net/textproto.", "bufio.")),
    ("garbage collection and allocation", ("runtime.gcBgMarkWorker", "runtime.mallocgc", "runtime.gcDrain",
                                           "runtime.scanobject", "runtime.bgsweep", "runtime.gcAssistAlloc")),
    ("network syscalls and scheduler", ("syscall.", "internal/poll.", "runtime.netpoll", "runtime.schedule",
                                        "runtime.findRunnable", "runtime.futex", "runtime.mcall")),
    ("in the kernel (TCP over loopback, epoll, futex)", (KERNEL,)),
)
"""Areas by function-name prefix; a sample counts for every area on its call chain (inclusive)."""


@dataclass(frozen=True)
class Profile:
    samples: int
    self_share: list[tuple[str, float]]
    """(function, share of samples with it on top), largest first."""
    inclusive_share: list[tuple[str, float]]
    """(function, share of samples with it anywhere on the chain), largest first."""
    areas: list[tuple[str, float]]
    """(area, inclusive share), in :data:`AREAS` order."""


VDSO = 1
"""Stand-in address for frames in the vDSO."""


def load_base(binary: Path) -> int:
    """Virtual address minus file offset of an ELF64 executable's first ``PT_LOAD`` segment:
    perf prints addresses in a binary it has no symbols for relative to that mapping."""
    import struct

    data = binary.read_bytes()[:4096]
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError(f"{binary} is not an ELF64 file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type, _flags, p_offset, p_vaddr = struct.unpack_from("<IIQQ", data, off)
        if p_type == 1:
            return int(p_vaddr - p_offset)
    raise ValueError(f"{binary} has no PT_LOAD segment")


def parse_perf_script(text: str, base: int = 0, binary_name: str = "") -> list[list[int]]:
    """``perf script -F ip,dso`` of a call-graph recording: one call chain (leaf first) per
    sample, samples separated by blank lines. Addresses in ``binary_name`` (perf prints them
    relative to the mapping) get ``base`` added; vDSO frames become :data:`VDSO`."""
    out: list[list[int]] = []
    cur: list[int] = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            if cur:
                out.append(cur)
                cur = []
            continue
        parts = s.split(None, 1)
        try:
            addr = int(parts[0], 16)
        except ValueError:
            continue
        dso = parts[1] if len(parts) > 1 else ""
        if "[vdso]" in dso:
            addr = VDSO
        elif addr < KERNEL_START and binary_name and binary_name in dso:
            addr += base
        cur.append(addr)
    if cur:
        out.append(cur)
    return out


def symbolize(binary: Path, addrs: Iterable[int], go: str = "go") -> dict[int, str]:
    """Function names of ``addrs`` in a Go binary (``go tool addr2line``: works on stripped
    binaries, reading the function table Go always keeps)."""
    every = set(addrs)
    kernel = {a: KERNEL for a in every if a >= KERNEL_START}
    if VDSO in every:
        kernel[VDSO] = "[vdso]"
    uniq = sorted(every - set(kernel))
    if not uniq:
        return kernel
    r = subprocess.run([go, "tool", "addr2line", str(binary)], input="".join(f"0x{a:x}\n" for a in uniq),
                       capture_output=True, text=True, timeout=300, check=True)
    lines = r.stdout.splitlines()
    names = lines[0::2]  # addr2line prints "function\nfile:line" per address
    return {**kernel, **{a: (n if n and n != "?" else f"0x{a:x}") for a, n in zip(uniq, names, strict=False)}}


def summarize(chains: Sequence[Sequence[int]], names: Mapping[int, str], top: int = 15,
              areas: Sequence[tuple[str, tuple[str, ...]]] = AREAS) -> Profile:
    n = len(chains)
    selfc: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    area_c: Counter[str] = Counter()
    for chain in chains:
        fns = [names.get(a, f"0x{a:x}") for a in chain]
        if not fns:
            continue
        selfc[fns[0]] += 1
        seen = set(fns)
        for f in seen:
            incl[f] += 1
        for area, prefixes in areas:
            if any(f.startswith(prefixes) for f in seen):
                area_c[area] += 1

    def share(c: int) -> float:
        return c / n if n else 0.0

    return Profile(
        samples=n,
        self_share=[(f, share(c)) for f, c in selfc.most_common(top)],
        inclusive_share=[(f, share(c)) for f, c in incl.most_common(top)],
        areas=[(a, share(area_c[a])) for a, _ in areas],
    )


def record(pid: int, seconds: float, out: Path, frequency: int = 999) -> None:
    """``perf record`` of one process with frame-pointer call chains."""
    perf = shutil.which("perf")
    if perf is None:
        raise RuntimeError("perf is not installed (Debian: apt-get install linux-perf)")
    subprocess.run([perf, "record", "-q", "-F", str(frequency), "-g", "-p", str(pid), "-o", str(out),
                    "--", "sleep", f"{seconds:g}"], check=True, capture_output=True, timeout=seconds + 120)


def profile(binary: Path, data: Path, top: int = 15) -> Profile:
    perf = shutil.which("perf") or "perf"
    r = subprocess.run([perf, "script", "-i", str(data), "-F", "ip,dso"], capture_output=True, text=True,
                       timeout=600, check=True)
    chains = parse_perf_script(r.stdout, load_base(binary), binary.name)
    names = symbolize(binary, (a for c in chains for a in c))
    return summarize(chains, names, top=top)


def markdown(p: Profile, per_check_us: float | None = None) -> str:
    """The profile as two tables: areas (inclusive), top functions (self and inclusive)."""
    def us(share: float) -> str:
        return f" | {share * per_check_us:.0f}" if per_check_us else ""
    head_us = " | ≈ µs per check" if per_check_us else ""
    sep_us = " | ---:" if per_check_us else ""
    out = [f"{p.samples} samples.", "", f"| area (inclusive) | share of oauth2-proxy's CPU{head_us} |",
           f"| --- | ---:{sep_us} |"]
    out += [f"| {a} | {s * 100:.0f}%{us(s)} |" for a, s in p.areas]
    out += ["", "| function (self) | share |", "| --- | ---: |"]
    out += [f"| `{f}` | {s * 100:.1f}% |" for f, s in p.self_share]
    return "\n".join(out)
