"""The example stacks a user starts from: each one validates, and only the one named for throwaway
clusters installs Istio (the others expect the cluster's own Istio and never touch it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.unit.stacks import load_stack

ROOT = Path(__file__).resolve().parents[2]
STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))


def test_the_examples_are_the_ones_the_docs_name() -> None:
    assert STACKS == ["dev", "gateway-api", "prod", "throwaway"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_example_validates(stack: str) -> None:
    load_stack(stack)


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_throwaway_stack_installs_istio(stack: str) -> None:
    cfg = load_stack(stack)
    assert cfg.istio.install.enabled == (stack == "throwaway")
    head = (ROOT / f"Pulumi.{stack}.yaml").read_text().split("config:")[0]
    if stack == "throwaway":
        assert "INSTALLS ISTIO" in head and "throwaway" in head
    else:
        assert "throwaway" not in head or "Pulumi.throwaway.yaml" in head


def test_the_default_example_names_the_keys_to_replace() -> None:
    head = (ROOT / "Pulumi.dev.yaml").read_text().split("config:")[0]
    config = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    named = [line.split()[1].rstrip(",") for line in head.splitlines()
             if line.startswith("#   authproxy:")]
    assert named, head
    for key in named:
        top = key.split(".")[0]
        assert top in config or top.split(",")[0] in config, key
