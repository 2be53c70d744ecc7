"""``python -m authproxy_local.engine`` (`make engine`): see :mod:`authproxy_local.engine.scenario`."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from lightkube import ApiError

from authproxy_local import install
from authproxy_local.cluster.stacks import StackError, sdk_plugin_pairs
from authproxy_local.core.processes import HarnessError

from .checks import EngineError, log
from .scenario import STACKS, Engine, StackRun, preview_scaling


def summary_line(runs: list[StackRun]) -> str:
    """The run's last line (every number asserted on the servers before it is printed)."""
    return (f"engine: {len(runs)} stacks up (awaited), {sum(r.resources for r in runs)} resources, "
            f"{sum(r.rollouts for r in runs)} rollouts observed, 0 changes on re-preview, 0 left after destroy")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m authproxy_local.engine",
                                 description="the stacks through the real Pulumi engine, providers and servers")
    ap.add_argument("--stack", action="append", help="only these stacks (default: all)")
    ap.add_argument("--scaling", type=int, nargs="*", help="also time `pulumi preview` for N generated apps")
    ap.add_argument("--no-faults", action="store_true",
                    help="skip the fault checks (faster; the checked-in faults need about 5 minutes)")
    ap.add_argument("--interrupt", action="store_true",
                    help="also kill `pulumi up` halfway on the first stack and recover (refresh + up)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, state) afterwards")
    args = ap.parse_args(argv)
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the servers this run started stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="authproxy-engine-"))
    log(f"work dir {work}")
    try:
        install.ensure("redis-ha-chart")  # before anything starts: a clear error if it cannot be had
        engine = Engine(work)
        with engine.running():
            for pair in sdk_plugin_pairs():
                log(pair)
            t_invalid = time.monotonic()
            engine.check_invalid_config()
            t_invalid = time.monotonic() - t_invalid
            runs = [engine.run_stack(s, base, ov, () if args.no_faults else faults, args.interrupt and i == 0)
                    for i, (s, base, ov, faults) in enumerate(
                        x for x in STACKS if not args.stack or x[0] in args.stack)]
            scaling = preview_scaling(engine, args.scaling) if args.scaling else []
        for row in scaling:
            print(f"| {row['apps']} | {row['resources']} | {row['seconds']} |")
        for r in runs:
            log(f"{r.name}: {r.resources} resources, {r.rollouts} rollouts; "
                + ", ".join(f"{k} {v:.0f}s" for k, v in r.timings.items()))
        log("start-up: " + ", ".join(f"{k} {v:.0f}s" for k, v in engine.timings.items()))
        log(f"invalid config {t_invalid:.0f}s; stacks {sum(r.timings['stack'] for r in runs):.0f}s; "
            f"total {time.monotonic() - t0:.0f}s")
        for pair in sdk_plugin_pairs():
            print(pair)
        for r in runs:
            for line in r.faults:
                print(f"fault ({r.name}): {line}")
        if not args.stack:
            print(engine.proof.summary())
        print(summary_line(runs))
        return 0
    except install.InstallError as e:
        if ci:
            print(f"engine: FAILED (CI=true, a component is missing): {e}", file=sys.stderr)
            return 1
        print(f"engine: skipped, a component is missing (CI=true makes this fail): {e}")
        return 0
    except (EngineError, StackError, HarnessError, ApiError) as e:  # ApiError: an unexpected API answer
        print(f"engine: FAILED: {e}\n(logs in {work})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
