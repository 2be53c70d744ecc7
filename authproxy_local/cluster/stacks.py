"""The Pulumi project on this machine and its stacks, through ``pulumi.automation``.

    project = Project(work)                        # project copy, file backend, plugins on PATH
    stack = project.stack("dev", base="dev")       # pulumi stack init (from Pulumi.dev.yaml)
    project.set_config(stack, {"keycloak": {"url": ...}}, secrets={"keycloakAdminPassword": ...})
    project.write_config(stack, values)            # or: the whole config block at once
    project.preview(stack)  /  project.up(stack)  /  project.destroy(stack)
    project.resources(stack), project.outputs(stack), project.state_text(stack)

What ``pulumi.automation`` does not do is raw CLI here, each for a reason:

- ``config set --secret``: the Automation API passes the value on the command line (visible in
  ``/proc`` to every user of the machine); :meth:`Project.set_secret` sends it on stdin;
- the state as the backend stores it (:meth:`Project.state_text`): the file backend's own file;
  the Automation API only exports with secrets shown;
- killing ``pulumi up`` halfway and the recovery a user does then (``refresh
  --import-pending-creates``): :meth:`Project.cli` runs the process itself (the ``make engine``
  interrupt check).

Every command's output goes to ``<work>/logs/NNN-<command>-<stack>.log``, except output that
carries secrets (outputs with secrets shown, the exported state).

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.install`, ``components.config``,
``pulumi.automation``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from authproxy_local import install
from authproxy_local.core.paths import REPO
from components.config import NAMESPACE, flatten_values

PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "components", "preflight", "policy")
PLUGINS = ("random", "keycloak", "kubernetes")


class StackError(RuntimeError):
    """A pulumi command failed; the message says which and where its log is."""


@dataclass
class Step:
    op: str
    urn: str

    @property
    def name(self) -> str:
        return self.urn.split("::")[-1]


def changes(steps: list[Step]) -> list[tuple[str, str]]:
    """(op, resource name) of every step that changes something."""
    return sorted((s.op, s.name) for s in steps if s.op not in ("same", "read"))


def run_group(cmd: list[str], env: Mapping[str, str], cwd: Path, timeout: float,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """subprocess.run in a process group of its own: when this run is interrupted, the CLI gets
    SIGTERM (it cancels cleanly and stops its plugins) before anything is killed."""
    with subprocess.Popen(cmd, env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                          text=True, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@dataclass
class Project:
    """The project (Pulumi.yaml, __main__.py, components/, policy/) copied into ``work/project``,
    a file backend in ``work/state``, the pulumi CLI and the provider plugins from the cache."""

    work: Path
    env: dict[str, str] = field(init=False)
    exe: Path = field(init=False)
    calls: int = 0

    def __post_init__(self) -> None:
        plugins = {name: install.ensure(f"pulumi-{name}") for name in PLUGINS}
        self.exe = install.ensure("pulumi")
        self.dir.mkdir(parents=True)
        for name in PROJECT_FILES:
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, self.dir / name, ignore=shutil.ignore_patterns("venv", "__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, self.dir / name)
        # Pulumi.yaml / PulumiPolicy.yaml name `venv`: the environment `make venv` built
        # (requirements.txt pins), as a user's own virtualenv.
        (self.dir / "venv").symlink_to(sys.prefix)
        (self.dir / "policy" / "venv").symlink_to(sys.prefix)
        (self.work / "state").mkdir()
        (self.work / "logs").mkdir()
        home = self.work / "pulumi-home"
        home.mkdir()
        self.env = {
            # The plugins go on PATH ("ambient" plugins): the engine then uses them whatever version
            # the SDKs ask for, with a warning. `pulumi plugin install --file` would need them
            # installed under the SDKs' exact versions, which would misname them.
            "PATH": ":".join([*(str(p.parent) for p in plugins.values()), str(self.exe.parent),
                              str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
            "PULUMI_HOME": str(home),
            "PULUMI_BACKEND_URL": f"file://{self.work / 'state'}",
            "PULUMI_CONFIG_PASSPHRASE": base64.b64encode(os.urandom(18)).decode(),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            "NO_COLOR": "1",
        }

    @property
    def dir(self) -> Path:
        return self.work / "project"

    # ---- stacks and config ---------------------------------------------------------------

    def workspace(self, extra_env: Mapping[str, str] | None = None) -> auto.LocalWorkspace:
        """A workspace on the project copy (``extra_env``: e.g. the providers' HTTPS_PROXY)."""
        cmd = auto.PulumiCommand(root=str(self.exe.parent.parent), skip_version_check=True)
        return auto.LocalWorkspace(work_dir=str(self.dir), pulumi_home=self.env["PULUMI_HOME"],
                                   env_vars={**self.env, **(extra_env or {})}, secrets_provider="passphrase",
                                   pulumi_command=cmd)

    def stack(self, name: str, base: str | None = None, extra_env: Mapping[str, str] | None = None) -> auto.Stack:
        """``pulumi stack init``; with ``base``, the stack starts from the checked-in
        Pulumi.<base>.yaml, as a user's stack does."""
        if base is not None:
            shutil.copy2(REPO / f"Pulumi.{base}.yaml", self.dir / f"Pulumi.{name}.yaml")
        return self._op("stack-init", name, lambda: auto.Stack.create(name, self.workspace(extra_env)))

    def select(self, name: str, extra_env: Mapping[str, str] | None = None) -> auto.Stack:
        return auto.Stack.select(name, self.workspace(extra_env))

    def set_config(self, stack: auto.Stack, values: Mapping[str, Any] | None = None, *,
                   provider: Mapping[str, str] | None = None,
                   secrets: Mapping[str, str] | None = None) -> None:
        """``values`` (the stack's keys, nested, without the namespace) as ``pulumi config set
        --path`` does, ``provider`` config (e.g. ``kubernetes:kubeconfig``) as is, and the secret
        keys through :meth:`set_secret`."""
        flat: dict[str, auto.ConfigValue] = {}
        for path, value in flatten_values(values or {}).items():
            if isinstance(value, list | dict):
                raise StackError(f"{path}: a list or object cannot be set by path; use write_config")
            text = value if isinstance(value, str) else json.dumps(value)
            flat[f"{NAMESPACE}:{path}"] = auto.ConfigValue(text)
        if flat:
            self._op("config-set", stack.name, lambda: stack.set_all_config(flat, path=True))
        if provider:
            self._op("config-set", stack.name, lambda: stack.set_all_config(
                {k: auto.ConfigValue(v) for k, v in provider.items()}))
        for key, secret in sorted((secrets or {}).items()):
            self.set_secret(stack.name, key, secret)

    def remove_config(self, stack: auto.Stack, values: Mapping[str, Any]) -> None:
        """``pulumi config rm --path`` of every leaf key of ``values`` (the values themselves are
        ignored): the stack falls back to its file's value or the default."""
        keys = [f"{NAMESPACE}:{path}" for path in flatten_values(values)]
        self._op("config-rm", stack.name, lambda: stack.remove_all_config(keys, path=True))

    def write_config(self, stack: auto.Stack, values: Mapping[str, Any],
                     provider: Mapping[str, str] | None = None) -> None:
        """The stack file's whole ``config:`` block: ``values`` (nested, as in a Pulumi.<stack>.yaml)
        under the namespace, plus ``provider`` config; what the stack file held before (its
        encryption salt) is kept."""
        ws = stack.workspace
        settings = ws.stack_settings(stack.name)
        settings.config = {**{f"{NAMESPACE}:{k}": v for k, v in values.items()}, **(provider or {})}
        ws.save_stack_settings(stack.name, settings)

    def set_secret(self, stack: str, key: str, value: str) -> None:
        """``pulumi config set --secret``, the value on stdin (never on a command line)."""
        proc = run_group([str(self.exe), "config", "set", "--secret", f"{NAMESPACE}:{key}", "--stack", stack,
                          "--non-interactive"], self.env, self.dir, 120, stdin=value)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise StackError(f"`pulumi config set --secret {key}` failed (exit {proc.returncode}): {last[:300]}")

    def remove(self, stack: str, force: bool = False) -> None:
        self._op("stack-rm", stack, lambda: self.workspace().remove_stack(stack, force=force))

    # ---- operations ----------------------------------------------------------------------

    def preview(self, stack: auto.Stack, **kw: Any) -> list[Step]:
        """The steps a preview plans (``policy_packs``, ``expect_no_changes``... as the SDK's)."""
        steps: list[Step] = []

        def on_event(e: auto.EngineEvent) -> None:
            pre = e.resource_pre_event
            if pre is not None:
                steps.append(Step(pre.metadata.op.value, pre.metadata.urn))

        self._op("preview", stack.name, lambda: stack.preview(on_event=on_event, **kw))
        return steps

    def up(self, stack: auto.Stack, **kw: Any) -> auto.UpResult:
        result: auto.UpResult = self._op("up", stack.name, lambda: stack.up(**kw))
        return result

    def destroy(self, stack: auto.Stack) -> None:
        self._op("destroy", stack.name, stack.destroy)

    def attempt(self, what: str, stack: auto.Stack, fn: Callable[[], Any]) -> str | None:
        """Run an operation that may fail: None when it succeeded, else its output (for checks
        that a failure reads well)."""
        try:
            self._op(what, stack.name, fn)
        except StackError as e:
            cause = e.__cause__
            if isinstance(cause, auto.CommandError):
                return str(cause)  # the CLI's exit code, stdout and stderr
            raise
        return None

    def resources(self, stack: str) -> list[dict[str, Any]]:
        """The resources in the stack's state (from the exported deployment; kept in memory)."""
        dep = self.workspace().export_stack(stack).deployment or {}
        return list(dep.get("resources") or [])

    def export(self, stack: str) -> dict[str, Any]:
        """The stack's deployment with secrets shown (never logged)."""
        return dict(self.workspace().export_stack(stack).deployment or {})

    def outputs(self, stack: str, extra_env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The stack outputs, secrets shown (kept in memory, never logged)."""
        return {k: v.value for k, v in self.workspace(extra_env).stack_outputs(stack).items()}

    def state_file(self, stack: str) -> Path:
        """The file backend's state file of ``stack`` (the project is named like the config namespace)."""
        return self.work / "state" / ".pulumi" / "stacks" / NAMESPACE / f"{stack}.json"

    def state_text(self, stack: str) -> str:
        """The stack's state exactly as the backend stores it (secrets encrypted)."""
        return self.state_file(stack).read_text()

    # ---- the raw CLI ---------------------------------------------------------------------

    def cli(self, *args: str, stack: str | None = None, check: bool = True,
            timeout: float = 1200, extra_env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """A pulumi command the Automation API has no call for (see the module docstring)."""
        cmd = [str(self.exe), *args, "--non-interactive", *(["--stack", stack] if stack else [])]
        logf = self._log_path("-".join(a for a in args[:2] if not a.startswith("-")), stack)
        t0 = time.monotonic()
        proc = run_group(cmd, {**self.env, **(extra_env or {})}, self.dir, timeout)
        logf.write_text(f"$ {' '.join(cmd)}\n(exit {proc.returncode}, {time.monotonic() - t0:.1f}s)\n"
                        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}\n")
        if check and proc.returncode != 0:
            raise StackError(f"`pulumi {' '.join(args)}` failed (exit {proc.returncode}); log {logf}:\n"
                             + _tail(proc.stdout, proc.stderr))
        return proc

    def log_files(self, stack: str) -> list[Path]:
        return sorted((self.work / "logs").glob(f"*-{stack}.log"))

    # ---- internals -----------------------------------------------------------------------

    def _log_path(self, what: str, stack: str | None) -> Path:
        self.calls += 1
        return self.work / "logs" / f"{self.calls:03d}-{what}{'-' + stack if stack else ''}.log"

    def _op(self, what: str, stack: str, fn: Callable[[], Any]) -> Any:
        logf = self._log_path(what, stack)
        t0 = time.monotonic()
        try:
            result = fn()
        except auto.CommandError as e:
            logf.write_text(f"pulumi {what} (failed, {time.monotonic() - t0:.1f}s)\n{e}\n")
            raise StackError(f"`pulumi {what}` of stack {stack} failed; log {logf}:\n" + _tail(str(e), "")) from e
        out = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n" if hasattr(result, "stdout") else ""
        logf.write_text(f"pulumi {what} ({time.monotonic() - t0:.1f}s)\n{out}")
        return result


def _tail(stdout: str, stderr: str) -> str:
    errors = [ln.strip() for ln in (stdout + stderr).splitlines() if "error:" in ln][:8]
    return "\n".join([*errors, "...", (stdout[-2000:] + "\n" + stderr[-1500:]).strip()])


def sdk_plugin_pairs() -> list[str]:
    """Each SDK's version next to the plugin version the engine runs (skew is noted)."""
    import importlib.metadata as md

    pairs = [f"pulumi (python SDK) {md.version('pulumi')} / CLI + language host {install.VERSIONS['pulumi']}"]
    for name in PLUGINS:
        sdk = md.version(f"pulumi-{name}")
        plugin = install.VERSIONS[f"pulumi-{name}"]
        pairs.append(f"pulumi-{name} SDK {sdk} / plugin {plugin}" + ("" if sdk == plugin else "  (skew)"))
    return pairs
