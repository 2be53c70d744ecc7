"""``python -m authproxy_local.together NAME=COMMAND ...``: run commands side by side (`make live`,
the e2e and engine halves of `make test`), each line of their output prefixed with ``NAME | ``.

Both suites spend most of their time waiting on their own servers (Keycloak, kube-apiserver,
rollouts, `pulumi up`), and they share no port, file or network namespace (each picks free
ports, its own run or work directory), so together they take about as long as the longer one.
The exit status is 0 only if every command exits 0; the last lines name each command with its
exit status and wall time, so a red run says which half failed. SIGINT/SIGTERM are passed on to
each command's process group (pytest and the engine stop their servers on either).

Imports: the standard library only (a scenario runner; nothing imports it).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import IO

_out_lock = threading.Lock()


def _pump(name: str, stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        with _out_lock:
            sys.stdout.write(f"{name} | {line}\n")
            sys.stdout.flush()


def parse(argv: list[str]) -> list[tuple[str, list[str]]]:
    """``NAME=COMMAND`` arguments -> (name, argv); a clear error for anything else."""
    out = []
    for arg in argv:
        name, sep, cmd = arg.partition("=")
        if not sep or not name or not cmd.strip():
            raise SystemExit(f"together: expected NAME=COMMAND, got {arg!r}")
        out.append((name, shlex.split(cmd)))
    if not out:
        raise SystemExit("together: no commands given (NAME=COMMAND ...)")
    return out


def run(commands: list[tuple[str, list[str]]]) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    pumps = []
    ended: dict[str, float] = {}
    for name, argv in commands:
        # Own session: a signal to this runner reaches each command's whole process tree once.
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, start_new_session=True)
        procs.append((name, p))
        assert p.stdout is not None
        t = threading.Thread(target=_pump, args=(name, p.stdout), daemon=True)
        t.start()
        pumps.append(t)

    def forward(signum: int, _frame: object) -> None:
        for _, p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        pending = dict(procs)
        while pending:
            for name, p in list(pending.items()):
                if p.poll() is not None:
                    ended[name] = time.monotonic() - t0
                    del pending[name]
            time.sleep(0.5)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    for t in pumps:
        t.join(timeout=10)
    failed = [name for name, p in procs if p.returncode != 0]
    for name, p in procs:
        state = "ok" if p.returncode == 0 else f"FAILED (exit {p.returncode})"
        print(f"together: {name} {state} in {ended[name]:.0f}s ({shlex.join(dict(commands)[name])})")
    print(f"together: {len(procs)} commands in {time.monotonic() - t0:.0f}s"
          + (f"; FAILED: {', '.join(failed)}" if failed else "; all passed"), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run(parse(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
