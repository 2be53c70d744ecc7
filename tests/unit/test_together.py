"""`make live` (authproxy_local.together): the e2e and engine halves side by side; a failure of
either fails the run and is named, every output line says which half printed it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from authproxy_local import together


def test_prefixes_every_line_and_passes_when_all_pass(capfd: pytest.CaptureFixture[str]) -> None:
    rc = together.run(together.parse(["a=sh -c 'echo one; echo two'", "b=echo three"]))
    out = capfd.readouterr().out
    assert rc == 0
    assert {"a | one", "a | two", "b | three"} <= set(out.splitlines())
    assert "all passed" in out


def test_one_failing_command_fails_the_run_and_is_named(capfd: pytest.CaptureFixture[str]) -> None:
    rc = together.run(together.parse(["e2e=true", "engine=sh -c 'exit 3'"]))
    out = capfd.readouterr().out
    assert rc == 1
    assert "together: engine FAILED (exit 3)" in out
    assert "together: e2e ok" in out
    assert out.rstrip().endswith("FAILED: engine")


def test_runs_side_by_side_not_one_after_the_other() -> None:
    t0 = time.monotonic()
    assert together.run(together.parse(["a=sleep 2", "b=sleep 2"])) == 0
    assert time.monotonic() - t0 < 3.5


def test_bad_arguments_say_what_is_expected() -> None:
    with pytest.raises(SystemExit, match="NAME=COMMAND"):
        together.parse(["make e2e"])
    with pytest.raises(SystemExit, match="no commands"):
        together.parse([])


def test_sigterm_reaches_every_command() -> None:
    """A CI timeout's SIGTERM stops both halves (each in its own process group) and fails the run."""
    code = ("import sys; from authproxy_local import together; "
            "sys.exit(together.main(['a=sleep 60', 'b=sleep 60']))")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 1
    assert "together: a FAILED (exit -15)" in out and "together: b FAILED (exit -15)" in out
