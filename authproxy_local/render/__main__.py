"""``python -m authproxy_local.render``: the offline render of a stack into build/render/<stack>-<mode>,
or (``--digests``) the check and update of the committed render digests (:mod:`.digests`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import digests
from .offline import MODES, RenderError, default_out_dir, render, write


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m authproxy_local.render", description=__doc__.split("\n\n")[0])
    p.add_argument("--stack", default="dev", help="stack name (reads Pulumi.<stack>.yaml); default dev")
    p.add_argument("--mode", choices=MODES, help="ext_authz mode; default: the stack's istio.extAuthzMode")
    p.add_argument("--out", help="output directory; default build/render/<stack>-<mode>")
    p.add_argument("--digests", action="store_true",
                   help="check every example stack's render against tests/unit/data/render-digests.json")
    p.add_argument("--update", action="store_true", help="with --digests: write the current digests there")
    a = p.parse_args(argv)
    if a.digests:
        return _digests(update=a.update)
    try:
        result = render(a.stack, a.mode)
    except (RenderError, FileNotFoundError) as e:
        print(f"render failed: {e}", file=sys.stderr)
        return 1
    out = Path(a.out) if a.out else default_out_dir(a.stack, result.mode)
    write(result, out)
    idx = result.index()["counts"]
    print(f"rendered stack {a.stack} (ext_authz mode {result.mode}) into {out}")
    print(f"  {idx['kubernetesObjects']} Kubernetes objects, {idx['helmReleases']} Helm releases, "
          f"{idx['keycloakResources']} Keycloak resources, {idx['randomResources']} random secrets, "
          f"{len(result.placeholders)} placeholders, mesh config: {result.mesh_config_source or 'none'}")
    for w in result.warnings:
        print(f"  warning: {w}")
    return 0


def _digests(update: bool) -> int:
    if update:
        digests.write()
        print(f"wrote {digests.DIGESTS_FILE.relative_to(digests.REPO)}")
        return 0
    changed = digests.differences(digests.committed(), digests.digests())
    for c in changed:
        print(f"changed: {c}")
    print(f"render digests: {len(changed)} file(s) differ from {digests.DIGESTS_FILE.relative_to(digests.REPO)}")
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
