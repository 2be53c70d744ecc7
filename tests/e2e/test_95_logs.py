"""After everything else in a mode: no secret of the run appears in any log or file the harness
keeps (the run's log directory: component logs, envoy.yaml, harness.log) nor in the logs of the
run's pulumi commands (`pulumi up` and the rest)."""

from __future__ import annotations

from authproxy_local.harness import Harness


def test_no_secret_in_the_run_logs(live: Harness) -> None:
    secrets = {v for v in live.secret_values() if len(v) >= 8}
    secrets.add(live.keycloak_admin_password)
    secrets.add(live.extras["machine_secret"])
    files = [p for p in live.run_dir.rglob("*") if p.is_file()]
    assert files, "the run keeps logs"
    assert live.stack_up is not None
    pulumi_logs = live.stack_up.log_files()
    assert any("-up-" in p.name for p in pulumi_logs), pulumi_logs
    files += pulumi_logs
    leaks = []
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        leaks += [f"{path.name}: {s[:4]}..." for s in secrets if s in text]
    assert not leaks, leaks
