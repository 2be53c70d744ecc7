"""Guards against regressions in how the program scales with the number of apps.

Bounds are generous (the measured numbers are in docs/benchmarks.md): 100 apps must stay under
10 s (the target) on this 2-core machine, and the cost of going from 100 to 200 apps must stay
close to the cost of going from 1 to 100 (linear growth; a quadratic step would double it)."""

import pytest

from authproxy_local.render.scaling import generated_config, measure


def test_generated_apps_cover_every_code_path():
    apps = generated_config(15)["apps"]
    assert any(a.get("groups") for a in apps)
    assert any(a.get("apiClients") for a in apps)
    assert any(a.get("publicPaths") for a in apps)
    assert len({a["host"] for a in apps}) == 15


@pytest.mark.timing  # runs alone (`make unit`): other tests on the other core would skew its times
def test_program_scales_linearly_and_100_apps_take_under_10s():
    # Each point is the faster of two runs (interleaved): other load on a shared machine only ever
    # adds time, and one slow 1-app run made the 1 -> 100 step look negative.
    runs = [measure(n) for _ in range(2) for n in (1, 100, 200)]
    one, hundred, two_hundred = (min((r for r in runs if r["apps"] == n), key=lambda r: r["seconds"])
                                 for n in (1, 100, 200))
    assert hundred["resources"] > one["resources"] + 99  # every app adds resources
    assert hundred["seconds"] < 10.0, hundred
    step1 = hundred["seconds"] - one["seconds"]  # 99 apps
    step2 = two_hundred["seconds"] - hundred["seconds"]  # 100 apps
    assert step2 < 1.6 * step1 + 1.0, (one, hundred, two_hundred)
    assert two_hundred["peak_mib"] < 1024
