"""Every built-in Kubernetes object of every render validates against the upstream Kubernetes
schemas in strict mode (kubernetes-validate, unknown fields rejected), and the validator is shown
to reject each object once a field is misspelled."""

from __future__ import annotations

from collections import Counter

import pytest
from kubernetes_validate.utils import (  # type: ignore[import-untyped]
    SchemaNotFoundError,
    ValidationError,
)

from tests.conformance.conftest import CASE_IDS, CASES, K8S_VERSION, report
from tests.conformance.support import (
    category,
    concrete,
    ident,
    kubernetes_validate_version,
    misspelled_variants,
    validate_strict,
)


def _validate_all(objs, where: str) -> list[str]:
    problems = []
    for obj in objs:
        try:
            validate_strict(concrete(obj), K8S_VERSION)
        except ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"{where}: {ident(obj)}: {path}: {e.message}")
        except SchemaNotFoundError as e:
            problems.append(f"{where}: {ident(obj)}: {e.message} (a removed or unknown API version)")
    return problems


@pytest.mark.parametrize("stack,mode", CASES, ids=CASE_IDS)
def test_core_objects_validate_strictly(renders, stack, mode):
    r = renders[(stack, mode)].result
    core = [o for o in r.kubernetes if category(o) == "core"]
    problems = _validate_all(core, "kubernetes.yaml")
    kinds = Counter(o["kind"] for o in core)
    report("validators", f"kubernetes-validate {kubernetes_validate_version()} "
                         f"(Kubernetes {K8S_VERSION} schemas, strict)")
    report("kubernetes-validate (strict)",
           f"{stack}-{mode}: {len(core)} core objects validated "
           f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); {len(problems)} problems")
    assert problems == []


@pytest.mark.parametrize("stack,mode", CASES, ids=CASE_IDS)
def test_custom_resources_are_accounted_for(renders, stack, mode):
    """Objects that are neither built-in, Istio nor Gateway API (cert-manager Certificate,
    prometheus-operator ServiceMonitor): no validator here has their CRD schemas, so they are listed explicitly as
    not schema-validated (their components' unit tests check their content)."""
    r = renders[(stack, mode)].result
    custom = [ident(o) for o in r.kubernetes if category(o) == "custom"]
    istio = [o for o in r.kubernetes if category(o) == "istio"]
    gateway_api = [o for o in r.kubernetes if category(o) == "gateway-api"]
    core = [o for o in r.kubernetes if category(o) == "core"]
    report("objects by validator",
           f"{stack}-{mode}: {len(r.kubernetes)} objects = "
           f"{len(core)} core (kubernetes-validate) + "
           f"{len(istio)} Istio (istioctl validate + analyze) + {len(gateway_api)} Gateway API "
           f"(upstream CRD schemas) + {len(custom)} other custom "
           f"resources NOT schema-validated ({', '.join(custom) or 'none'})")
    assert len(r.kubernetes) == len(custom) + len(istio) + len(gateway_api) + len(core)


@pytest.mark.parametrize("stack,mode", CASES, ids=CASE_IDS)
def test_a_misspelled_field_in_any_core_object_is_rejected(renders, stack, mode):
    """Proves the validator can fail, for every core object: a misspelled metadata field, a
    misspelled top-level field and (workloads) a misspelled container field are each rejected."""
    r = renders[(stack, mode)].result
    core = [o for o in r.kubernetes if category(o) == "core"]
    accepted = []
    tried = 0
    for obj in core:
        for what, broken in misspelled_variants(concrete(obj)):
            tried += 1
            try:
                validate_strict(broken, K8S_VERSION)
            except ValidationError:
                continue
            accepted.append(f"{ident(obj)} with {what}")
    report("kubernetes-validate (strict)",
           f"{stack}-{mode}: {tried} deliberately misspelled variants, {tried - len(accepted)} rejected")
    assert tried >= len(core) * 2
    assert accepted == []


def test_validator_rejects_a_known_bad_deployment():
    """A minimal hand-written check independent of the renders."""
    good = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }
    validate_strict(good, K8S_VERSION)
    bad = concrete(good)
    bad["spec"]["replicass"] = 2
    with pytest.raises(ValidationError, match="replicass"):
        validate_strict(bad, K8S_VERSION)
    wrong_type = concrete(good)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(ValidationError):
        validate_strict(wrong_type, K8S_VERSION)
