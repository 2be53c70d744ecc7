"""The one reader of the live cluster and Keycloak: GETs only.

Which cluster: the one the stack's default Kubernetes provider uses, resolved the way
pulumi-kubernetes (client-go) resolves it: ``kubernetes:kubeconfig`` (a path, ``~`` expanded, or
the kubeconfig's content), else the files in ``KUBECONFIG`` (merged, the first file wins), else
``~/.kube/config``, else the in-cluster service account; then ``kubernetes:context`` (default: the
current context) and ``kubernetes:cluster``. lightkube turns that context into an authenticated
HTTP client (client certificates, tokens, exec credential plugins); the reads are plain GETs of the
kinds in :data:`preflight.core.KINDS`. Secrets are read as metadata only
(``PartialObjectMetadata``): their existence, never their data.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import yaml
from lightkube.config.client_adapter import Client as http_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError

from preflight.core import KINDS, Get, HttpGet, List, Query, Result, ServerVersion

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PARTIAL_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"
_PATH_KEYS = {
    "cluster": ("certificate-authority",),
    "user": ("client-certificate", "client-key", "tokenFile"),
}


class TargetError(Exception):
    """The kubeconfig cannot be loaded (one line, no secret)."""


@dataclass(frozen=True)
class KubeTarget:
    """The stack's `kubernetes:*` provider config (unset values: the ambient kubeconfig)."""

    kubeconfig: str | None = None
    context: str | None = None
    cluster: str | None = None


def _absolute(conf: dict[str, Any], base: Path) -> dict[str, Any]:
    """Resolve a kubeconfig file's relative paths against its folder (merged files keep theirs)."""
    for section, keys in _PATH_KEYS.items():
        for entry in conf.get(section + "s") or []:
            body = entry.get(section) or {}
            for key in keys:
                value = body.get(key)
                if isinstance(value, str) and value and not os.path.isabs(value):
                    body[key] = str(base / value)
    return conf


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise TargetError(f"cannot read kubeconfig {path}: {type(e).__name__}") from None
    if not isinstance(data, dict):
        raise TargetError(f"kubeconfig {path} is not a kubeconfig")
    return _absolute(data, path.parent)


def _merge(confs: list[dict[str, Any]]) -> dict[str, Any]:
    """client-go's merge of several kubeconfig files: the first definition of a name wins."""
    out: dict[str, Any] = {"clusters": [], "contexts": [], "users": []}
    for conf in confs:
        for section in ("clusters", "contexts", "users"):
            known = {e.get("name") for e in out[section]}
            out[section] += [e for e in conf.get(section) or [] if e.get("name") not in known]
        if not out.get("current-context") and conf.get("current-context"):
            out["current-context"] = conf["current-context"]
    return out


def kubeconfig_dict(
    target: KubeTarget, environ: Mapping[str, str] = os.environ, home: Path | None = None
) -> tuple[dict[str, Any] | None, str]:
    """The kubeconfig the provider would use, and where it came from (None: in-cluster)."""
    home = home or Path(os.path.expanduser("~"))
    value = target.kubeconfig
    if value:
        expanded = str(home / value[2:]) if value.startswith("~/") else (str(home) if value == "~" else value)
        if os.path.isfile(expanded):
            return _read_file(Path(expanded)), f"kubernetes:kubeconfig ({expanded})"
        try:
            data = yaml.safe_load(value)
        except yaml.YAMLError:
            data = None
        if not isinstance(data, dict) or "clusters" not in data:
            raise TargetError("kubernetes:kubeconfig is neither a file nor a kubeconfig")
        return data, "kubernetes:kubeconfig (inline)"
    env = environ.get("KUBECONFIG", "")
    files = [Path(p) for p in env.split(os.pathsep) if p]
    existing = [p for p in files if p.is_file()]
    if existing:
        return _merge([_read_file(p) for p in existing]), "KUBECONFIG"
    default = home / ".kube" / "config"
    if default.is_file():
        return _read_file(default), str(default)
    return None, "in-cluster service account"


def single_config(target: KubeTarget, environ: Mapping[str, str] = os.environ,
                  home: Path | None = None) -> tuple[SingleConfig, str]:
    """lightkube's view of the target context, and a name for messages (context and server)."""
    conf, source = kubeconfig_dict(target, environ, home)
    try:
        if conf is None:
            if not (SERVICE_ACCOUNT / "token").is_file() or "KUBERNETES_SERVICE_HOST" not in environ:
                raise TargetError(
                    "no kubeconfig: set kubernetes:kubeconfig (or KUBECONFIG), or create "
                    "~/.kube/config")
            single = KubeConfig.from_service_account(SERVICE_ACCOUNT).get()
        else:
            kc = KubeConfig.from_dict(conf)
            chosen = kc.get(target.context or None)
            assert chosen is not None  # get() raises rather than return None without a default
            single = chosen
            if target.cluster:
                if target.cluster not in kc.clusters:
                    raise TargetError(f"kubernetes:cluster {target.cluster!r} is not in the kubeconfig")
                single = SingleConfig(context_name=single.context_name, context=single.context,
                                      cluster=kc.clusters[target.cluster], user=single.user,
                                      fname=single.fname)
    except ConfigError as e:
        raise TargetError(f"{source}: {e}") from None
    assert single is not None
    return single, f"context {single.context_name!r} ({single.cluster.server})"


