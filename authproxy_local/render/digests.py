"""The render's identity check: SHA-256 of every file of the render of every example stack in both
ext_authz modes, compared with the digests committed in ``tests/unit/data/render-digests.json``.

A change to components/, __main__.py or a Pulumi.<stack>.yaml that alters what `pulumi up` would
ask for changes a digest, and ``tests/unit/test_render_identity.py`` fails, naming the files. When
the change is intended, review it (``make render`` before and after, ``diff -ru``) and record the
new digests with::

    make render-digests        # = python -m authproxy_local.render --digests --update

Imports: :mod:`.offline`, :mod:`authproxy_local.core.paths`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from authproxy_local.core.paths import REPO

from .offline import MODES, render

STACKS = ("dev", "prod", "gateway-api", "throwaway")
"""The checked-in example stacks (Pulumi.<stack>.yaml)."""

DIGESTS_FILE = REPO / "tests" / "unit" / "data" / "render-digests.json"


def digests(stacks: tuple[str, ...] = STACKS, modes: tuple[str, ...] = MODES) -> dict[str, dict[str, str]]:
    """``<stack>-<mode>`` -> {render file name: sha256 of its content}."""
    out: dict[str, dict[str, str]] = {}
    for stack in stacks:
        for mode in modes:
            files = render(stack, mode).files()
            out[f"{stack}-{mode}"] = {n: hashlib.sha256(t.encode()).hexdigest() for n, t in sorted(files.items())}
    return out


def committed(path: Path = DIGESTS_FILE) -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = json.loads(path.read_text())
    return data


def differences(expected: dict[str, dict[str, str]], actual: dict[str, dict[str, str]]) -> list[str]:
    """``<stack>-<mode>/<file>`` of every file added, removed or changed."""
    out = []
    for case in sorted(set(expected) | set(actual)):
        e, a = expected.get(case, {}), actual.get(case, {})
        out += [f"{case}/{name}" for name in sorted(set(e) | set(a)) if e.get(name) != a.get(name)]
    return out


def write(path: Path = DIGESTS_FILE) -> dict[str, dict[str, str]]:
    data = digests()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data
