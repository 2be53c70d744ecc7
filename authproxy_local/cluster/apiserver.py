"""etcd + kube-apiserver on loopback, and a ``lightkube`` client for them.

    cluster = Cluster(work).start()        # certificates, etcd, kube-apiserver, kubeconfig
    cluster.apply_crds(docs)               # created, waited for until Established
    cluster.create_namespaces(["demo"])
    cluster.get("apps/v1", "Deployment", "authproxy", "oauth2-proxy")   # dict or None
    cluster.stop()

On its own there is no kubelet, scheduler or controller manager: objects are stored, validated
and defaulted; pods never run. :mod:`.controllers` adds them (`make engine`).

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.install`, ``lightkube``, PyYAML.
"""

from __future__ import annotations

import base64
import gzip
import json
import ssl
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lightkube import ApiError, Client, KubeConfig, LoadResourceError
from lightkube.codecs import from_dict
from lightkube.core.resource import NamespacedResource
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import load_in_cluster_generic_resources
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace, Secret

from authproxy_local import install
from authproxy_local.core.pki import cluster_pki
from authproxy_local.core.processes import HarnessError, Process, free_port, wait_for


class ClusterError(HarnessError):
    """The local API server refused something; the message names the object."""


def _log(msg: str) -> None:
    print(f"[cluster] {msg}", flush=True)


