"""``python -m authproxy_local.install``: see :mod:`authproxy_local.install`."""

from __future__ import annotations

import argparse
import json
import sys

from authproxy_local import install


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m authproxy_local.install",
        description="Install (or find in the cache) the real components the authproxy tests run.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON map component -> path")
    parser.add_argument("--group", action="append", default=[], choices=sorted(install.GROUPS),
                        help="every component a make target needs (repeatable)")
    parser.add_argument("components", nargs="*", metavar="COMPONENT",
                        help=f"one or more of: {', '.join(install.COMPONENTS)}, all")
    args = parser.parse_args(argv)
    wanted = [c for g in args.group for c in install.group(g)] + list(args.components)
    if not wanted:
        parser.error("name at least one COMPONENT or --group")
    try:
        names = install.expand(wanted)
    except install.InstallError as e:
        parser.error(str(e))
    result: dict[str, str] = {}
    failed: dict[str, str] = {}
    for n in names:
        try:
            result[n] = str(install.ensure(n))
        except install.InstallError as e:
            failed[n] = str(e)
            print(f"error: {e}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for n, p in result.items():
            print(f"{n}\t{p}")
    if failed:
        print(f"error: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
