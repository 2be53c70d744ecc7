"""docs/configuration.md is generated from the config model and must stay in step with it; the
example stacks must be valid and every key they use must be documented."""

from pathlib import Path

import yaml

from components.config import config_reference_markdown, load

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_current():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc == config_reference_markdown(), "run `make docs` and commit docs/configuration.md"


def _paths(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{prefix}{k}"
            yield from _paths(v, f"{prefix}{k}.")
    elif isinstance(value, list):
        for v in value:
            yield from _paths(v, prefix[:-1] + "[].")


def test_example_stacks_are_valid_and_documented():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for stack in sorted(p.name[7:-5] for p in ROOT.glob("Pulumi.*.yaml")):
        data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        raw = {k.split(":", 1)[1]: v for k, v in data.items() if k.startswith("authproxy:")}
        load(raw, {"keycloakAdminPassword", "keycloakAdminClientSecret"})
        for key in _paths(raw):
            if key.startswith(("istio.gateway.selector.", "apps[].workloadLabels.")):
                continue
            assert f"`{key}`" in doc, f"{stack}: {key} missing from docs/configuration.md"


def test_readme_links_the_reference_and_names_every_secret():
    readme = (ROOT / "README.md").read_text()
    assert "docs/configuration.md" in readme
    from components.config import SECRET_KEYS

    for key in SECRET_KEYS:
        assert f"authproxy:{key}" in readme