@dataclass
class Cluster:
    work: Path
    procs: list[Process] = field(default_factory=list)
    port: int = 0
    pki: dict[str, Path] = field(default_factory=dict)
    _client: Client | None = field(default=None, repr=False)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.work / "kubeconfig"

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(KubeConfig.from_file(self.kubeconfig), trust_env=False,
                                  field_manager="authproxy-local")
        return self._client

    def start(self) -> Cluster:
        self.work.mkdir(parents=True, exist_ok=True)
        etcd_bin = install.ensure("etcd")
        apiserver_bin = install.ensure("kube-apiserver")
        self.pki = cluster_pki(self.work / "pki")
        etcd_client, etcd_peer = free_port(), free_port()
        etcd = Process("etcd", [
            str(etcd_bin), "--data-dir", str(self.work / "etcd"), "--name", "engine",
            f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=engine=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level=warn",
        ], {"PATH": "/usr/bin:/bin"}, self.work / "etcd.log").start()
        self.procs.append(etcd)
        self.port = free_port()
        p = self.pki
        apiserver = Process("kube-apiserver", [
            str(apiserver_bin),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={p['serving_cert']}", f"--tls-private-key-file={p['serving_key']}",
            f"--client-ca-file={p['ca']}",
            f"--service-account-key-file={p['sa_pub']}",
            f"--service-account-signing-key-file={p['sa_key']}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=Node,RBAC",
            "--cert-dir", str(self.work / "apiserver-certs"),
        ], {"PATH": "/usr/bin:/bin"}, self.work / "kube-apiserver.log").start()
        self.procs.append(apiserver)
        t = wait_for("kube-apiserver /readyz", self.ready, 180, apiserver, interval=0.5)
        _log(f"kube-apiserver ready in {t:.1f}s on {self.server}")
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "engine",
            "clusters": [{"name": "engine", "cluster": {
                "server": self.server, "certificate-authority": str(p["ca"])}}],
            "users": [{"name": "admin", "user": {
                "client-certificate": str(p["admin_cert"]), "client-key": str(p["admin_key"])}}],
            "contexts": [{"name": "engine", "context": {"cluster": "engine", "user": "admin"}}],
        }))
        return self

    def ready(self) -> bool:
        """The API server's health endpoint (not a resource: lightkube has no call for it) says ok."""
        ctx = ssl.create_default_context(cafile=str(self.pki["ca"]))
        ctx.load_cert_chain(str(self.pki["admin_cert"]), str(self.pki["admin_key"]))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
        with opener.open(f"{self.server}/readyz", timeout=5) as r:
            return bool(r.status == 200 and r.read() == b"ok")

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        for proc in reversed(self.procs):
            proc.stop(timeout=10)

    # ---- objects -------------------------------------------------------------------------

    def apply_crds(self, docs: Iterable[Mapping[str, Any]]) -> int:
        """Create the CRDs among ``docs`` (an existing one is kept) and wait until each is
        Established; returns how many."""
        names = []
        for d in docs:
            if not d or d.get("kind") != "CustomResourceDefinition":
                continue
            try:
                self.client.create(from_dict(dict(d)))
            except ApiError as e:
                if e.status.code != 409:
                    raise ClusterError(
                        f"creating CRD {d['metadata']['name']}: {e.status.code} {e.status.message}") from e
            names.append(d["metadata"]["name"])
        for n in names:
            self.client.wait(CustomResourceDefinition, n, for_conditions=["Established"], raise_for_conditions=[])
        load_in_cluster_generic_resources(self.client)  # their kinds are now known to get()
        return len(names)

    def create_namespaces(self, names: Iterable[str]) -> None:
        """Namespaces a user's cluster has before the stack (an existing one is kept)."""
        for ns in names:
            try:
                self.client.create(Namespace(metadata=ObjectMeta(name=ns)))
            except ApiError as e:
                if e.status.code != 409:
                    raise ClusterError(f"creating namespace {ns}: {e.status.code} {e.status.message}") from e

    def create_objects(self, docs: Iterable[Mapping[str, Any]]) -> None:
        """Objects a user's cluster has before the stack (an ambient app's Service, which the
        stack only patches); an existing one is kept."""
        for d in docs:
            try:
                self.client.create(from_dict(dict(d)))
            except ApiError as e:
                if e.status.code != 409:
                    raise ClusterError(f"creating {d['kind']} {d['metadata'].get('namespace', '')}/"
                                       f"{d['metadata']['name']}: {e.status.code} {e.status.message}") from e

    def create_object(self, obj: Mapping[str, Any]) -> str:
        """Create one object (a dict as in a manifest); returns its uid."""
        try:
            made: Any = self.client.create(from_dict(dict(obj)))
        except ApiError as e:
            meta = obj.get("metadata") or {}
            raise ClusterError(f"creating {obj.get('kind')} {meta.get('namespace')}/{meta.get('name')}: "
                               f"{e.status.code} {e.status.message}") from e
        return str(made.metadata.uid)

    def delete_object(self, obj: Mapping[str, Any]) -> None:
        """Delete one object (a dict with apiVersion, kind and metadata)."""
        meta = obj["metadata"]
        res = resource_registry.load(obj["apiVersion"], obj["kind"])
        namespaced = issubclass(res, NamespacedResource)
        self.client.delete(res, meta["name"], namespace=meta.get("namespace") if namespaced else None)  # type: ignore[type-var]

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """An object as the API server holds it, or None when it is not there."""
        try:
            res = resource_registry.load(api_version, kind)
        except LoadResourceError as e:
            raise ClusterError(f"the API server does not serve {kind} in {api_version}") from e
        namespaced = issubclass(res, NamespacedResource)
        try:
            obj: Any = self.client.get(res, name, namespace=namespace if namespaced else None)  # type: ignore[type-var]
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise
        return dict(obj.to_dict())

    def helm_release_objects(self, namespace: str, release: str) -> list[tuple[str, str, str, str]]:
        """The objects the deployed revision of a Helm release made, from its release record
        (the manifest Helm keeps: base64 of gzipped JSON in the Secret's ``release`` key), as
        (apiVersion, kind, namespace, name)."""
        deployed = [s for s in self.helm_release_records(namespace, release)
                    if (s["metadata"].get("labels") or {}).get("status") == "deployed"]
        if len(deployed) != 1:
            raise ClusterError(f"Helm release {namespace}/{release}: {len(deployed)} deployed records")
        blob = base64.b64decode(base64.b64decode(deployed[0]["data"]["release"]))
        manifest = json.loads(gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob)["manifest"]
        out = []
        for doc in yaml.safe_load_all(manifest):
            if doc and doc.get("kind"):
                meta = doc.get("metadata") or {}
                out.append((doc["apiVersion"], doc["kind"], meta.get("namespace") or namespace, meta["name"]))
        return out

    def helm_release_records(self, namespace: str | None, release: str | None) -> list[dict[str, Any]]:
        """The Secrets in which Helm keeps a release's history (``owner=helm,name=<release>``)."""
        return [s.to_dict() for s in self.client.list(Secret, namespace=namespace,
                                                      labels={"owner": "helm", "name": release})]
