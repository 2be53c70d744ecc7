"""Shared fixtures of the conformance tests: the renders (dev, prod, gateway-api, ambient and
ambient behind the Gateway API ingress, each in both ext_authz modes), the validators, and a
closing report of what was validated (printed after the test summary)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

from authproxy_local.render import MODES, RenderResult, render, write

VARIANTS: dict[str, tuple[str, dict]] = {
    "ambient-gateway-api": ("ambient", {"istio": {"ingressApi": "gateway-api"}}),
}
"""Renders of a stack file with config overrides: name -> (stack, overrides)."""
STACKS = ("dev", "prod", "gateway-api", "ambient", *VARIANTS)
CASES = [(s, m) for s in STACKS for m in MODES]
CASE_IDS = [f"{s}-{m}" for s, m in CASES]

K8S_VERSION = "1.35"
"""Kubernetes version whose schemas the objects are validated against (kubernetes-validate ships
1.25-1.35; 1.35 is a supported release)."""

REPORT: dict[str, list[str]] = defaultdict(list)
"""Section -> lines, printed at the end of the run (what was validated, counts, findings)."""


def report(section: str, line: str) -> None:
    if line not in REPORT[section]:
        REPORT[section].append(line)


def pytest_sessionfinish(session):
    """A pytest-xdist worker (`make conformance` runs two) hands its report lines to the
    controller, which prints the report."""
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["conformance_report"] = json.dumps(REPORT)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist, on the controller: a worker finished; keep its report lines."""
    for section, lines in json.loads(getattr(node, "workeroutput", {}).get("conformance_report", "{}")).items():
        for line in lines:
            report(section, line)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not REPORT:
        return
    terminalreporter.section("conformance report")
    for section in sorted(REPORT):
        terminalreporter.write_line(f"{section}:")
        for line in REPORT[section]:
            terminalreporter.write_line(f"  {line}")


class Rendered:
    """One render and the directory its files were written to."""

    def __init__(self, result: RenderResult, out: Path):
        self.result = result
        self.out = out

    @property
    def case(self) -> str:
        return f"{self.result.stack}-{self.result.mode}"


@pytest.fixture(scope="session")
def renders(tmp_path_factory) -> dict[tuple[str, str], Rendered]:
    out: dict[tuple[str, str], Rendered] = {}
    for stack, mode in CASES:
        stack_file, overrides = VARIANTS.get(stack, (stack, {}))
        result = render(stack_file, mode, overrides)
        assert result.mode == mode
        d = tmp_path_factory.mktemp(f"render-{stack}-{mode}")
        write(result, d)
        out[(stack, mode)] = Rendered(result, d)
    return out


def unavailable(what: str, why: str) -> None:
    """A validator that cannot be had: a failure in CI (CI=true), a skip with the reason elsewhere."""
    msg = f"{what} is not available: {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(msg + " (CI=true: a missing validator fails the run)")
    pytest.skip(msg + " (set CI=true to make this a failure)")


def installed(component: str, what: str, describe: str) -> Path:
    """A validator from authproxy_local.install (``describe`` is formatted with the install's
    VERSIONS and ``path`` for the report), or :func:`unavailable`."""
    from authproxy_local.install import VERSIONS, InstallError, ensure

    try:
        path = ensure(component)
    except InstallError as e:
        unavailable(what, str(e))
    report("validators", describe.format(path=path, **VERSIONS))
    return path


@pytest.fixture(scope="session")
def istioctl() -> Path:
    """istioctl built from the pinned istio.io/istio module (authproxy_local.install)."""
    return installed("istioctl", "istioctl", "istioctl {istio-label} (istio.io/istio {istio}), {path}")


@pytest.fixture(scope="session")
def gateway_api_crds() -> Path:
    """The standard-channel Gateway API CRDs of the pinned sigs.k8s.io/gateway-api module."""
    return installed("gateway-api-crds", "the Gateway API CRDs",
                     "Gateway API CRDs sigs.k8s.io/gateway-api {gateway-api} (standard channel), {path}")
