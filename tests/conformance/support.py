"""Helpers of the conformance tests: object classification, placeholder stand-in values,
kubernetes-validate in strict mode, deliberate misspellings."""

from __future__ import annotations

import copy
from importlib import metadata
from typing import Any

from authproxy_local.render import placeholders

ISTIO_GROUPS = {
    "networking.istio.io", "security.istio.io", "telemetry.istio.io", "extensions.istio.io",
}
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling"}
"""Kubernetes API groups without a dot; every other built-in group ends in .k8s.io."""


def group_of(obj: dict[str, Any]) -> str:
    api = obj["apiVersion"]
    return api.split("/", 1)[0] if "/" in api else ""


GATEWAY_API_GROUP = "gateway.networking.k8s.io"


def category(obj: dict[str, Any]) -> str:
    """'core' (built-in Kubernetes API), 'istio', 'gateway-api' (Kubernetes Gateway API custom
    resources, validated against the upstream CRDs), or 'custom' (other custom resources)."""
    g = group_of(obj)
    if g == GATEWAY_API_GROUP:
        return "gateway-api"
    if g in BUILTIN_GROUPS or g.endswith(".k8s.io"):
        return "core"
    if g in ISTIO_GROUPS:
        return "istio"
    return "custom"


def ident(obj: dict[str, Any]) -> str:
    m = obj["metadata"]
    ns = m.get("namespace")
    return f"{obj['apiVersion']} {obj['kind']} {ns + '/' if ns else ''}{m['name']}"


def _stand_in_value(kind: str, source: str) -> str:
    """What a placeholder stands for, shaped like the real thing for schema purposes."""
    return {"secret": "stand-in-secret", "computed": "stand-in-computed", "autoname": "autoname"}[kind]


def concrete(obj: Any) -> Any:
    """The object with placeholders replaced by stand-in values (``${base64:..}`` -> real base64),
    i.e. what `kubectl apply` would receive."""
    return placeholders.substitute(obj, _stand_in_value)


def kubernetes_validate_version() -> str:
    return metadata.version("kubernetes-validate")


def validate_strict(obj: dict[str, Any], version: str) -> None:
    """kubernetes-validate in strict mode (unknown fields rejected); raises on any problem."""
    import kubernetes_validate  # type: ignore[import-untyped]

    kubernetes_validate.validate(obj, version, strict=True)


def fragment_validator(schema_name: str, version: str):
    """A strict validator for a sub-object type (e.g. 'podsecuritycontext-v1')."""
    import jsonschema  # type: ignore[import-untyped]
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    d = f"kubernetes-json-schema/v{version}.0-local-strict"
    schema = utils.schema_contents(f"{d}/{schema_name}.json", version)
    defs = utils.schema_contents(f"{d}/_definitions.json", version)
    registry = Resource.from_contents(schema) @ (Resource.from_contents(defs) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def misspell(key: str) -> str:
    """A plausible typo that is never a real field: double the last letter."""
    return key + key[-1]


def misspelled_variants(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Copies of ``obj`` each with one misspelled field: in metadata, at the top level (the body
    key: spec/data/...), and, for workloads, in the first container."""
    out: list[tuple[str, dict[str, Any]]] = []
    o = copy.deepcopy(obj)
    o["metadata"]["nmae"] = obj["metadata"]["name"]
    out.append(("metadata.nmae", o))
    body = [k for k in obj if k not in ("apiVersion", "kind", "metadata")]
    o = copy.deepcopy(obj)
    if body:  # spec, data, rules, ...
        k = sorted(body)[0]
        o[misspell(k)] = o.pop(k)
    else:  # e.g. a Namespace with only metadata
        k = "kind"
        o[misspell(k)] = o[k]
    out.append((misspell(k), o))
    tmpl = obj.get("spec", {}).get("template", {}).get("spec", {})
    if tmpl.get("containers"):
        o = copy.deepcopy(obj)
        c = o["spec"]["template"]["spec"]["containers"][0]
        c["imagee"] = c.pop("image")
        out.append(("spec.template.spec.containers[0].imagee", o))
    return out


def misspell_spec(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A copy of an Istio object whose first spec field is misspelled (nested one level down
    when the first field holds an object, e.g. spec.selector.matchLabelss)."""
    o = copy.deepcopy(obj)
    spec = o["spec"]
    k = sorted(spec)[0]
    path = f"spec.{misspell(k)}"
    spec[misspell(k)] = spec.pop(k)
    return path, o


# --------------------------------------------------------------------------------------------
# Gateway API: strict validation against the upstream CRDs' OpenAPI v3 schemas
# --------------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """A CRD structural schema as strict JSON Schema: every object that declares ``properties``
    (and does not preserve unknown fields) rejects any other field, as the API server prunes or,
    with ``kubectl apply --validate=strict``, rejects them."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load_crd_schemas(files: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON Schema, for every served version of every CRD file."""
    import yaml

    out: dict[tuple[str, str], dict[str, Any]] = {}
    for f in files:
        with open(f) as fh:
            docs = list(yaml.safe_load_all(fh))
        for crd in docs:
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                if v.get("served"):
                    out[(f"{group}/{v['name']}", kind)] = _strict(v["schema"]["openAPIV3Schema"])
    return out


def crd_errors(schemas: dict[tuple[str, str], dict[str, Any]], obj: dict[str, Any]) -> list[str]:
    """Every schema violation of ``obj`` (empty: valid); an unknown apiVersion/kind is one."""
    import jsonschema

    schema = schemas.get((obj["apiVersion"], obj["kind"]))
    if schema is None:
        return [f"no served CRD version for {obj['apiVersion']} {obj['kind']}"]
    v = jsonschema.validators.Draft202012Validator(schema)
    return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
            for e in sorted(v.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]
