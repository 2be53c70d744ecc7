"""What istiod's mesh config must hold for a stack, before its first `pulumi up`, offline.

    venv/bin/python -m preflight.meshconfig --stack prod                       # the stack's part
    venv/bin/python -m preflight.meshconfig --stack prod --merge current.yaml  # merged into yours
        [--format mesh | helm-values | configmap-patch] [--mode envoy-filter]

Reads ``Pulumi.<stack>.yaml`` (no cluster, no Keycloak, no secrets) and prints the same structure
as the stack output ``meshConfig``. ``--merge`` takes istiod's current mesh config (the ``mesh`` key
of the ``istio`` ConfigMap) and replaces or appends the stack's extension provider by name and sets
``pathNormalization``, keeping everything else. Formats: ``mesh`` (the ConfigMap's ``mesh`` value),
``helm-values`` (``meshConfig:`` for the istiod chart), ``configmap-patch`` (JSON for
``kubectl patch configmap istio --type merge``). docs/deploy.md#mesh-config shows the commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from components.authz import mesh_config
from components.config import NAMESPACE, SECRET_KEYS, ConfigError, load
from components.stack import provider_args

ROOT = Path(__file__).resolve().parent.parent


def stack_values(stack: str, root: Path = ROOT) -> dict[str, Any]:
    path = root / f"Pulumi.{stack}.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    prefix = NAMESPACE + ":"
    return {k[len(prefix):]: v for k, v in (data.get("config") or {}).items() if k.startswith(prefix)}


def needed(values: Mapping[str, Any], mode: str | None = None) -> dict[str, Any]:
    """The stack's part of the mesh config (secrets are not needed for it)."""
    if mode:
        istio = dict(values.get("istio") or {})
        values = {**values, "istio": {**istio, "extAuthzMode": mode}}
    cfg = load(values, secrets_set=SECRET_KEYS.keys())
    return mesh_config(cfg.istio.ext_authz_mode, provider_args(cfg))


def merge(current: Mapping[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with the stack's providers (replaced by name, else appended) and path
    normalization; nothing else changes."""
    out = dict(current)
    ours = list(part.get("extensionProviders") or [])
    if ours:
        names = {p["name"] for p in ours}
        kept = [p for p in current.get("extensionProviders") or []
                if not (isinstance(p, Mapping) and p.get("name") in names)]
        out["extensionProviders"] = kept + ours
    out["pathNormalization"] = dict(part["pathNormalization"])
    return out


def render(mesh: Mapping[str, Any], fmt: str) -> str:
    if fmt == "helm-values":
        return yaml.safe_dump({"meshConfig": dict(mesh)}, sort_keys=False)
    text = yaml.safe_dump(dict(mesh), sort_keys=False)
    if fmt == "configmap-patch":
        return json.dumps({"data": {"mesh": text}}) + "\n"
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m preflight.meshconfig", description=__doc__.split("\n\n")[0])
    ap.add_argument("--stack", required=True, help="reads Pulumi.<stack>.yaml")
    ap.add_argument("--mode", choices=["extension-provider", "envoy-filter"],
                    help="override authproxy:istio.extAuthzMode")
    ap.add_argument("--merge", metavar="FILE", help="istiod's current mesh config (YAML) to merge into")
    ap.add_argument("--format", default="mesh", choices=["mesh", "helm-values", "configmap-patch"])
    args = ap.parse_args(argv)
    try:
        part = needed(stack_values(args.stack), args.mode)
    except FileNotFoundError as e:
        print(f"error: {e.filename} does not exist", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    mesh: Mapping[str, Any] = part
    if args.merge:
        current = yaml.safe_load(Path(args.merge).read_text()) or {}
        if not isinstance(current, Mapping):
            print(f"error: {args.merge} is not a YAML mapping (istiod's mesh config)", file=sys.stderr)
            return 2
        mesh = merge(current, part)
    sys.stdout.write(render(mesh, args.format))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