def api_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    plural, namespaced = KINDS[(api_version, kind)]
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespaced and namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    return path + (f"/{name}" if name else "")


def _status_named(resp: httpx.Response, name: str) -> bool:
    """A 404 for a missing object names it; one for an unserved kind does not."""
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and (body.get("details") or {}).get("name") == name


def loopback(url: str) -> bool:
    """Whether ``url`` names this machine: Go's HTTP client (client-go, the providers) never sends
    such requests through HTTP(S)_PROXY, and neither does the preflight."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LiveReader:
    """GETs against the API server (lightkube's authenticated client) and Keycloak (urllib)."""

    def __init__(self, single: SingleConfig, where: str, timeout: float,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.where = where
        self.timeout = timeout
        self.http = http_client(single, ConnectionParams(
            timeout=httpx.Timeout(timeout), transport=transport,
            trust_env=not loopback(single.cluster.server)))

    @classmethod
    def connect(cls, target: KubeTarget, timeout: float) -> LiveReader:
        single, where = single_config(target)
        return cls(single, where, timeout)

    def _get(self, path: str, params: dict[str, str] | None = None,
             accept: str = "application/json") -> httpx.Response | Result:
        try:
            return self.http.get(path, params=params, headers={"Accept": accept})
        except (httpx.HTTPError, ConfigError, OSError) as e:
            return Result("error", detail=f"{type(e).__name__}: {str(e)[:200]}")

    @staticmethod
    def _refused(resp: httpx.Response) -> Result | None:
        if resp.status_code == 401:
            return Result("error", detail="HTTP 401: the kubeconfig's credentials were refused")
        if resp.status_code == 403:
            return Result("forbidden", detail="HTTP 403")
        if resp.status_code >= 400 and resp.status_code != 404:
            return Result("error", detail=f"HTTP {resp.status_code}")
        return None

    def read(self, query: Query) -> Result:
        if isinstance(query, HttpGet):
            return http_get(query, self.timeout)
        if isinstance(query, ServerVersion):
            resp = self._get("/version")
            if isinstance(resp, Result):
                return resp
            return self._refused(resp) or (
                Result("ok", resp.json()) if resp.status_code == 200
                else Result("error", detail=f"HTTP {resp.status_code}"))
        if isinstance(query, Get):
            path = api_path(query.api_version, query.kind, query.namespace, query.name)
            resp = self._get(path, accept=PARTIAL_METADATA if query.metadata_only else "application/json")
            if isinstance(resp, Result):
                return resp
            if resp.status_code == 404:
                return Result("absent" if _status_named(resp, query.name) else "unserved")
            return self._refused(resp) or Result("ok", resp.json())
        if isinstance(query, List):
            path = api_path(query.api_version, query.kind, query.namespace)
            params = {"labelSelector": ",".join(f"{k}={v}" for k, v in query.labels)} if query.labels else None
            items: list[dict[str, Any]] = []
            token = ""
            while True:
                page = dict(params or {}, **({"continue": token} if token else {}), limit="500")
                resp = self._get(path, params=page)
                if isinstance(resp, Result):
                    return resp
                if resp.status_code == 404:
                    return Result("unserved")
                refused = self._refused(resp)
                if refused:
                    return refused
                body = resp.json()
                items += body.get("items") or []
                token = (body.get("metadata") or {}).get("continue") or ""
                if not token:
                    return Result("ok", items)
        raise TypeError(f"unknown query {query!r}")


def http_get(q: HttpGet, timeout: float) -> Result:
    """GET ``q.url`` trusting the system store plus ``q.ca_pem``; proxies from the environment."""
    ctx = ssl.create_default_context()
    if q.ca_pem:
        try:
            ctx.load_verify_locations(cadata=q.ca_pem)
        except ssl.SSLError as e:
            return Result("error", detail=f"keycloak.caCertificate is not a usable CA ({e.reason})")
    req = urllib.request.Request(q.url, headers={"Accept": "application/json"})
    handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=ctx)]
    if loopback(q.url):
        handlers.append(urllib.request.ProxyHandler({}))
    try:
        with urllib.request.build_opener(*handlers).open(req, timeout=timeout) as resp:
            status, body = resp.status, resp.read(1 << 20)
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read(1 << 20)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return Result("error", detail=f"{type(reason).__name__}: {str(reason)[:200]}")
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    return Result("ok", {"status": status, "json": doc})
