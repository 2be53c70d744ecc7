"""Guards against regressions in how the program scales with the number of apps.

Measured in CPU time of the program run, not wall time: on the shared 2-core machine other load
stretches wall time 2-3x but CPU time far less. Numbers and the full table are in
docs/benchmarks.md. 100 apps must stay under the 10 s budget, and the average CPU cost per resource
must not grow from 100 to 200 apps (linear growth; a quadratic step nearly doubles it)."""

import pytest

from authproxy_local.render.scaling import generated_config, measure

SIZES = (100, 200)
REPEAT = 3
ATTEMPTS = 3

# Average CPU seconds per resource at 200 apps over that at 100 apps. Linear growth (a fixed cost
# plus a cost per resource) can only lower the average as resources are added: <= 1; measured
# 0.84-1.01 in 10 runs at load 12-26 on the 2-core machine (2026-12-03). A purely quadratic cost
# doubles it (1248 / 648 resources = 1.93); a per-app policy listing every app (about 60% of the
# CPU at 200 apps) measured 1.39-1.44. 1.25 leaves 25% above the linear ceiling for CPU-time noise
# under load (up to ~15% per run), and fails once a quadratic term is about half the CPU time at
# 200 apps.
MAX_GROWTH = 1.25


def test_generated_apps_cover_every_code_path():
    apps = generated_config(15)["apps"]
    assert any(a.get("groups") for a in apps)
    assert any(a.get("apiClients") for a in apps)
    assert any(a.get("publicPaths") for a in apps)
    assert len({a["host"] for a in apps}) == 15


def per_resource(run: dict) -> float:
    return run["cpu_seconds"] / run["resources"]


def best_runs() -> tuple[dict, dict]:
    # Interleaved so a burst of load hits one repetition of every size, not every repetition of
    # one size; the fastest run per size is the one least disturbed (load only ever adds time).
    runs = [measure(n) for _ in range(REPEAT) for n in SIZES]
    hundred, two_hundred = (min((r for r in runs if r["apps"] == n), key=lambda r: r["cpu_seconds"])
                            for n in SIZES)
    return hundred, two_hundred


@pytest.mark.timing  # runs alone (`make unit`): other tests on the other core would skew its times
def test_program_scales_linearly_and_100_apps_take_under_10s():
    # A real regression exceeds the bound every time; noise on a loaded machine rarely does twice:
    # the test fails only if every one of ATTEMPTS measurements exceeds it.
    seen = []
    for _ in range(ATTEMPTS):
        hundred, two_hundred = best_runs()
        assert two_hundred["resources"] > hundred["resources"] + 99  # every app adds resources
        assert two_hundred["peak_mib"] < 1024
        growth = per_resource(two_hundred) / per_resource(hundred)
        print(f"CPU s: {hundred['cpu_seconds']:.2f} / {two_hundred['cpu_seconds']:.2f} (100/200 apps); "
              f"per-resource growth {growth:.2f}")
        seen.append((growth, hundred, two_hundred))
        if growth < MAX_GROWTH and hundred["cpu_seconds"] < 10.0:
            return
    raise AssertionError(f"in each of {ATTEMPTS} measurements the CPU cost per resource grew by more "
                         f"than {MAX_GROWTH}x from 100 to 200 apps, or 100 apps took 10 s or more: {seen}")
