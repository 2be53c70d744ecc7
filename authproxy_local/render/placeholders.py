"""The placeholder grammar of the offline render (see docs/render.md, "Placeholders").

The render never contains a real secret or a value that only a provider can compute. In their
place it writes placeholders that the live harness substitutes with values it generates locally:

    ${secret:SOURCE}      a secret.   SOURCE = <random resource>.<field>  (secrets-client-secret.result,
                                               secrets-cookie-secret.base64url)
                                             | config.<secret config key> (config.keycloakAdminPassword)
    ${computed:SOURCE}    a value the provider computes.
                                   SOURCE = <resource>.<field>            (identity-client.id)
                                          | <function>(<k>=<v>,...).<field> (getGroup(name=sre,realmId=corp).id)
    ${autoname:NAME}      a Kubernetes object without metadata.name (Pulumi would auto-name it):
                          NAME is the Pulumi resource name. A render with one of these is
                          incomplete; render.json lists them under "warnings".
    ${base64:TEXT}        only as a *whole* value: base64 of TEXT after substituting the
                          placeholders inside it (Secret `data` that carries a secret is shown
                          decoded so reviewers can read it).

SOURCE never contains '}' or whitespace. Placeholders may sit inside longer strings
(`redis://:${secret:secrets-redis-password.result}@redis:6379`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

PLACEHOLDER_RE = re.compile(r"\$\{(secret|computed|autoname):([^}\s]+)\}")
"""One placeholder; group 1 is its kind, group 2 its source."""

BASE64_PREFIX = "${base64:"


def secret(source: str) -> str:
    return "${secret:" + source + "}"


def computed(source: str) -> str:
    return "${computed:" + source + "}"


def autoname(name: str) -> str:
    return "${autoname:" + name + "}"


def b64(text: str) -> str:
    return BASE64_PREFIX + text + "}"


def find_all(value: Any) -> set[str]:
    """Every placeholder (full text, e.g. '${secret:x.result}') in a nested value."""
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, str):
            found.update(m.group(0) for m in PLACEHOLDER_RE.finditer(v))
        elif isinstance(v, Mapping):
            for k, item in v.items():
                walk(k)
                walk(item)
        elif isinstance(v, list | tuple):
            for item in v:
                walk(item)

    walk(value)
    return found


def substitute(value: Any, resolve: Callable[[str, str], str]) -> Any:
    """Replace every placeholder in a nested value: ``resolve(kind, source)`` gives the text.

    ``${base64:TEXT}`` whole values become the base64 of TEXT after substitution. The live
    harness uses this with the real values it generated.
    """
    if isinstance(value, str):
        def one(m: re.Match[str]) -> str:
            return resolve(m.group(1), m.group(2))

        if value.startswith(BASE64_PREFIX) and value.endswith("}"):
            inner = PLACEHOLDER_RE.sub(one, value[len(BASE64_PREFIX):-1])
            return base64.b64encode(inner.encode()).decode()
        return PLACEHOLDER_RE.sub(one, value)
    if isinstance(value, Mapping):
        return {substitute(k, resolve): substitute(v, resolve) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(v, resolve) for v in value]
    return value
