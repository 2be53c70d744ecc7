"""The oauth2-proxy profile's pure parts (authproxy_local/bench/proxy_profile.py): perf's call chains,
shares per function and per area, kernel frames."""

from __future__ import annotations

import pytest

from authproxy_local.bench import proxy_profile as pp

PERF = """
\t  ffffffff8158c3e1
\t            4a1000
\t            4b2000

\t            4c3000
\t            4b2000

\t            4d4000
"""

NAMES = {0x4A1000: "crypto/sha256.block", 0x4B2000: "crypto/hmac.(*hmac).Sum",
         0x4C3000: "github.com/redis/go-redis/v9.(*Client).Get", 0x4D4000: "runtime.mallocgc"}


def test_parse_perf_script_gives_one_chain_per_sample_leaf_first():
    chains = pp.parse_perf_script(PERF)
    assert chains == [[0xFFFFFFFF8158C3E1, 0x4A1000, 0x4B2000], [0x4C3000, 0x4B2000], [0x4D4000]]


def test_summarize_shares_self_inclusive_and_areas():
    chains = pp.parse_perf_script(PERF)
    names = {**NAMES, 0xFFFFFFFF8158C3E1: pp.KERNEL}
    p = pp.summarize(chains, names)
    assert p.samples == 3
    assert dict(p.self_share) == pytest.approx({pp.KERNEL: 1 / 3, "github.com/redis/go-redis/v9.(*Client).Get": 1 / 3,
                                               "runtime.mallocgc": 1 / 3})
    assert dict(p.inclusive_share)["crypto/hmac.(*hmac).Sum"] == pytest.approx(2 / 3)
    areas = dict(p.areas)
    assert areas["session cookie: HMAC-SHA256 signature check"] == pytest.approx(2 / 3)
    assert areas["Redis client (go-redis)"] == pytest.approx(1 / 3)
    assert areas["garbage collection and allocation"] == pytest.approx(1 / 3)
    assert areas["in the kernel (TCP over loopback, epoll, futex)"] == pytest.approx(1 / 3)
    md = pp.markdown(p, per_check_us=300)
    assert "| Redis client (go-redis) | 33% | 100 |" in md and "3 samples." in md


def test_summarize_of_nothing_is_empty():
    p = pp.summarize([], {})
    assert p.samples == 0 and all(share == 0 for _, share in p.areas)


def test_addresses_in_the_binary_are_moved_by_its_load_base_and_vdso_is_named():
    text = "\tffffffff81000130 ([kernel.kallsyms])\n\t  31061c (/x/bin/oauth2-proxy)\n\t  7ffd (/x/[vdso])\n"
    assert pp.parse_perf_script(text, 0x400000, "oauth2-proxy") == [[0xFFFFFFFF81000130, 0x71061C, pp.VDSO]]


def test_load_base_of_a_real_elf(tmp_path):
    import sys
    from pathlib import Path

    exe = Path(sys.executable).resolve()
    assert pp.load_base(exe) >= 0
    bad = tmp_path / "x"
    bad.write_bytes(b"not an elf")
    with pytest.raises(ValueError):
        pp.load_base(bad)
