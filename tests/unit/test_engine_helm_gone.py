"""`make engine` after destroy: the Helm release's own objects (made by Helm from its manifest, not
in Pulumi's state) must be gone too. The manifest comes from Helm's release record."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest

from authproxy_local.cluster.apiserver import Cluster
from authproxy_local.engine import checks

MANIFEST = """---
# Source: redis-ha/templates/redis-ha-service.yaml
apiVersion: v1
kind: Service
metadata:
  name: authproxy-redis
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: authproxy-redis-server
  namespace: authproxy
"""


def record(status: str, manifest: str = MANIFEST) -> dict[str, Any]:
    blob = gzip.compress(json.dumps({"name": "authproxy-redis", "manifest": manifest}).encode())
    # Helm's Secret driver stores base64(gzip(json)); the API server base64-encodes Secret data.
    data = base64.b64encode(base64.b64encode(blob)).decode()
    return {"metadata": {"labels": {"status": status}}, "data": {"release": data}}


class FakeCluster(Cluster):
    def __init__(self, records: list[dict[str, Any]], live: set[tuple[str, str, str]]) -> None:
        self.records, self.live = records, live

    def helm_release_records(self, namespace: str | None, release: str | None) -> list[dict[str, Any]]:
        return self.records

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return {"kind": kind} if (kind, namespace or "", name) in self.live else None


def test_the_release_record_names_the_objects_helm_made() -> None:
    c = FakeCluster([record("superseded", "kind: ConfigMap\napiVersion: v1\nmetadata: {name: old}\n"),
                     record("deployed")], set())
    assert c.helm_release_objects("authproxy", "authproxy-redis") == [
        ("v1", "Service", "authproxy", "authproxy-redis"),
        ("apps/v1", "StatefulSet", "authproxy", "authproxy-redis-server")]


def test_objects_or_records_left_after_destroy_fail_the_engine() -> None:
    made = {"authproxy/authproxy-redis": [("apps/v1", "StatefulSet", "authproxy", "authproxy-redis-server")]}
    checks.verify_helm_objects_gone(FakeCluster([], set()), "dev", made)
    with pytest.raises(checks.EngineError, match="StatefulSet authproxy/authproxy-redis-server"):
        checks.verify_helm_objects_gone(
            FakeCluster([], {("StatefulSet", "authproxy", "authproxy-redis-server")}), "dev", made)
    with pytest.raises(checks.EngineError, match="release records"):
        checks.verify_helm_objects_gone(FakeCluster([record("uninstalling")], set()), "dev", made)
    with pytest.raises(checks.EngineError, match="made no objects"):
        checks.verify_helm_objects_gone(FakeCluster([], set()), "dev", {"authproxy/x": []})
