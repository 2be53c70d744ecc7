"""Check Helm values against a chart: its values.schema.json when it ships one, else the key
paths and types of the chart's own values.yaml (what `helm` would silently ignore otherwise)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

_PASS_THROUGH_RE = re.compile(r"(?:toYaml\s+\(?\s*|\"secContext\"\s+)\$?\.Values\.([A-Za-z0-9_.]+)")


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "map" if value else "map-free"
    return type(value).__name__


def value_paths(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Every key path of a chart's values.yaml with the type of its default.

    Maps recurse; an empty map's type is ``map-free`` (free-form: e.g. ``podAnnotations: {}``);
    lists are leaves.
    """
    out: dict[str, str] = {}
    for k, v in values.items():
        path = f"{prefix}{k}"
        out[path] = _type(v)
        if isinstance(v, Mapping) and v:
            out.update(value_paths(v, path + "."))
    return out


def check_values(ours: Mapping[str, Any], chart_paths: Mapping[str, str], prefix: str = "",
                 pass_through: frozenset[str] | set[str] = frozenset(),
                 seen_pass_through: list[str] | None = None) -> list[str]:
    """Problems with our values: unknown keys (not in the chart's values.yaml and not under a
    free-form map) and type mismatches with the chart's default (null defaults accept anything).
    Pass-through values (copied verbatim into manifests) are not descended into; their paths are
    appended to ``seen_pass_through`` for a separate check."""
    problems: list[str] = []
    for k, v in ours.items():
        path = f"{prefix}{k}"
        want = chart_paths.get(path)
        if want is None:
            problems.append(f"{path}: not a value of the chart")
            continue
        got = _type(v)
        if path in pass_through:
            if seen_pass_through is not None:
                seen_pass_through.append(path)
            if want not in ("null", got, "map-free" if got == "map" else want):
                problems.append(f"{path}: the chart's default is a {want}, ours is a {got}")
            continue
        if want in ("null", "map-free"):
            if want == "map-free" and not isinstance(v, Mapping):
                problems.append(f"{path}: the chart's default is a map, ours is {got}")
            continue
        if got == "map-free":
            got = "map"
        if got != want:
            problems.append(f"{path}: the chart's default is a {want}, ours is a {got}")
            continue
        if isinstance(v, Mapping):
            problems += check_values(v, chart_paths, path + ".", pass_through, seen_pass_through)
    return problems


def pass_through_paths(templates: Mapping[str, str]) -> list[str]:
    """Values the chart's templates copy verbatim into manifests (``toYaml .Values.X`` or the
    redis-ha ``compatibility.renderSecurityContext`` helper): their contents are Kubernetes fields,
    not chart values, so their sub-keys are not looked up in values.yaml."""
    found: set[str] = set()
    for text in templates.values():
        found.update(m.group(1).rstrip(".") for m in _PASS_THROUGH_RE.finditer(text))
    return sorted(found)


def chart_facts(values_yaml: str, templates: Mapping[str, str]) -> dict[str, Any]:
    """What the values check needs from a chart: key paths with default types, pass-through paths."""
    return {
        "paths": value_paths(yaml.safe_load(values_yaml) or {}),
        "passThrough": pass_through_paths(templates),
    }
