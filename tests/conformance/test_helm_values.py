"""The Redis (redis-ha) Helm values of every render are checked against the pinned chart.

Preferred: the chart's own values.schema.json, from the chart archive fetched from its repository
at test time. When the repository cannot be reached (as on machines that only reach package
registries), the values are checked against facts derived from the chart's values.yaml and
templates at the pinned version and checked in (tests/conformance/data/<chart>-<version>.json,
with where they come from): every key must be one of the chart's values (or lie under a
free-form map), with the type of the chart's default. Values the chart copies verbatim into
manifests (securityContext, resources, ...) are validated with the Kubernetes schemas of their
type. The test report says which of these happened.
"""

from __future__ import annotations

import functools
import io
import json
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conformance.conftest import CASE_IDS, CASES, K8S_VERSION, report
from tests.conformance.helm_values import chart_facts, check_values
from tests.conformance.support import concrete, fragment_validator

DATA = Path(__file__).parent / "data"
CHECKED_CHARTS = {"redis-ha"}

PASS_THROUGH_TYPES = {
    "securityContext": "podsecuritycontext-v1",
    "containerSecurityContext": "securitycontext-v1",
    "haproxy.securityContext": "podsecuritycontext-v1",
    "haproxy.containerSecurityContext": "securitycontext-v1",
}
"""Pass-through values and the Kubernetes type they become (kubernetes-validate schema name);
any `*.resources` is a ResourceRequirements."""


def _k8s_type(path: str) -> str | None:
    if path in PASS_THROUGH_TYPES:
        return PASS_THROUGH_TYPES[path]
    if path == "resources" or path.endswith(".resources"):
        return "resourcerequirements-v1"
    return None


@functools.cache
def fetch_chart(repository: str, name: str, version: str, timeout: float = 5.0):
    """(values.yaml, templates, values.schema.json or None) from the chart archive, or the reason
    it could not be fetched."""
    try:
        with urllib.request.urlopen(f"{repository.rstrip('/')}/index.yaml", timeout=timeout) as r:
            index = yaml.safe_load(r.read())
        entry = next(e for e in index["entries"][name] if e["version"] == version)
        url = entry["urls"][0]
        if "://" not in url:
            url = f"{repository.rstrip('/')}/{url}"
        with urllib.request.urlopen(url, timeout=timeout * 6) as r:
            blob = r.read()
    except (urllib.error.URLError, OSError, TimeoutError, KeyError, StopIteration) as e:
        return f"{type(e).__name__}: {e}"
    files = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tf:
        for m in tf.getmembers():
            f = tf.extractfile(m) if m.isfile() else None
            if f is not None:
                files[m.name.split("/", 1)[1]] = f.read().decode("utf-8", "replace")
    templates = {k: v for k, v in files.items() if k.startswith("templates/")}
    schema = files.get("values.schema.json")
    return files["values.yaml"], templates, json.loads(schema) if schema else None


