"""Run the Pulumi program under Pulumi's mock runtime and record what it registers.

Used by the unit tests and by the offline render. The program (``__main__.py``) runs unchanged;
the mocks answer every resource registration with its inputs plus a few computed values, and
record each registration with its inputs *as sent on the wire*, so secret inputs keep their
secret marker (tests check that no secret leaks into plain fields; the render replaces them with
placeholders).

Imports: ``pulumi``, :mod:`authproxy_local.core.paths`.
"""

from __future__ import annotations

import copy
import json
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc

from authproxy_local.core.paths import REPO

ROOT = REPO
PROJECT = "authproxy"
SECRET_SIG_KEY = rpc._special_sig_key  # noqa: SLF001 - the wire format's own constant
SECRET_SIG = rpc._special_secret_sig  # noqa: SLF001

MOCK_SECRET_PREFIX = "mock-secret-"
"""Every value the mocks generate for a secret starts with this, so leaks are easy to find."""


@dataclass
class Registered:
    """One resource registration."""

    type: str
    name: str
    inputs: dict[str, Any]
    """Inputs with secrets unwrapped (plain values)."""
    wire_inputs: dict[str, Any]
    """Inputs as sent, secret values wrapped in {SECRET_SIG_KEY: SECRET_SIG, "value": ...}."""
    parent: str
    provider: str
    custom: bool
    urn: str = ""
    id: str = ""
    """The id the mocks gave the resource (``<name>-id`` unless a computed value sets it)."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """The state the mocks answered with: inputs plus provider-computed values (plain)."""


@dataclass
class Invocation:
    token: str
    args: dict[str, Any]
    result: dict[str, Any] | None = None
    """What the mocks answered (plain)."""


@dataclass
class Run:
    """What one program run registered."""

    resources: list[Registered] = field(default_factory=list)
    invocations: list[Invocation] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    """Stack outputs as sent (secrets wrapped)."""

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Registered:
        found = self.of_type(type_)
        if len(found) != 1:
            raise AssertionError(f"expected one {type_}, found {len(found)}")
        return found[0]

    def kube(self, kind: str) -> list[Registered]:
        """Kubernetes objects of a kind, whatever their API group/version."""
        return [r for r in self.resources if r.type.startswith("kubernetes:") and r.type.endswith(":" + kind)]

    def plain_output(self, name: str) -> Any:
        return unwrap_secrets(self.outputs[name])


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG_KEY) == SECRET_SIG


def unwrap_secrets(value: Any) -> Any:
    if is_secret(value):
        return unwrap_secrets(value.get("value"))
    if isinstance(value, dict):
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


def _computed(args: pmocks.MockResourceArgs) -> dict[str, Any]:
    """Provider-computed values the program reads back."""
    t, n, i = args.typ, args.name, args.inputs
    if t == "random:index/randomPassword:RandomPassword":
        return {"result": f"{MOCK_SECRET_PREFIX}{n}", "bcryptHash": f"mock-bcrypt-{n}"}
    if t == "keycloak:index/realm:Realm":
        return {"id": i.get("realm", n), "internalId": f"mock-uuid-{n}"}
    if t == "keycloak:openid/client:Client":
        return {"id": f"mock-uuid-{n}", "clientId": i.get("clientId")}
    return {}


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self, run: Run):
        self.run = run

    def new_resource(self, args: pmocks.MockResourceArgs):
        state = {**args.inputs, **_computed(args)}
        rid = state.get("id") or f"{args.name}-id"
        return rid, state

    def call(self, args: pmocks.MockCallArgs):
        invocation = Invocation(args.token, dict(args.args))
        self.run.invocations.append(invocation)
        invocation.result = self._answer(args)
        return invocation.result

    @staticmethod
    def _answer(args: pmocks.MockCallArgs) -> dict[str, Any]:
        a = args.args
        if args.token == "keycloak:index/getRealm:getRealm":
            return {"id": a.get("realm"), "realm": a.get("realm"), "enabled": True}
        if args.token == "keycloak:index/getGroup:getGroup":
            return {"id": f"mock-group-{a.get('name')}", "name": a.get("name"), "realmId": a.get("realmId")}
        return {}


class _Monitor(pmocks.MockMonitor):
    """A MockMonitor that records registrations with their wire form (secret markers kept)."""

    def __init__(self, mocks: _Mocks, run: Run, stack: str):
        super().__init__(mocks)
        self.run = run
        self.stack = stack
        self.stack_urn: str | None = None

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = response.urn
            return response
        wire = json_format.MessageToDict(request.object, preserving_proto_field_name=True)
        self.run.resources.append(
            Registered(
                type=request.type,
                name=request.name,
                inputs=unwrap_secrets(wire),
                wire_inputs=wire,
                parent=request.parent,
                provider=request.provider,
                custom=bool(request.custom),
                urn=response.urn,
                id=response.id,
                outputs=unwrap_secrets(json_format.MessageToDict(response.object)),
            )
        )
        return response

    def RegisterResourceOutputs(self, request):
        if request.urn == self.stack_urn or request.urn.endswith("::" + f"{PROJECT}-{self.stack}"):
            self.run.outputs.update(json_format.MessageToDict(request.outputs))
        return super().RegisterResourceOutputs(request)


def stack_config(stack: str, root: Path = ROOT) -> dict[str, Any]:
    """The `config:` block of Pulumi.<stack>.yaml (keys with namespace)."""
    data = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text())
    return dict(data.get("config") or {})


def project_config(stack: str, root: Path = ROOT) -> dict[str, Any]:
    """The stack file's `authproxy:*` values, keys without the namespace (other namespaces, such
    as the CI workflow's `ci:*` markers, are not the program's)."""
    prefix = PROJECT + ":"
    return {k[len(prefix):]: v for k, v in stack_config(stack, root).items() if k.startswith(prefix)}


def deep_merge(base: Any, override: Any) -> Any:
    """Merge ``override`` into ``base`` (dicts recursively; lists and scalars replace)."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = deep_merge(base.get(k), v) if k in base else v
        return out
    return copy.deepcopy(override)


