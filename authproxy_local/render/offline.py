"""Offline render of the whole stack: what `pulumi up` would ask for, as reviewable files.

    python -m authproxy_local.render --stack dev [--mode extension-provider|envoy-filter] [--out DIR]

runs ``__main__.py`` under Pulumi's mock runtime (:mod:`.mockrun`) with the stack's
config and writes, deterministically (sorted, stable, byte-identical across runs):

  kubernetes.yaml       every Kubernetes object (custom resources too), one YAML document each
  helm-releases.json    every helm.v3.Release: name, namespace, repository, chart, version, values
  keycloak.json         the Keycloak provider, realm (or its lookup), clients, mappers, groups, users
  random.json           the pulumi-random resources and their inputs (length, special, keepers)
  mesh-config.yaml      the exported Istio mesh config (stack output `meshConfig`, else the istiod
                        release's `meshConfig` value), when there is one
  outputs.json          the stack outputs
  render.json           index: stack, mode, counts, every placeholder and where it comes from,
                        warnings (e.g. objects without metadata.name)

Secrets and provider-computed values are replaced by placeholders (grammar in
:mod:`.placeholders`); the render fails rather than write a mock secret. The
format is described in docs/render.md.

Imports: :mod:`.mockrun`, :mod:`.placeholders`, ``components.config``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.config import SECRET_KEYS, StackConfig, ext_authz_mode_values, load

from . import mockrun
from . import placeholders as ph

ROOT = mockrun.ROOT
FORMAT_VERSION = 1
MODES = ("extension-provider", "envoy-filter")

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
KEYCLOAK_PROVIDER = "pulumi:providers:keycloak"

SECRET_FIELDS: dict[str, set[str]] = {
    "random:index/randomPassword:RandomPassword": {"result", "bcryptHash"},
}
"""Provider-computed fields that are secrets (besides anything starting with mock-secret-)."""

RENDER_SECRETS: dict[str, str] = {
    key: f"{mockrun.MOCK_SECRET_PREFIX}config-{key}" for key in sorted(SECRET_KEYS)
}
"""The value each secret config key has during a render (all set; the stack uses what it needs)."""

FILES = (
    "kubernetes.yaml",
    "helm-releases.json",
    "keycloak.json",
    "random.json",
    "mesh-config.yaml",
    "outputs.json",
    "render.json",
)


class RenderError(RuntimeError):
    """The render would be wrong or would leak a secret; the message says where."""


# --------------------------------------------------------------------------------------------
# Plain-data helpers
# --------------------------------------------------------------------------------------------


def normalize(value: Any) -> Any:
    """Protobuf Struct numbers are floats: turn integral floats back into ints, recursively."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    return value


def _strings(value: Any, path: str = "") -> Iterable[tuple[str, str]]:
    """(path, string) for every string (keys included) in a nested value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield f"{path}.{k}<key>", str(k)
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


class _Dumper(yaml.SafeDumper):
    """Sorted keys, block style, multi-line strings as literal blocks, no aliases."""

    def ignore_aliases(self, data: Any) -> bool:  # noqa: ARG002
        return True


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(data: Any) -> str:
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=100000,
        allow_unicode=True, explicit_start=False,
    )


def dump_yaml_all(docs: list[Any]) -> str:
    return "".join("---\n" + dump_yaml(d) for d in docs)


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------
# Secrets and computed values -> placeholders
# --------------------------------------------------------------------------------------------

_B64_RE = re.compile(r"^[A-Za-z0-9+/]{8,}={0,2}$")


@dataclass
class Source:
    """Where a placeholder's value comes from (render.json lists every one used)."""

    placeholder: str
    kind: str  # secret | computed
    resource: str  # Pulumi resource name, 'config' or a function name
    attr: str
    """The resource's output field (written as \"field\")."""
    type: str = ""
    form: dict[str, Any] = field(default_factory=dict)
    """For random secrets: the resource's inputs (length, special, keepers...)."""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "resource": self.resource, "field": self.attr}
        if self.type:
            out["type"] = self.type
        if self.form:
            out["form"] = self.form
        return out


