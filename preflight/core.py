"""The preflight framework: queries, what was read, checks, and the verdict.

A check is two pure functions over the stack config and a :class:`Snapshot` of what was read:
``reads(cfg, snap)`` names the objects it needs (it may name more once earlier reads are in, e.g.
the pods a Service selects), ``verify(cfg, snap)`` returns one :class:`Failure` per problem, each
one line naming the fix. A reader (``preflight.reader.LiveReader`` against a cluster, a fake over
plain dicts in the tests) answers the queries; :func:`gather` asks it round by round until no check
wants anything new, :func:`evaluate` turns the snapshot into failures. Nothing here writes.

Other modules add checks with :func:`register` (or the :func:`check` decorator); the registry keeps
them in registration order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pulumi

from components.config import NAMESPACE, StackConfig

# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------

KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "Node"): ("nodes", False),
    ("v1", "Pod"): ("pods", True),
    ("v1", "Service"): ("services", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("storage.k8s.io/v1", "StorageClass"): ("storageclasses", False),
    ("gateway.networking.k8s.io/v1", "GatewayClass"): ("gatewayclasses", False),
    ("gateway.networking.k8s.io/v1", "Gateway"): ("gateways", True),
    ("cert-manager.io/v1", "ClusterIssuer"): ("clusterissuers", False),
    ("cert-manager.io/v1", "Issuer"): ("issuers", True),
}
"""(apiVersion, kind) -> (resource plural, namespaced): every kind a check may read."""


@dataclass(frozen=True, order=True)
class Get:
    """One object. ``metadata_only``: existence and metadata, never the content (Secrets)."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None
    metadata_only: bool = False

    def describe(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@dataclass(frozen=True, order=True)
class List:
    """Objects of a kind, in a namespace (None: cluster-scoped kinds) with these labels."""

    api_version: str
    kind: str
    namespace: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        sel = ",".join(f"{k}={v}" for k, v in self.labels)
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.kind} list{where}" + (f" ({sel})" if sel else "")


@dataclass(frozen=True, order=True)
class ServerVersion:
    """The API server's /version (also the first read: it proves the cluster is reachable)."""

    def describe(self) -> str:
        return "the API server's version"


@dataclass(frozen=True, order=True)
class HttpGet:
    """An HTTPS GET from where `pulumi` runs (Keycloak's discovery document). ``ca_pem``: a
    private CA to trust instead of the system store."""

    url: str
    ca_pem: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        return f"GET {self.url}"


Query = Get | List | ServerVersion | HttpGet


def labels_of(selector: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(selector.items()))


State = Literal["ok", "absent", "unserved", "forbidden", "error"]


@dataclass(frozen=True)
class Result:
    """What a read gave.

    ``ok``: ``value`` is the object (Get), the list of objects (List), the version document
    (ServerVersion) or ``{"status": int, "json": ...}`` (HttpGet). ``absent``: the object does not
    exist. ``unserved``: the API server does not serve that kind (its CRD is not installed).
    ``forbidden``: the identity may not read it. ``error``: anything else (``detail`` says what).
    """

    state: State
    value: Any = None
    detail: str = ""


class Reader(Protocol):
    """Answers queries; never writes. ``where`` names the cluster for messages."""

    where: str

    def read(self, query: Query) -> Result: ...