DEFAULT_TEST_SECRETS = {
    "keycloakAdminPassword": MOCK_SECRET_PREFIX + "keycloak-admin-password",
    "keycloakAdminClientSecret": MOCK_SECRET_PREFIX + "keycloak-admin-client-secret",
    "externalRedisPassword": MOCK_SECRET_PREFIX + "external-redis-password",
}


def run_program(
    stack: str = "dev",
    overrides: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    preview: bool = False,
) -> Run:
    """Run __main__.py under mocks with a stack's config (plus overrides) and return the record.

    ``overrides`` and ``config`` use keys without the namespace; ``config`` replaces the stack file
    entirely. ``secrets`` maps secret keys (without namespace) to values; default: every secret key
    set to a mock value.
    """
    base = project_config(stack) if config is None else dict(config)
    values = deep_merge(base, overrides or {})
    secret_values = DEFAULT_TEST_SECRETS if secrets is None else secrets
    flat: dict[str, str] = {}
    for k, v in values.items():
        if v is None:
            continue
        flat[f"{PROJECT}:{k}"] = v if isinstance(v, str) else json.dumps(v)
    for k, v in secret_values.items():
        flat[f"{PROJECT}:{k}"] = v

    run = Run()
    mocks = _Mocks(run)
    monitor = _Monitor(mocks, run, stack)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    pulumi.runtime.set_all_config(flat, [f"{PROJECT}:{k}" for k in secret_values])
    # Re-register the root stack resource so outputs of this run are recorded (set_mocks only
    # creates one when none exists).
    from pulumi.runtime import settings as psettings

    psettings.SETTINGS.rpc_manager.clear()
    psettings.SETTINGS.outputs.clear()
    psettings.ROOT.set(None)  # run_in_stack registers a fresh root stack that records exports

    def program() -> None:
        sys.path.insert(0, str(ROOT))
        try:
            runpy.run_path(str(ROOT / "__main__.py"), run_name="__pulumi_main__")
        finally:
            sys.path.remove(str(ROOT))

    from pulumi.runtime.stack import run_in_stack
    from pulumi.runtime.sync_await import _sync_await

    _sync_await(run_in_stack(program))
    return run