def check_release(rel: dict, fetched) -> tuple[list[str], str]:
    """(problems, what was checked)."""
    values = concrete(rel["values"])
    if isinstance(fetched, tuple):
        values_yaml, templates, schema = fetched
        if schema is not None:
            import jsonschema  # type: ignore[import-untyped]

            v = jsonschema.validators.validator_for(schema)(schema)
            errs = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(values)]
            return errs, "the chart's values.schema.json (chart archive fetched from its repository)"
        facts = chart_facts(values_yaml, templates)
        how = "the chart archive's values.yaml (fetched; the chart ships no values.schema.json)"
    else:
        data_file = DATA / f"{rel['chart']}-{rel['version']}.json"
        assert data_file.exists(), (
            f"no checked-in facts for chart {rel['chart']} {rel['version']} and its repository is "
            f"unreachable ({fetched}); derive {data_file.name} from the chart's values.yaml and "
            "templates at that version with tests/conformance/helm_values.py chart_facts()"
        )
        facts = json.loads(data_file.read_text())
        assert (facts["chart"], facts["version"]) == (rel["chart"], rel["version"])
        how = (f"checked-in {data_file.relative_to(DATA.parent.parent.parent)} (repository unreachable: "
               f"{fetched}); derived from {facts['derivedFrom']}; "
               f"values.schema.json shipped at that version: {facts['valuesSchemaJson']}")
    seen: list[str] = []
    problems = check_values(values, facts["paths"], pass_through=set(facts["passThrough"]),
                            seen_pass_through=seen)
    unchecked = []
    for path in seen:
        kind = _k8s_type(path)
        node = values
        for part in path.split("."):
            node = node[part]
        if kind is None:
            unchecked.append(path)
            continue
        validator = fragment_validator(kind, K8S_VERSION)
        problems += [f"{path}.{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(node)]
    checked = sorted(set(seen) - set(unchecked))
    how += (f"; pass-through values validated as Kubernetes types: {', '.join(checked) or '-'}"
            f"; pass-through values not checked: {', '.join(sorted(unchecked)) or '-'}")
    return problems, how


@pytest.mark.parametrize("stack,mode", CASES, ids=CASE_IDS)
def test_redis_chart_values(renders, stack, mode):
    r = renders[(stack, mode)].result
    releases = [rel for rel in r.helm_releases if rel["chart"] in CHECKED_CHARTS]
    if r.config.redis.mode == "external":
        assert releases == []
        return
    assert len(releases) == 1
    for rel in releases:
        fetched = fetch_chart(rel["repository"], rel["chart"], rel["version"])
        problems, how = check_release(rel, fetched)
        report("helm values", f"{stack}-{mode}: {rel['chart']} {rel['version']} "
                              f"({len(rel['values'])} top-level values): {len(problems)} problems; "
                              f"checked against {how}")
    others = [f"{rel['chart']} {rel['version']}" for rel in r.helm_releases
              if rel["chart"] not in CHECKED_CHARTS]
    if others:
        report("helm values", f"{stack}-{mode}: values NOT checked against their charts: {', '.join(others)}")
    assert problems == []


def _redis_release(renders) -> dict:
    return next(rel for rel in renders[("prod", "extension-provider")].result.helm_releases
                if rel["chart"] == "redis-ha")


def test_values_check_rejects_a_misspelled_key_and_a_wrong_type(renders):
    rel = json.loads(json.dumps(_redis_release(renders)))
    rel["values"]["persistentVolume"]["siz"] = rel["values"]["persistentVolume"].pop("size")
    rel["values"]["replicas"] = "3"
    rel["values"]["hardAntiAfinity"] = True
    problems, _ = check_release(rel, "offline (test)")
    assert any(p.startswith("persistentVolume.siz: not a value") for p in problems), problems
    assert any(p.startswith("replicas: the chart's default is a number") for p in problems), problems
    assert any(p.startswith("hardAntiAfinity: not a value") for p in problems), problems


def test_values_check_rejects_a_misspelled_pass_through_field(renders):
    rel = json.loads(json.dumps(_redis_release(renders)))
    rel["values"]["containerSecurityContext"]["runAsNonRot"] = True
    problems, _ = check_release(rel, "offline (test)")
    assert any("runAsNonRot" in p for p in problems), problems


def test_chart_facts_derivation():
    """The derivation used for the checked-in data (and for a fetched chart archive)."""
    values = "replicas: 3\nimage:\n  tag: '1'\npodAnnotations: {}\nsecurityContext:\n  runAsUser: 1\nextra: null\n"
    templates = {"templates/sts.yaml": "a: {{ toYaml .Values.podAnnotations }}\n"
                                       "b: {{- include \"x\" (dict \"secContext\" .Values.securityContext) }}\n"}
    facts = chart_facts(values, templates)
    assert facts["paths"] == {"replicas": "number", "image": "map", "image.tag": "string",
                              "podAnnotations": "map-free", "securityContext": "map",
                              "securityContext.runAsUser": "number", "extra": "null"}
    assert facts["passThrough"] == ["podAnnotations", "securityContext"]
    ok = {"replicas": 1, "image": {"tag": "2"}, "podAnnotations": {"a": "b"}, "extra": [1],
          "securityContext": {"fsGroup": 2}}
    assert check_values(ok, facts["paths"], pass_through=set(facts["passThrough"])) == []
    assert check_values({"image": {"tga": "2"}}, facts["paths"]) == ["image.tga: not a value of the chart"]