class Snapshot(dict[Query, Result]):
    """Every query asked so far and its result."""

    def obj(self, q: Get) -> dict[str, Any] | None:
        r = self.get(q)
        return r.value if r is not None and r.state == "ok" else None

    def objs(self, q: List) -> list[dict[str, Any]]:
        r = self.get(q)
        return list(r.value) if r is not None and r.state == "ok" else []

    def state(self, q: Query) -> State | None:
        r = self.get(q)
        return r.state if r is not None else None


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One problem, one line: what is wrong and how to fix it (never a secret value).

    ``up_only``: in `pulumi preview` a warning, in `pulumi up` a failure; for problems whose fix
    needs what the preview shows (the mesh config to merge before the first `up`).
    """

    check: str
    message: str
    subject: str = ""
    up_only: bool = False

    def line(self) -> str:
        who = f"{self.check} ({self.subject})" if self.subject else self.check
        return f"{who}: {self.message}"


@dataclass(frozen=True)
class Check:
    name: str
    """Stable name: in messages and in `authproxy:preflight.skip`."""
    title: str
    """What it proves (docs/preflight.md lists every check by it)."""
    reads: Callable[[StackConfig, Snapshot], Iterable[Query]]
    verify: Callable[[StackConfig, Snapshot], Iterable[Failure]]


CHECKS: dict[str, Check] = {}


def register(c: Check) -> Check:
    if c.name in CHECKS and CHECKS[c.name] is not c:
        raise ValueError(f"a preflight check named {c.name!r} is already registered")
    CHECKS[c.name] = c
    return c


def check(
    name: str, title: str, reads: Callable[[StackConfig, Snapshot], Iterable[Query]]
) -> Callable[[Callable[[StackConfig, Snapshot], Iterable[Failure]]],
              Callable[[StackConfig, Snapshot], Iterable[Failure]]]:
    """Decorator: register ``verify`` as the check ``name`` with its ``reads``."""

    def deco(
        verify: Callable[[StackConfig, Snapshot], Iterable[Failure]],
    ) -> Callable[[StackConfig, Snapshot], Iterable[Failure]]:
        register(Check(name, title, reads, verify))
        return verify

    return deco


# --------------------------------------------------------------------------------------------
# Running them
# --------------------------------------------------------------------------------------------

MAX_ROUNDS = 5
"""Reads may depend on earlier reads (Service -> its pods); no check needs more rounds."""


class PreflightError(pulumi.RunError):
    """The cluster is not ready for the stack. A RunError: Pulumi prints it without a traceback."""

    def __init__(self, failures: list[Failure], where: str = ""):
        self.failures = failures
        n = len(failures)
        head = f"preflight: {n} problem{'s' if n != 1 else ''}"
        head += f" in {where}" if where else ""
        lines = [f"  - {f.line()}" for f in failures]
        super().__init__(head + "; nothing was created or changed:\n" + "\n".join(lines))


def selected(skip: Iterable[str]) -> list[Check]:
    """The registered checks minus ``skip``; an unknown name is a config error."""
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise PreflightError([Failure(
            "config",
            f"authproxy:preflight.skip names {unknown}, which are not checks; known: "
            f"{sorted(CHECKS)}",
        )])
    return [c for name, c in CHECKS.items() if name not in set(skip)]


def gather(cfg: StackConfig, checks: Iterable[Check], reader: Reader) -> Snapshot:
    """Ask ``reader`` every query the checks name, round by round, until nothing new is wanted."""
    checks = list(checks)
    snap = Snapshot()
    probe = ServerVersion()
    snap[probe] = reader.read(probe)
    if snap[probe].state != "ok":
        r = snap[probe]
        raise PreflightError([Failure(
            "cluster",
            f"cannot reach the Kubernetes API server ({r.state}: {r.detail}); check "
            "kubernetes:kubeconfig / kubernetes:context (or KUBECONFIG), or set "
            f"{NAMESPACE}:preflight.enabled false for an offline preview",
        )], reader.where)
    for _ in range(MAX_ROUNDS):
        wanted = sorted({q for c in checks for q in c.reads(cfg, snap)} - set(snap), key=repr)
        if not wanted:
            break
        for q in wanted:
            snap[q] = reader.read(q)
    return snap


def unreadable(q: Query, r: Result) -> str:
    if r.state == "forbidden":
        return (f"cannot read {q.describe()}: forbidden for this identity; grant it read access "
                f"(docs/preflight.md#permissions) or skip this check with "
                f"{NAMESPACE}:preflight.skip")
    return f"cannot read {q.describe()}: {r.detail or r.state}"


def evaluate(cfg: StackConfig, checks: Iterable[Check], snap: Snapshot) -> list[Failure]:
    """Every failure of every check. A check whose reads were refused or failed fails with that
    (it cannot vouch for what it did not see); a forbidden read only warns in a preview, so a
    read-only preview identity without access to, e.g., Secrets still previews."""
    out: list[Failure] = []
    for c in checks:
        # HTTP answers (Keycloak) are the check's own to judge; Kubernetes reads are judged here.
        bad = [(q, snap[q]) for q in c.reads(cfg, snap)
               if q in snap and not isinstance(q, HttpGet)
               and snap[q].state in ("forbidden", "error")]
        if bad:
            q, r = bad[0]
            out.append(Failure(c.name, unreadable(q, r), up_only=r.state == "forbidden"))
            continue
        out.extend(c.verify(cfg, snap))
    return out


@dataclass
class Verdict:
    checks: list[str]
    errors: list[Failure]
    warnings: list[Failure]


def judge(failures: list[Failure], checks: Iterable[Check], dry_run: bool) -> Verdict:
    """Split failures into what stops this run and what only warns (up-only ones in a preview)."""
    errors = [f for f in failures if not (dry_run and f.up_only)]
    warnings = [f for f in failures if dry_run and f.up_only]
    return Verdict([c.name for c in checks], errors, warnings)