class Substitutions:
    """Known mock values (needles) and the placeholders that replace them."""

    def __init__(self) -> None:
        self.needles: dict[str, str] = {}
        self.sources: dict[str, Source] = {}
        self.secret_needles: set[str] = set()
        self._bounded: set[str] = set()
        self._re: re.Pattern[str] | None = None

    def add(self, needle: str, source: Source, *, bounded: bool = False) -> None:
        if not isinstance(needle, str) or len(needle) < 6:
            return
        if needle in self.needles and self.needles[needle] != source.placeholder:
            raise RenderError(
                f"two sources share the mock value {needle!r}: {self.needles[needle]} and "
                f"{source.placeholder}; make the mock values distinct (authproxy_local/render/mockrun.py)"
            )
        self.needles[needle] = source.placeholder
        self.sources[source.placeholder] = source
        if source.kind == "secret":
            self.secret_needles.add(needle)
        if bounded:
            self._bounded.add(needle)
        self._re = None

    @property
    def regex(self) -> re.Pattern[str]:
        if self._re is None:
            parts = []
            for n in sorted(self.needles, key=lambda s: (-len(s), s)):
                e = re.escape(n)
                parts.append(rf"(?<![A-Za-z0-9_.-]){e}(?![A-Za-z0-9_-])" if n in self._bounded else e)
            self._re = re.compile("|".join(parts)) if parts else re.compile(r"(?!x)x")
        return self._re

    def text(self, s: str) -> str:
        """Replace the needles inside a string (no base64 handling)."""
        return self.regex.sub(lambda m: self.needles[m.group(0)], s)

    def string(self, s: str) -> str:
        """Replace needles; a whole-value base64 of text that holds one becomes ${base64:...}."""
        if _B64_RE.match(s) and len(s) % 4 == 0:
            try:
                decoded = base64.b64decode(s, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = None
            if decoded is not None and (
                self.regex.search(decoded) or mockrun.MOCK_SECRET_PREFIX in decoded
            ):
                return ph.b64(self.text(decoded))
        return self.text(s)

    def value(self, v: Any) -> Any:
        if isinstance(v, str):
            return self.string(v)
        if isinstance(v, Mapping):
            return {self.text(str(k)): self.value(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [self.value(x) for x in v]
        return v


def _mock_made(value: Any, name: str) -> bool:
    """A value the mocks invented (not something the program asked for)."""
    return isinstance(value, str) and (value.startswith("mock-") or value == f"{name}-id")


def build_substitutions(run: mockrun.Run, secrets: Mapping[str, str]) -> Substitutions:
    subs = Substitutions()
    for key, value in sorted(secrets.items()):
        subs.add(value, Source(ph.secret(f"config.{key}"), "secret", "config", key))
    for r in sorted((r for r in run.resources if r.custom), key=lambda r: (r.type, r.name)):
        inputs = normalize(r.inputs)
        form = inputs if r.type.startswith("random:") else {}
        secret_fields = SECRET_FIELDS.get(r.type, set())
        computed = dict(normalize(r.outputs))
        computed["id"] = r.id
        for fld, value in sorted(computed.items()):
            if not isinstance(value, str) or inputs.get(fld) == value:
                continue
            is_secret = fld in secret_fields or value.startswith(mockrun.MOCK_SECRET_PREFIX)
            if not is_secret and not _mock_made(value, r.name):
                continue  # a real value (e.g. a Keycloak realm's id is its name)
            src = f"{r.name}.{fld}"
            if is_secret:
                subs.add(value, Source(ph.secret(src), "secret", r.name, fld, r.type, form))
            else:
                subs.add(value, Source(ph.computed(src), "computed", r.name, fld, r.type),
                         bounded=not value.startswith("mock-"))
    for inv in run.invocations:
        fn = inv.token.rsplit(":", 1)[-1]
        args = ",".join(f"{k}={v}" for k, v in sorted(normalize(inv.args).items())
                        if isinstance(v, str | int | bool))
        for fld, value in sorted(normalize(inv.result or {}).items()):
            if isinstance(value, str) and value.startswith("mock-"):
                subs.add(value, Source(ph.computed(f"{fn}({args}).{fld}"), "computed", fn, fld,
                                       inv.token))
    return subs


def _check_no_leaks(files: Mapping[str, Any], subs: Substitutions) -> None:
    """Fail if any mock value (or its base64) survived the substitution."""
    found: list[str] = []
    raw_secrets = sorted(subs.secret_needles, key=len, reverse=True)
    for fname, data in files.items():
        for path, s in _strings(data):
            bad = mockrun.MOCK_SECRET_PREFIX in s or "mock-" in s or any(n in s for n in raw_secrets)
            if not bad and _B64_RE.match(s) and len(s) % 4 == 0:
                try:
                    dec = base64.b64decode(s, validate=True).decode("utf-8", "replace")
                except binascii.Error:
                    dec = ""
                bad = "mock-" in dec or any(n in dec for n in raw_secrets)
            if bad:
                found.append(f"{fname}{path}")
    if found:
        raise RenderError(
            "mock values that are not known secrets or computed values reached the render (a "
            "secret built in a way the render cannot trace, or a new provider-computed field): "
            + ", ".join(found[:20])
        )


# --------------------------------------------------------------------------------------------
# The render
# --------------------------------------------------------------------------------------------


def kube_api(type_token: str, inputs: Mapping[str, Any]) -> tuple[str, str]:
    """apiVersion and kind of a Pulumi Kubernetes resource (inputs win over the type token)."""
    _, middle, kind = type_token.split(":", 2)
    api = middle[len("core/"):] if middle.startswith("core/") else middle
    return str(inputs.get("apiVersion") or api), str(inputs.get("kind") or kind)


def _kind_of(type_token: str) -> str:
    """'keycloak:openid/client:Client' -> 'openid/Client', 'keycloak:index/realm:Realm' -> 'Realm'."""
    _, module, kind = type_token.split(":", 2)
    mod = module.split("/", 1)[0]
    return kind if mod == "index" else f"{mod}/{kind}"


def _secret_paths(wire: Any, path: str = "", under: bool = False) -> dict[str, bool]:
    """path -> whether the string there is (inside) a secret-marked value on the wire."""
    out: dict[str, bool] = {}
    if mockrun.is_secret(wire):
        return _secret_paths(wire.get("value"), path, True)
    if isinstance(wire, str):
        out[path] = under
    elif isinstance(wire, Mapping):
        for k, v in wire.items():
            out.update(_secret_paths(v, f"{path}.{k}", under))
    elif isinstance(wire, list):
        for i, v in enumerate(wire):
            out.update(_secret_paths(v, f"{path}[{i}]", under))
    return out


@dataclass
class RenderResult:
    stack: str
    mode: str
    config: StackConfig
    kubernetes: list[dict[str, Any]]
    helm_releases: list[dict[str, Any]]
    keycloak: dict[str, Any]
    random: list[dict[str, Any]]
    mesh_config: dict[str, Any] | None
    mesh_config_source: str | None
    outputs: dict[str, Any]
    secret_outputs: list[str]
    placeholders: dict[str, dict[str, Any]]
    warnings: list[str]
    components: list[str]
    unrendered: list[str]

    def index(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for o in self.kubernetes:
            key = f"{o['apiVersion']}/{o['kind']}"
            kinds[key] = kinds.get(key, 0) + 1
        return {
            "format": FORMAT_VERSION,
            "stack": self.stack,
            "mode": self.mode,
            "counts": {
                "kubernetesObjects": len(self.kubernetes),
                "kubernetesByKind": kinds,
                "helmReleases": len(self.helm_releases),
                "keycloakResources": sum(
                    len(v) for k, v in self.keycloak.items() if isinstance(v, list)
                ),
                "randomResources": len(self.random),
            },
            "meshConfigSource": self.mesh_config_source,
            "placeholders": self.placeholders,
            "components": self.components,
            "unrendered": self.unrendered,
            "warnings": self.warnings,
        }

    def files(self) -> dict[str, str]:
        """File name -> content, exactly as written."""
        out = {
            "kubernetes.yaml": dump_yaml_all(self.kubernetes),
            "helm-releases.json": dump_json(self.helm_releases),
            "keycloak.json": dump_json(self.keycloak),
            "random.json": dump_json(self.random),
            "outputs.json": dump_json({"outputs": self.outputs, "secretOutputs": self.secret_outputs}),
            "render.json": dump_json(self.index()),
        }
        if self.mesh_config is not None:
            out["mesh-config.yaml"] = dump_yaml(self.mesh_config)
        return out


def stack_values(stack: str, overrides: Mapping[str, Any] | None = None,
                 mode: str | None = None) -> dict[str, Any]:
    """The stack's config values (keys without namespace) with overrides and mode applied."""
    base = mockrun.project_config(stack)
    values = mockrun.deep_merge(base, dict(overrides or {}))
    if mode is not None:
        if mode not in MODES:
            raise RenderError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        values = mockrun.deep_merge(values, ext_authz_mode_values(mode))
    return values


def render(stack: str, mode: str | None = None,
           overrides: Mapping[str, Any] | None = None) -> RenderResult:
    """Run the program under mocks for ``stack`` (optionally forcing the ext_authz ``mode`` and
    merging config ``overrides``) and return the render (placeholders applied, leak-checked)."""
    values = stack_values(stack, overrides, mode)
    cfg = load(values, secrets_set=RENDER_SECRETS)  # a bad config fails here, naming the key
    run = mockrun.run_program(stack, config=values, secrets=dict(RENDER_SECRETS))
    subs = build_substitutions(run, RENDER_SECRETS)
    warnings: list[str] = []
    used_secret_unmarked: list[str] = []

    kube: list[dict[str, Any]] = []
    helm: list[dict[str, Any]] = []
    kc: dict[str, Any] = {"providers": [], "lookups": []}
    rnd: list[dict[str, Any]] = []
    components: list[str] = []
    unrendered: list[str] = []

    def sub_checked(r: mockrun.Registered, what: str) -> dict[str, Any]:
        """Inputs with placeholders; note secret values the program did not mark secret."""
        plain = normalize(r.inputs)
        marks = _secret_paths(r.wire_inputs)
        for path, s in _strings(plain):
            if path.endswith("<key>"):
                continue
            if any(n in s for n in subs.secret_needles) and not marks.get(path, False):
                used_secret_unmarked.append(f"{what} {r.name}{path}")
        return subs.value(plain)

    for r in sorted(run.resources, key=lambda r: (r.type, r.name)):
        if not r.custom:
            components.append(f"{r.type} {r.name}")
            continue
        if r.type == HELM_RELEASE:
            i = sub_checked(r, "helm release")
            rel = {
                "pulumiName": r.name,
                "name": i.pop("name", None),
                "namespace": i.pop("namespace", None),
                "repository": (i.pop("repositoryOpts", None) or {}).get("repo"),
                "chart": i.pop("chart", None),
                "version": i.pop("version", None),
                "values": i.pop("values", None) or {},
            }
            if rel["name"] is None:
                warnings.append(f"helm release {r.name} has no explicit name (Pulumi would auto-name it)")
                rel["name"] = ph.autoname(r.name)
            rel["options"] = i
            helm.append(rel)
        elif r.type.startswith("kubernetes:"):
            obj = sub_checked(r, "kubernetes object")
            api, kind = kube_api(r.type, obj)
            obj["apiVersion"], obj["kind"] = api, kind
            meta = obj.setdefault("metadata", {})
            if not meta.get("name"):
                warnings.append(
                    f"{api} {kind} (Pulumi name {r.name!r}, parent "
                    f"{r.parent.rsplit('::', 1)[-1] if r.parent else '-'}) has no metadata.name; "
                    "Pulumi would auto-name it. Set an explicit name in the component."
                )
                meta["name"] = ph.autoname(r.name)
            kube.append(obj)
        elif r.type.startswith("keycloak:"):
            kc.setdefault(_kind_of(r.type), []).append({
                "name": r.name,
                "id": subs.string(r.id),
                "inputs": sub_checked(r, "keycloak resource"),
            })
        elif r.type == KEYCLOAK_PROVIDER:
            kc["providers"].append({"name": r.name, "inputs": sub_checked(r, "keycloak provider")})
        elif r.type.startswith("random:"):
            rnd.append({"name": r.name, "type": r.type, "kind": r.type.rsplit(":", 1)[-1],
                        "inputs": normalize(r.inputs)})
        else:
            unrendered.append(f"{r.type} {r.name}")

    for inv in sorted(run.invocations, key=lambda i: (i.token, json.dumps(normalize(i.args), sort_keys=True))):
        if inv.token.startswith("keycloak:"):
            kc["lookups"].append({
                "function": inv.token,
                "args": subs.value(normalize(inv.args)),
                "result": subs.value(normalize(inv.result or {})),
            })
        else:
            unrendered.append(f"invoke {inv.token}")

    kube.sort(key=lambda o: (o["apiVersion"], o["kind"], o["metadata"].get("namespace") or "",
                             o["metadata"]["name"]))
    helm.sort(key=lambda h: (str(h["namespace"]), str(h["name"])))
    for k, v in kc.items():
        if k not in ("providers", "lookups"):
            v.sort(key=lambda e: e["name"])
    kc["providers"].sort(key=lambda e: e["name"])
    seen: set[tuple[str, str, str, str]] = set()
    for o in kube:
        key = (o["apiVersion"], o["kind"], o["metadata"].get("namespace") or "", o["metadata"]["name"])
        if key in seen:
            warnings.append(f"duplicate Kubernetes object {'/'.join(key)}")
        seen.add(key)
    if unrendered:
        warnings.append("resources of types the render does not know: " + ", ".join(unrendered))
    if used_secret_unmarked:
        warnings.append("secret values not marked secret: " + ", ".join(sorted(used_secret_unmarked)))

    outputs_plain = {k: normalize(mockrun.unwrap_secrets(v)) for k, v in run.outputs.items()}
    secret_outputs = sorted(k for k, v in run.outputs.items() if mockrun.is_secret(v))
    outputs = subs.value(outputs_plain)

    mesh, mesh_source = _mesh_config(outputs, helm)

    files_data = {"kubernetes.yaml": kube, "helm-releases.json": helm, "keycloak.json": kc,
                  "random.json": rnd, "outputs.json": outputs, "mesh-config.yaml": mesh}
    _check_no_leaks(files_data, subs)

    used = set()
    for data in files_data.values():
        used |= ph.find_all(data)
        for _, s in _strings(data):
            if s.startswith(ph.BASE64_PREFIX):
                used |= ph.find_all(s)
    sources = {p: subs.sources[p].as_json() for p in sorted(used) if p in subs.sources}
    for p in sorted(used):
        if p.startswith("${autoname:"):
            sources[p] = {"kind": "autoname", "resource": p[len("${autoname:"):-1], "field": "name"}

    result = RenderResult(
        stack=stack, mode=cfg.istio.ext_authz_mode, config=cfg, kubernetes=kube,
        helm_releases=helm, keycloak=kc, random=sorted(rnd, key=lambda e: e["name"]),
        mesh_config=mesh, mesh_config_source=mesh_source, outputs=outputs,
        secret_outputs=secret_outputs, placeholders=sources,
        warnings=sorted(set(warnings)), components=sorted(components), unrendered=sorted(unrendered),
    )
    return result


def _mesh_config(outputs: Mapping[str, Any], helm: list[dict[str, Any]]) -> tuple[dict | None, str | None]:
    value = outputs.get("meshConfig")
    source = "output meshConfig"
    if value is None:
        for rel in helm:
            if rel["chart"] == "istiod" and isinstance(rel["values"].get("meshConfig"), Mapping):
                value = rel["values"]["meshConfig"]
                source = f"helm release {rel['name']} values.meshConfig"
                break
    if value is None:
        return None, None
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if not isinstance(value, Mapping):
        raise RenderError(f"the mesh config ({source}) is not a mapping: {type(value).__name__}")
    return copy.deepcopy(dict(value)), source


# --------------------------------------------------------------------------------------------
# Writing and the CLI
# --------------------------------------------------------------------------------------------


def default_out_dir(stack: str, mode: str) -> Path:
    return ROOT / "build" / "render" / f"{stack}-{mode}"


def write(result: RenderResult, out_dir: str | Path) -> list[Path]:
    """Write the render's files into ``out_dir`` (created; stale render files removed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = result.files()
    written = []
    for name in FILES:
        path = out / name
        if name in files:
            path.write_text(files[name], encoding="utf-8")
            written.append(path)
        elif path.exists():
            path.unlink()
    return written
