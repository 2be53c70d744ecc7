"""`make engine`: the stacks through the real Pulumi engine, providers and servers.

On this machine (no cluster, no Docker, no GitHub) it starts etcd and kube-apiserver on loopback
(throw-away CA, serving and admin client certificates, service-account keys), installs the CRDs the
stacks use (Istio's, from the istio.io/istio Go module; the Gateway API's, from the
sigs.k8s.io/gateway-api module), starts a real Keycloak over HTTPS, logs the
pulumi CLI into a file backend in a temp dir and then, for each stack, runs

    pulumi preview; pulumi preview --policy-pack policy; pulumi up --yes
    (checks on the real Keycloak and API server)
    pulumi preview --expect-no-changes
    rotation.cookieSecret bump -> preview shows exactly the secret and the rollout
    pulumi destroy --yes (checks nothing is left)

The stacks are the checked-in `Pulumi.<stack>.yaml` files (dev in both ext_authz modes, prod with
its pre-made realm and admin client and the cert-manager/ServiceMonitor CRDs from their Go
modules); `--interrupt` also kills the first stack's `up` halfway (SIGKILL) and recovers it as
README's troubleshooting says (cancel, refresh importing/clearing pending creates, up); the
local servers are set through stack config only (`pulumi config set`), exactly as a user
points a stack at their own Keycloak and cluster. Every tool comes from `authproxy_local.install`
(CI=true: a missing one fails the run).
The last line is the summary `engine: <n> stacks up, <k> resources, ...`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import install
from .processes import Process, _file_lock, free_port, wait_for

REPO = pathlib.Path(__file__).resolve().parent.parent
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "components", "policy")
REDIS_CHART = REPO.parent / "shared" / "charts" / "redis-ha-4.39.0.tgz"
EXISTING_NAMESPACES = ("istio-ingress", "demo", "monitoring", "wiki")
PLUGINS = ("random", "keycloak", "kubernetes")
KEYCLOAK_ADMIN = "admin"


SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270"
"""How Pulumi's state marks a secret value (github.com/pulumi/pulumi sdk/go/common/resource/sig)."""


class EngineError(RuntimeError):
    """A step failed; the message says which and where its log is."""


def log(msg: str) -> None:
    print(f"[engine] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Certificates for the API server
# --------------------------------------------------------------------------------------------


def _cluster_pki(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """CA, API server serving cert (localhost, 127.0.0.1), admin client cert (O=system:masters),
    service-account key pair."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    directory.mkdir(parents=True, exist_ok=True)

    def pem_key(key: Any) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def write(name: str, data: bytes) -> pathlib.Path:
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authproxy engine-test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(subject: x509.Name, usage: Any, sans: list[Any] | None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

    serving = leaf(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
                   ExtendedKeyUsageOID.SERVER_AUTH,
                   [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    admin = leaf(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                            x509.NameAttribute(NameOID.COMMON_NAME, "authproxy-engine-admin")]),
                 ExtendedKeyUsageOID.CLIENT_AUTH, None)
    # Keycloak's serving certificate: the stack's keycloak.url must be a dotted host name, and no
    # name other than `localhost` resolves here without touching /etc/hosts, so it is 127.0.0.1.
    keycloak = leaf(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
                    ExtendedKeyUsageOID.SERVER_AUTH,
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "ca": write("ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        "serving_cert": write("apiserver.pem", serving[0]),
        "serving_key": write("apiserver.key", serving[1]),
        "admin_cert": write("admin.pem", admin[0]),
        "admin_key": write("admin.key", admin[1]),
        "keycloak_cert": write("keycloak.pem", keycloak[0]),
        "keycloak_key": write("keycloak.key", keycloak[1]),
        "sa_key": write("sa.key", pem_key(sa)),
        "sa_pub": write("sa.pub", sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)),
    }


# --------------------------------------------------------------------------------------------
# etcd + kube-apiserver
# --------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    work: pathlib.Path
    procs: list[Process] = field(default_factory=list)
    port: int = 0
    pki: dict[str, pathlib.Path] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.work / "kubeconfig"

    def start(self) -> Cluster:
        etcd_bin = install.ensure("etcd")
        apiserver_bin = install.ensure("kube-apiserver")
        self.pki = _cluster_pki(self.work / "pki")
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
        t = wait_for("kube-apiserver /readyz", lambda: self.get("/readyz", raw=True) == "ok", 180, apiserver,
                     interval=0.5)
        log(f"kube-apiserver ready in {t:.1f}s on {self.server}")
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "engine",
            "clusters": [{"name": "engine", "cluster": {
                "server": self.server, "certificate-authority": str(p["ca"])}}],
            "users": [{"name": "admin", "user": {
                "client-certificate": str(p["admin_cert"]), "client-key": str(p["admin_key"])}}],
            "contexts": [{"name": "engine", "context": {"cluster": "engine", "user": "admin"}}],
        }))
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout=10)

    def _session(self) -> Any:
        import requests

        s = requests.Session()
        s.verify = str(self.pki["ca"])
        s.cert = (str(self.pki["admin_cert"]), str(self.pki["admin_key"]))
        s.trust_env = False
        return s

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = self._session().request(method, self.server + path, json=body, timeout=30)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    def get(self, path: str, raw: bool = False) -> Any:
        try:
            r = self._session().get(self.server + path, timeout=10)
        except OSError:
            return None
        return r.text if raw else (r.json() if r.status_code == 200 else None)

    def apply_crds(self, docs: list[dict[str, Any]]) -> int:
        names = []
        for d in docs:
            if not d or d.get("kind") != "CustomResourceDefinition":
                continue
            code, out = self.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", d)
            if code not in (201, 409):
                raise EngineError(f"creating CRD {d['metadata']['name']}: HTTP {code}: {str(out)[:300]}")
            names.append(d["metadata"]["name"])

        def established() -> bool:
            for n in names:
                crd = self.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{n}")
                # a CRD just created may have no status or `conditions: null` yet
                conds = {c["type"]: c["status"] for c in ((crd or {}).get("status") or {}).get("conditions") or []}
                if conds.get("Established") != "True":
                    return False
            return True

        wait_for("CRDs established", established, 60)
        return len(names)

    def resource_path(self, api_version: str, kind: str, namespace: str | None, name: str = "") -> str:
        """REST path of an object, with the plural from API discovery."""
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        disc = self.get(base) or {}
        for r in disc.get("resources", []):
            if r.get("kind") == kind and "/" not in r["name"]:
                ns = f"/namespaces/{namespace}" if namespace and r.get("namespaced") else ""
                return f"{base}{ns}/{r['name']}" + (f"/{name}" if name else "")
        raise EngineError(f"the API server does not serve {kind} in {api_version}")


def _module_dir(mod: str) -> pathlib.Path:
    """``mod`` (module@version) in the cache's Go module cache: downloaded through the Go module
    proxy, checksum-verified, like every module the installer uses."""
    go = install.require_go()
    env = install.go_env(os.environ, install.cache_dir())
    with tempfile.TemporaryDirectory() as tmp:
        return pathlib.Path(install.go_download(go, env, pathlib.Path(tmp), mod)["Dir"])


def _yaml_docs(path: pathlib.Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def istio_crds() -> list[dict[str, Any]]:
    """Istio's CRDs from the istio.io/istio module the installer pins (manifests/charts/base)."""
    root = _module_dir(f"{install.ISTIO_MODULE}@{install.VERSIONS['istio']}")
    return _yaml_docs(root / "manifests/charts/base/files/crd-all.gen.yaml")


ADDON_CRDS: dict[str, tuple[str, tuple[str, ...]]] = {
    # Go module -> (pinned version, CRD files in it): what the prod stack's Certificate (cert-manager)
    # and ServiceMonitors (Prometheus operator) need in a cluster, as their projects publish them.
    "github.com/cert-manager/cert-manager": ("v1.19.1", (
        "deploy/crds/cert-manager.io_certificates.yaml", "deploy/crds/cert-manager.io_clusterissuers.yaml")),
    "github.com/prometheus-operator/prometheus-operator": ("v0.85.0", (
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",)),
}


def addon_crds() -> list[dict[str, Any]]:
    """cert-manager's Certificate/ClusterIssuer and the Prometheus operator's ServiceMonitor CRDs,
    from their Go modules."""
    docs: list[dict[str, Any]] = []
    for module, (version, files) in ADDON_CRDS.items():
        root = _module_dir(f"{module}@{version}")
        for f in files:
            docs += _yaml_docs(root / f)
    return docs


def gateway_api_crds() -> list[dict[str, Any]]:
    """The standard-channel Gateway API CRDs of the pinned sigs.k8s.io/gateway-api module (what a
    cluster running Istio with the Gateway API has installed); their CEL rules run in this API
    server when the gateway-api stack creates its objects."""
    docs: list[dict[str, Any]] = []
    for f in install.gateway_api_crd_files(install.ensure("gateway-api-crds")):
        docs += _yaml_docs(f)
    return docs


def cluster_crds() -> list[dict[str, Any]]:
    """Every CRD the stacks use, as a user's cluster has them before `pulumi up`: Istio's,
    cert-manager's Certificate/ClusterIssuer, the ServiceMonitor, the Gateway API's."""
    return istio_crds() + addon_crds() + gateway_api_crds()


# --------------------------------------------------------------------------------------------
# Keycloak over HTTPS
# --------------------------------------------------------------------------------------------


@dataclass
class Keycloak:
    work: pathlib.Path
    password: str
    port: int = 0
    mgmt_port: int = 0
    ca_file: str = ""
    proc: Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, pki: dict[str, pathlib.Path]) -> Keycloak:
        home = install.ensure("keycloak")
        java = install.keycloak_java()
        self.ca_file = str(pki["ca"])
        tls_cert, tls_key = pki["keycloak_cert"], pki["keycloak_key"]
        self.port, self.mgmt_port = free_port(), free_port()
        cmd = [
            str(home / "bin" / "kc.sh"), "start-dev",
            # start-dev binds its HTTP port even with --http-enabled=false: a free one, not the
            # default 8080 (two engine runs on one machine collided there).
            "--http-enabled=false", f"--http-port={free_port()}", "--https-port", str(self.port),
            "--http-host=127.0.0.1",
            f"--https-certificate-file={tls_cert}", f"--https-certificate-key-file={tls_key}",
            f"--hostname={self.url}", "--health-enabled=true", f"--http-management-port={self.mgmt_port}",
            f"--db-url=jdbc:h2:file:{self.work / 'keycloak-db' / 'keycloakdb'};NON_KEYWORDS=VALUE",
        ]
        env = {
            "PATH": "/usr/bin:/bin", "HOME": str(self.work),
            "JAVA_HOME": str(pathlib.Path(java).resolve().parent.parent),
            "KC_BOOTSTRAP_ADMIN_USERNAME": KEYCLOAK_ADMIN, "KC_BOOTSTRAP_ADMIN_PASSWORD": self.password,
        }
        # start-dev may re-augment the shared Keycloak home: one start at a time (as the harness).
        with _file_lock("keycloak-start"):
            self.proc = Process("keycloak", cmd, env, self.work / "keycloak.log").start()
            t = wait_for("keycloak", self.ready, 420, self.proc, interval=0.5)
        log(f"Keycloak {install.VERSIONS['keycloak']} ready in {t:.1f}s on {self.url}")
        return self

    def ready(self) -> bool:
        import requests

        try:
            r = requests.get(f"https://127.0.0.1:{self.mgmt_port}/health/ready", verify=self.ca_file, timeout=2)
        except requests.RequestException:
            return False
        return r.status_code == 200

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(timeout=20)

    def admin(self, method: str, path: str) -> tuple[int, Any]:
        import requests

        tok = requests.post(f"{self.url}/realms/master/protocol/openid-connect/token", verify=self.ca_file,
                            data={"grant_type": "password", "client_id": "admin-cli",
                                  "username": KEYCLOAK_ADMIN, "password": self.password}, timeout=30)
        tok.raise_for_status()
        r = requests.request(method, f"{self.url}/admin/realms{path}", verify=self.ca_file, timeout=30,
                             headers={"Authorization": f"Bearer {tok.json()['access_token']}"})
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text


# --------------------------------------------------------------------------------------------
# The pulumi CLI
# --------------------------------------------------------------------------------------------


def run_group(cmd: list[str], env: dict[str, str], cwd: pathlib.Path, timeout: float,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """subprocess.run in a process group of its own: when this run is interrupted, the CLI gets
    SIGTERM (it cancels cleanly and stops its plugins) before anything is killed."""
    with subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                          text=True, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@dataclass
class Pulumi:
    work: pathlib.Path
    exe: pathlib.Path
    project: pathlib.Path = field(init=False)
    env: dict[str, str] = field(init=False)
    calls: int = 0

    def __post_init__(self) -> None:
        self.project = self.work / "project"
        home = self.work / "pulumi-home"
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")},
            "PATH": f"{self.exe.parent}:{pathlib.Path(sys.executable).parent}:/usr/bin:/bin",
            "PULUMI_HOME": str(home),
            "PULUMI_CONFIG_PASSPHRASE": base64.b64encode(os.urandom(18)).decode(),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            "NO_COLOR": "1",
        }

    def run(self, *args: str, stack: str | None = None, check: bool = True, timeout: float = 1200,
            cwd: pathlib.Path | None = None, secret_stdout: bool = False) -> subprocess.CompletedProcess[str]:
        """Run the CLI; its output goes to a log file under ``work/logs`` (stdout withheld when
        ``secret_stdout``: e.g. `stack export --show-secrets`)."""
        self.calls += 1
        flags = ["--non-interactive", *(["--stack", stack] if stack else [])]
        cut = args.index("--") if "--" in args else len(args)  # flags go before a `--`
        cmd = [str(self.exe), *args[:cut], *flags, *args[cut:]]
        words = [a for a in args[:2] if a.replace("-", "").isalnum() and not a.startswith("-")]
        logf = self.work / "logs" / f"{self.calls:03d}-{'-'.join(words)}{'-' + stack if stack else ''}.log"
        logf.parent.mkdir(exist_ok=True)
        t0 = time.monotonic()
        proc = run_group(cmd, env=self.env, cwd=cwd or self.project, timeout=timeout)
        logf.write_text(f"$ {' '.join(cmd)}\n(exit {proc.returncode}, {time.monotonic() - t0:.1f}s)\n"
                        f"--- stdout\n{'(withheld: secrets)' if secret_stdout else proc.stdout}\n"
                        f"--- stderr\n{proc.stderr}\n")
        if check and proc.returncode != 0:
            errors = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if "error:" in ln][:8]
            tail = "\n".join([*errors, "...", (proc.stdout[-2000:] + "\n" + proc.stderr[-1500:]).strip()])
            raise EngineError(f"`pulumi {' '.join(args)}` failed (exit {proc.returncode}); log {logf}:\n{tail}")
        return proc

    def setup(self, plugins: dict[str, pathlib.Path]) -> None:
        self.project.mkdir(parents=True)
        for name in PROJECT_FILES:
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, self.project / name,
                                ignore=shutil.ignore_patterns("venv", "__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, self.project / name)
        # Pulumi.yaml / PulumiPolicy.yaml name `venv`: the environment `make venv` built
        # (requirements.txt pins), as a user's own virtualenv.
        (self.project / "venv").symlink_to(sys.prefix)
        (self.project / "policy" / "venv").symlink_to(sys.prefix)
        (self.work / "state").mkdir()
        self.run("login", f"file://{self.work / 'state'}")
        # The plugins go on PATH ("ambient" plugins): the engine then uses them whatever version the
        # SDKs ask for, with a warning. `pulumi plugin install --file` would need them installed
        # under the SDKs' exact versions, which would misname them (see sdk_plugin_pairs).
        self.env["PATH"] = ":".join([*(str(exe.parent) for exe in plugins.values()), self.env["PATH"]])

    def stack_resources(self, stack: str) -> list[dict[str, Any]]:
        out = self.run("stack", "export", stack=stack).stdout
        return list(json.loads(out).get("deployment", {}).get("resources") or [])

    def preview_steps(self, stack: str, *extra: str) -> list[dict[str, Any]]:
        out = self.run("preview", "--json", *extra, stack=stack).stdout
        return list(json.loads(out).get("steps") or [])


def changes(steps: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(op, urn tail) of every step that changes something."""
    return sorted((s["op"], s["urn"].split("::")[-1]) for s in steps if s.get("op") not in ("same", "read"))


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def sdk_plugin_pairs() -> list[str]:
    import importlib.metadata as md

    pairs = [f"pulumi (python SDK) {md.version('pulumi')} / CLI + language host {install.VERSIONS['pulumi']}"]
    for name in PLUGINS:
        sdk = md.version(f"pulumi-{name}")
        plugin = install.VERSIONS[f"pulumi-{name}"]
        pairs.append(f"pulumi-{name} SDK {sdk} / plugin {plugin}" + ("" if sdk == plugin else "  (skew)"))
    return pairs


@dataclass
class StackRun:
    name: str
    resources: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    interrupted: dict[str, Any] = field(default_factory=dict)


class Engine:
    def __init__(self, work: pathlib.Path) -> None:
        self.work = work
        self.cluster = Cluster(work / "cluster")
        self.keycloak = Keycloak(work, base64.urlsafe_b64encode(os.urandom(18)).decode())
        self.pulumi: Pulumi | None = None
        self.existing_realm: str | None = None
        self.admin_client_secret = ""

    @contextlib.contextmanager
    def running(self) -> Iterator[Engine]:
        try:
            yield self.start()
        finally:
            self.keycloak.stop()
            self.cluster.stop()

    def start(self) -> Engine:
        tools = {name: install.ensure(f"pulumi-{name}") for name in PLUGINS}
        self.pulumi = Pulumi(self.work, install.ensure("pulumi"))
        self.cluster.work.mkdir(parents=True, exist_ok=True)
        self.cluster.start()
        n = self.cluster.apply_crds(cluster_crds())
        log(f"{n} CRDs established (Istio, cert-manager, ServiceMonitor, Gateway API "
            f"{install.VERSIONS['gateway-api']} standard channel)")
        # What the stacks expect to exist in a user's cluster: the apps' namespaces and the
        # gateway's (made by the Istio install, which is not part of these stacks here).
        for ns in EXISTING_NAMESPACES:
            code, out = self.cluster.request("POST", "/api/v1/namespaces",
                                             {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            if code not in (201, 409):
                raise EngineError(f"creating namespace {ns}: HTTP {code}: {str(out)[:200]}")
        self.keycloak.start(self.cluster.pki)
        self.pulumi.setup(tools)
        return self

    # ---- stack config: the local servers, through `pulumi config set` only ----
    def init_stack(self, stack: str, base: str | dict[str, Any], overrides: dict[str, str]) -> None:
        """Stack from a checked-in Pulumi.<base>.yaml (or generated authproxy:* values)."""
        assert self.pulumi
        target = self.pulumi.project / f"Pulumi.{stack}.yaml"
        if isinstance(base, str):
            shutil.copy2(REPO / f"Pulumi.{base}.yaml", target)
        else:
            target.write_text(yaml.safe_dump({"config": {f"authproxy:{k}": v for k, v in base.items()}}))
        p = self.pulumi
        p.run("stack", "init", stack, "--secrets-provider", "passphrase")
        sets = {
            "authproxy:keycloak.url": self.keycloak.url,
            "authproxy:keycloak.caCertificate": pathlib.Path(self.keycloak.ca_file).read_text(),
            "authproxy:redis.chartPath": str(REDIS_CHART),
            "authproxy:kubernetes.skipAwait": "true",
            **overrides,
        }
        for key, value in sets.items():
            p.run("config", "set", "--path", key, "--", value, stack=stack)
        p.run("config", "set", "kubernetes:kubeconfig", str(self.cluster.kubeconfig), stack=stack)
        # Without it, any change of the kubeconfig (a fixed server address, a moved file) replaces
        # the provider and so every object, and the Helm release then collides with itself
        # ("cannot re-use a name that is still in use"); found by the unreachable-API-server check.
        p.run("config", "set", "kubernetes:clusterIdentifier", "engine-test-cluster", stack=stack)
        self.set_admin_password(stack, self.keycloak.password)

    def set_admin_password(self, stack: str, password: str, key: str = "keycloakAdminPassword") -> None:
        assert self.pulumi
        p = self.pulumi
        # The secret goes in on stdin, never on a command line.
        subprocess.run([str(p.exe), "config", "set", "--secret", f"authproxy:{key}",
                        "--stack", stack, "--non-interactive"], input=password, text=True,
                       env=p.env, cwd=p.project, check=True, capture_output=True, timeout=120)

    def expect_failure(self, stack: str, what: str, args: list[str], must_say: list[str]) -> str:
        """Run a pulumi command that must fail with a message a user understands (no traceback)."""
        assert self.pulumi
        proc = self.pulumi.run(*args, stack=stack, check=False)
        out = proc.stdout + proc.stderr
        if proc.returncode == 0:
            raise EngineError(f"{stack}: {what}: `pulumi {' '.join(args)}` succeeded")
        if "Traceback (most recent call last)" in out:
            # When a resource fails, the engine cancels the still-running program and Pulumi's
            # Python runtime prints the KeyboardInterrupt it gets (upstream, not this project).
            # A traceback through the project's own code is a bug here.
            ours = [ln for ln in out.splitlines() if "File " in ln and ("/components/" in ln or "__main__.py" in ln)]
            if ours or "KeyboardInterrupt" not in out:
                raise EngineError(f"{stack}: {what}: a Python traceback reached the user:\n{out[-2000:]}")
            log(f"{stack}: {what}: note: Pulumi's Python runtime printed a KeyboardInterrupt traceback "
                "when the engine cancelled the program (upstream)")
        missing = [m for m in must_say if m not in out]
        if missing:
            raise EngineError(f"{stack}: {what}: the error does not say {missing}:\n{out[-2000:]}")
        line = next((ln.strip() for ln in out.splitlines() if any(m in ln for m in must_say)), "")
        log(f"{stack}: {what}: fails as expected: {line[:160]}")
        return out

    def check_invalid_config(self) -> None:
        """Invalid config through the CLI: non-zero, every problem by key, nothing created."""
        assert self.pulumi
        stack = "invalid"
        self.init_stack(stack, "dev", {"authproxy:redis.mode": "cluster",
                                       "authproxy:session.cookieName": "bad name"})
        self.expect_failure(stack, "invalid config", ["preview"],
                            ["invalid stack configuration", "authproxy:redis.mode",
                             "authproxy:session.cookieName"])
        self.expect_failure(stack, "invalid config", ["up", "--yes", "--skip-preview"],
                            ["invalid stack configuration"])
        left = [r for r in self.pulumi.stack_resources(stack) if r["type"] != "pulumi:pulumi:Stack"]
        if left:
            raise EngineError(f"invalid config created {len(left)} resources: {[r['urn'] for r in left]}")
        self.pulumi.run("stack", "rm", "--yes", "--force", stack)

    def check_faults_then_converge(self, stack: str) -> None:
        """Wrong Keycloak admin password, then an unreachable API server: `pulumi up` fails with a
        message a user understands; once fixed, the next `up` converges."""
        assert self.pulumi
        p = self.pulumi
        self.set_admin_password(stack, "wrong-" + base64.urlsafe_b64encode(os.urandom(9)).decode())
        self.expect_failure(stack, "wrong Keycloak admin password", ["up", "--yes", "--skip-preview"],
                            ["openid-connect/token", "Bad Request"])
        self.set_admin_password(stack, self.keycloak.password)
        p.run("config", "set", "kubernetes:kubeconfig", str(self.bad_kubeconfig()), stack=stack)
        self.expect_failure(stack, "API server unreachable", ["up", "--yes", "--skip-preview"],
                            ["connection refused"])
        p.run("config", "set", "kubernetes:kubeconfig", str(self.cluster.kubeconfig), stack=stack)

    def check_interrupted_up(self, stack: str) -> dict[str, Any]:
        """Kill the CLI (SIGKILL, its plugins with it) halfway through `pulumi up`, then do what
        README's troubleshooting tells a user: `pulumi cancel` if the stack is still locked,
        `pulumi refresh` importing the pending creates that exist (IDs found on the servers) and
        clearing the rest, then `pulumi up`, which must converge (the caller checks the result)."""
        assert self.pulumi
        p = self.pulumi
        state = self.work / "state" / ".pulumi" / "stacks" / "authproxy" / f"{stack}.json"
        logf = self.work / "logs" / f"interrupted-up-{stack}.log"
        cmd = [str(p.exe), "up", "--yes", "--skip-preview", "--non-interactive", "--stack", stack]
        with open(logf, "w") as logfh:
            proc = subprocess.Popen(cmd, env=p.env, cwd=p.project, stdout=logfh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

            def created() -> int:
                try:
                    doc = json.loads(state.read_text())
                except (OSError, ValueError):
                    return 0
                return len((doc.get("checkpoint", {}).get("latest") or {}).get("resources") or [])

            deadline = time.monotonic() + 600
            while proc.poll() is None and created() < 12 and time.monotonic() < deadline:
                time.sleep(0.2)
            if proc.poll() is not None:
                raise EngineError(f"{stack}: `pulumi up` ended before it could be interrupted (log {logf})")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        export = json.loads(p.run("stack", "export", stack=stack).stdout).get("deployment", {})
        pending = export.get("pending_operations") or []
        log(f"{stack}: killed `pulumi up` with {len(export.get('resources') or [])} resources in the state, "
            f"{len(pending)} pending operations ({sorted({op.get('type') for op in pending})})")
        report: dict[str, Any] = {"pending": len(pending)}
        again = p.run("up", "--yes", "--skip-preview", stack=stack, check=False)
        out = again.stdout + again.stderr
        if again.returncode == 0:
            raise EngineError(f"{stack}: `pulumi up` after a killed `up` succeeded without a refresh: "
                              "pending operations were ignored")
        if "locked" in out:
            report["locked"] = True
            p.run("cancel", "--yes", stack=stack)
        imports: list[str] = []
        for op in pending:
            if op.get("type") != "creating":
                continue
            found = self.find_live_id(op["resource"])
            if found:
                imports += [op["resource"]["urn"], found]
        report["imported"] = len(imports) // 2
        args = ["refresh", "--yes", "--skip-preview"]
        if imports:
            p.run(*args, *(f"--import-pending-creates={x}" for x in imports), stack=stack)
        p.run(*args, "--clear-pending-creates", stack=stack)
        log(f"{stack}: interrupted up: {report}")
        return report

    def find_live_id(self, res: dict[str, Any]) -> str | None:
        """The provider ID of an object a killed `up` may have created, if it exists: what a user
        looks up before `pulumi refresh --import-pending-creates`."""
        t = res.get("type", "")
        inputs = res.get("inputs") or {}
        if t.startswith("kubernetes:") and t != "kubernetes:helm.sh/v3:Release":
            meta = inputs.get("metadata") or {}
            ns, name = meta.get("namespace"), meta.get("name")
            if not name:
                return None
            if self.cluster.get(self.cluster.resource_path(inputs["apiVersion"], inputs["kind"], ns, name)) is None:
                return None
            return f"{ns}/{name}" if ns else str(name)
        if t == "kubernetes:helm.sh/v3:Release":
            ns, name = inputs.get("namespace"), inputs.get("name")
            _, secrets = self.cluster.request(
                "GET", f"/api/v1/namespaces/{ns}/secrets?labelSelector=owner%3Dhelm%2Cname%3D{name}")
            return f"{ns}/{name}" if isinstance(secrets, dict) and secrets.get("items") else None
        realm = inputs.get("realmId") or inputs.get("realm")
        if t == "keycloak:index/realm:Realm":
            code, _ = self.keycloak.admin("GET", f"/{realm}")
            return str(realm) if code == 200 else None
        lookups = {"keycloak:openid/client:Client": ("clients?clientId=", "clientId"),
                   "keycloak:index/group:Group": ("groups?exact=true&search=", "name"),
                   "keycloak:index/user:User": ("users?exact=true&username=", "username")}
        if t in lookups:
            path, key = lookups[t]
            code, found = self.keycloak.admin("GET", f"/{realm}/{path}{inputs.get(key)}")
            return str(found[0]["id"]) if code == 200 and found else None
        return None  # mappers, memberships, random values: cleared; the next `up` makes them again

    def bad_kubeconfig(self) -> pathlib.Path:
        """The kubeconfig with the server moved to a port nobody listens on."""
        path = self.work / "kubeconfig-unreachable"
        text = self.cluster.kubeconfig.read_text().replace(self.cluster.server, f"https://127.0.0.1:{free_port()}")
        path.write_text(text)
        return path

    def run_stack(self, stack: str, base: str, overrides: dict[str, str], faults: bool = False,
                  interrupt: bool = False) -> StackRun:
        assert self.pulumi
        p = self.pulumi
        run = StackRun(stack)
        self.init_stack(stack, base, overrides)
        self.existing_realm = self.premade_keycloak(stack, base)

        def timed(what: str, fn: Any, *a: Any, **kw: Any) -> Any:
            t0 = time.monotonic()
            out = fn(*a, **kw)
            run.timings[what] = time.monotonic() - t0
            return out

        steps = timed("preview", p.preview_steps, stack)
        creates = [s for s in steps if s["op"] == "create"]
        log(f"{stack}: preview plans {len(creates)} creates")
        if not creates:
            raise EngineError(f"{stack}: preview plans no creates")
        timed("preview+policy", p.run, "preview", "--policy-pack", "policy", stack=stack)
        if faults:
            self.check_faults_then_converge(stack)
        if interrupt:
            run.interrupted = self.check_interrupted_up(stack)
        timed("up", p.run, "up", "--yes", "--skip-preview", stack=stack)
        resources = p.stack_resources(stack)
        run.resources = len(resources)
        log(f"{stack}: up created {run.resources} resources ({run.timings['up']:.0f}s)")
        self.verify_keycloak(stack, resources)
        self.verify_kubernetes(stack, resources)
        self.verify_state_secrets(stack)

        again = changes(timed("re-preview", p.preview_steps, stack))
        if again:
            raise EngineError(f"{stack}: perpetual diff, a second preview still plans {again}")
        p.run("preview", "--expect-no-changes", stack=stack)

        cur = p.run("config", "get", "--path", "authproxy:rotation.cookieSecret", stack=stack, check=False)
        bumped = str(int(cur.stdout.strip() or "1") + 1) if cur.returncode == 0 else "2"
        p.run("config", "set", "--path", "authproxy:rotation.cookieSecret", bumped, stack=stack)
        rot = changes(p.preview_steps(stack))
        log(f"{stack}: cookie-secret rotation previews {rot}")
        self.check_rotation(stack, rot)

        timed("destroy", p.run, "destroy", "--yes", "--skip-preview", stack=stack)
        left = p.stack_resources(stack)
        if left:
            raise EngineError(f"{stack}: {len(left)} resources left in the state after destroy")
        self.verify_gone(stack, resources)
        p.run("stack", "rm", "--yes", stack, check=True)
        return run

    def premade_keycloak(self, stack: str, base: str) -> str | None:
        """For a stack with ``realmMode: existing`` (prod): the realm (Keycloak's defaults) and the
        admin client it logs in with (client credentials; what a user has before `pulumi up`),
        made with plain admin REST calls. Returns the realm's name, else None."""
        from .keycloak_admin import AdminSession, create_existing, make_password

        kc = (yaml.safe_load((REPO / f"Pulumi.{base}.yaml").read_text())["config"]).get("authproxy:keycloak") or {}
        if kc.get("realmMode") != "existing":
            return None
        admin = kc.get("admin") or {}
        session = AdminSession(self.keycloak.url, KEYCLOAK_ADMIN, self.keycloak.password, verify=self.keycloak.ca_file)
        code, _ = self.keycloak.admin("GET", f"/{kc['realm']}")
        if code == 404:
            lookups = [{"function": "keycloak:index/getRealm:getRealm", "args": {"realm": kc["realm"]}}]
            client = None
            if admin.get("auth") == "client-credentials":
                secret = make_password(40)
                client = (admin.get("realm", "master"), admin["clientId"], secret)
                self.admin_client_secret = secret
            made = create_existing(session, lookups, None, client)
            log(f"{stack}: made what a user has before `pulumi up`: {', '.join(made)}")
        if admin.get("auth") == "client-credentials":
            self.set_admin_password(stack, self.admin_client_secret, "keycloakAdminClientSecret")
        return str(kc["realm"])

    # ---- checks on the real servers ----
    def verify_keycloak(self, stack: str, resources: list[dict[str, Any]]) -> None:
        realm = next((r["outputs"] for r in resources if r["type"] == "keycloak:index/realm:Realm"), None)
        name = realm["realm"] if realm else self.existing_realm
        code, _ = self.keycloak.admin("GET", f"/{name}")
        if code != 200:
            raise EngineError(f"{stack}: realm {name} not in Keycloak (HTTP {code})")
        client_state = next(r["outputs"] for r in resources if r["type"] == "keycloak:openid/client:Client")
        code, clients = self.keycloak.admin("GET", f"/{name}/clients?clientId={client_state['clientId']}")
        if code != 200 or len(clients) != 1:
            raise EngineError(f"{stack}: client {client_state['clientId']} not found once in {name}")
        c = clients[0]
        if len(c.get("redirectUris", [])) != 1:
            raise EngineError(f"{stack}: client has redirect URIs {c.get('redirectUris')}, expected one")
        if c.get("attributes", {}).get("pkce.code.challenge.method") != "S256":
            raise EngineError(f"{stack}: client PKCE is {c.get('attributes', {}).get('pkce.code.challenge.method')}")
        mappers = {m["name"] for m in c.get("protocolMappers", [])}
        want_mappers = {r["outputs"]["name"] for r in resources if "ProtocolMapper" in r["type"]}
        if not want_mappers <= mappers:
            raise EngineError(f"{stack}: mappers {sorted(want_mappers - mappers)} missing on the client")
        code, groups = self.keycloak.admin("GET", f"/{name}/groups")
        want_groups = {r["outputs"]["name"] for r in resources if r["type"] == "keycloak:index/group:Group"}
        if not want_groups <= {g["name"] for g in groups}:
            raise EngineError(f"{stack}: groups {want_groups} not all in Keycloak ({groups})")
        code, users = self.keycloak.admin("GET", f"/{name}/users")
        want_users = {r["outputs"]["username"] for r in resources if r["type"] == "keycloak:index/user:User"}
        if not want_users <= {u["username"] for u in users}:
            raise EngineError(f"{stack}: users {want_users} not all in Keycloak")
        log(f"{stack}: Keycloak has realm {name}, client {c['clientId']} (1 redirect URI, PKCE S256), "
            f"{len(want_mappers)} mappers, groups {sorted(want_groups)}, users {sorted(want_users)}")

    def k8s_objects(self, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in resources if r["type"].startswith("kubernetes:") and r.get("custom")
                and r["type"] != "kubernetes:helm.sh/v3:Release" and not r["type"].startswith("pulumi:providers")]

    def verify_kubernetes(self, stack: str, resources: list[dict[str, Any]]) -> None:
        objs = self.k8s_objects(resources)
        for r in objs:
            out = r["outputs"]
            meta = out["metadata"]
            path = self.cluster.resource_path(out["apiVersion"], out["kind"], meta.get("namespace"), meta["name"])
            live = self.cluster.get(path)
            if live is None:
                raise EngineError(
                    f"{stack}: {out['kind']} {meta.get('namespace')}/{meta['name']} is not in the API server")
            if live["metadata"]["uid"] != meta["uid"]:
                raise EngineError(f"{stack}: {out['kind']} {meta['name']}: live uid differs from the state's")
            want_labels = (r.get("inputs", {}).get("metadata") or {}).get("labels") or {}
            live_labels = live["metadata"].get("labels") or {}
            if isinstance(want_labels, dict) and not set(want_labels.items()) <= set(live_labels.items()):
                raise EngineError(f"{stack}: {out['kind']} {meta['name']}: labels differ from the program's")
        releases = [r for r in resources if r["type"] == "kubernetes:helm.sh/v3:Release"]
        for r in releases:
            st = r["outputs"].get("status") or {}
            if st.get("status") != "deployed":
                raise EngineError(f"{stack}: Helm release {r['outputs'].get('name')} is {st.get('status')!r}")
            ns = st.get("namespace") or r["outputs"].get("namespace")
            _, secrets = self.cluster.request(
                "GET", f"/api/v1/namespaces/{ns}/secrets?labelSelector=owner%3Dhelm%2Cname%3D{st.get('name')}")
            live = [s for s in secrets.get("items", []) if s["metadata"]["labels"].get("status") == "deployed"]
            if len(live) != 1:
                raise EngineError(f"{stack}: Helm release {st.get('name')}: no deployed release record in {ns}")
        log(f"{stack}: {len(objs)} Kubernetes objects live as in the state; {len(releases)} Helm release(s) deployed")

    def verify_state_secrets(self, stack: str) -> None:
        """No secret the state keeps encrypted is also in it in plain text (a resource ID is never
        encrypted: pulumi-random's RandomBytes uses its value as ID). The secrets looked for, from
        `pulumi stack export --show-secrets`: every secret that is a single string (the random
        values, secret stack outputs, ...) and every value of a Kubernetes Secret's data, decoded
        and base64 (whole secret objects such as Helm values hold ordinary strings too)."""
        assert self.pulumi
        shown = json.loads(self.pulumi.run("stack", "export", "--show-secrets", stack=stack,
                                           secret_stdout=True).stdout)
        values: set[str] = set()

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if node.get(SECRET_SIG) == SECRET_SIG_VALUE and "plaintext" in node:
                    value = json.loads(node["plaintext"])
                    if isinstance(value, str):
                        values.add(value)
                    else:
                        walk(value)
                    return
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        for r in shown["deployment"].get("resources") or []:
            walk(r.get("outputs"))
            if r["type"] == "kubernetes:core/v1:Secret":
                for fld, field_value in (r.get("outputs") or {}).items():
                    if fld in ("data", "stringData") and isinstance(field_value, dict):
                        plain = json.loads(field_value["plaintext"]) if "plaintext" in field_value else field_value
                        for v in plain.values():
                            values.add(v)
                            if fld == "data":
                                values.add(base64.b64decode(v).decode("utf-8", "replace"))
        values = {v for v in values if len(v) >= 8}
        if not values:
            raise EngineError(f"{stack}: `pulumi stack export --show-secrets` shows no secret value")
        state = self.pulumi.run("stack", "export", stack=stack).stdout
        leaked = [v for v in values if v in state]
        if leaked:  # counted, never printed
            raise EngineError(f"{stack}: {len(leaked)} of the state's {len(values)} secret values are also in "
                              "plain text in `pulumi stack export` (e.g. as a resource ID)")
        log(f"{stack}: none of the state's {len(values)} secret values is in plain text in it")

    def check_rotation(self, stack: str, rot: list[tuple[str, str]]) -> None:
        names = {n for _, n in rot}
        if not any("cookie" in n for op, n in rot if op in ("replace", "create-replacement", "delete-replaced")):
            raise EngineError(f"{stack}: bumping rotation.cookieSecret does not replace the cookie secret: {rot}")
        expected = ("oauth2-proxy-secret", "oauth2-proxy-deployment")
        missing = [n for n in expected if n not in names]
        if missing:
            raise EngineError(f"{stack}: bumping rotation.cookieSecret does not change {missing} "
                              f"(the new secret would not reach the pods): {rot}")
        unexpected = {n for n in names if "cookie" not in n and n not in expected}
        if unexpected:
            raise EngineError(f"{stack}: bumping rotation.cookieSecret also changes {sorted(unexpected)}: {rot}")

    def verify_gone(self, stack: str, resources: list[dict[str, Any]]) -> None:
        left = []
        for r in self.k8s_objects(resources):
            out = r["outputs"]
            meta = out["metadata"]
            live = self.cluster.get(self.cluster.resource_path(out["apiVersion"], out["kind"], meta.get("namespace"),
                                                               meta["name"]))
            # No kube-controller-manager here: a deleted Namespace stays Terminating (deletionTimestamp
            # set) because the namespace controller that empties and removes it does not run.
            if live is not None and not (out["kind"] == "Namespace" and live["metadata"].get("deletionTimestamp")):
                left.append(f"{out['kind']} {meta.get('namespace', '')}/{meta['name']}")
        realm = next((r["outputs"]["realm"] for r in resources if r["type"] == "keycloak:index/realm:Realm"), None)
        if realm:
            code, _ = self.keycloak.admin("GET", f"/{realm}")
            if code != 404:
                left.append(f"Keycloak realm {realm} (HTTP {code})")
        elif self.existing_realm:  # the realm stays (it is the user's); the stack's objects go
            for r in resources:
                if r["type"] == "keycloak:openid/client:Client":
                    _, found = self.keycloak.admin(
                        "GET", f"/{self.existing_realm}/clients?clientId={r['outputs']['clientId']}")
                    if found:
                        left.append(f"Keycloak client {r['outputs']['clientId']} in {self.existing_realm}")
                if r["type"] == "keycloak:index/group:Group":
                    _, groups = self.keycloak.admin("GET", f"/{self.existing_realm}/groups")
                    if any(g["name"] == r["outputs"]["name"] for g in groups):
                        left.append(f"Keycloak group {r['outputs']['name']} in {self.existing_realm}")
        if left:
            raise EngineError(f"{stack}: left after destroy: {left}")


def preview_scaling(engine: Engine, counts: list[int]) -> list[dict[str, Any]]:
    """`pulumi preview` wall time of the program with N generated apps, under the real engine."""
    from .program_scaling import generated_config

    assert engine.pulumi
    rows = []
    for n in counts:
        stack = f"scale{n}"
        engine.init_stack(stack, generated_config(n), {})
        t0 = time.monotonic()
        steps = engine.pulumi.preview_steps(stack)
        rows.append({"apps": n, "seconds": round(time.monotonic() - t0, 1),
                     "resources": sum(1 for st in steps if st["op"] == "create")})
        log(f"preview with {n} apps: {rows[-1]['seconds']}s, {rows[-1]['resources']} resources")
        engine.pulumi.run("stack", "rm", "--yes", "--force", stack)
    return rows


STACKS: list[tuple[str, str, dict[str, str], bool]] = [
    # (stack, checked-in config it starts from, overrides beyond the local servers, fault checks)
    ("dev", "dev", {"authproxy:istio.install.enabled": "false"}, True),
    # Its own namespace: the first stack's stays Terminating (no namespace controller here).
    ("dev-envoy-filter", "dev", {"authproxy:istio.install.enabled": "false",
                                 "authproxy:istio.extAuthzMode": "envoy-filter",
                                 "authproxy:namespace": "authproxy-envoy-filter"}, False),
    # The prod stack as checked in (existing realm with a pre-made admin client, Redis HA, the
    # cert-manager Certificate and ServiceMonitors), in its own namespace, in both ext_authz modes
    # (one after the other in the same pre-made realm, as a user switching modes would).
    ("prod", "prod", {"authproxy:namespace": "authproxy-prod"}, False),
    ("prod-envoy-filter", "prod", {"authproxy:istio.extAuthzMode": "envoy-filter",
                                   "authproxy:namespace": "authproxy-prod-envoy-filter"}, False),
    # The Gateway API ingress (issue 13): Gateway, HTTPRoutes, ReferenceGrants through the
    # Gateway API CRDs' schemas and CEL rules, policies attached by targetRefs.
    ("gateway-api", "gateway-api", {"authproxy:namespace": "authproxy-gateway-api"}, False),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m authproxy_local.engine", description=__doc__.split("\n")[0])
    ap.add_argument("--stack", action="append", help="only these stacks (default: all)")
    ap.add_argument("--scaling", type=int, nargs="*", help="also time `pulumi preview` for N generated apps")
    ap.add_argument("--no-faults", action="store_true", help="skip the fault checks (faster)")
    ap.add_argument("--interrupt", action="store_true",
                    help="also kill `pulumi up` halfway on the first stack and recover (refresh + up)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, state) afterwards")
    args = ap.parse_args(argv)
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the servers this run started stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    work = pathlib.Path(tempfile.mkdtemp(prefix="authproxy-engine-"))
    log(f"work dir {work}")
    try:
        if not REDIS_CHART.is_file():
            raise install.InstallError(
                f"the redis-ha 4.39.0 chart is not at {REDIS_CHART} (shared/charts beside the "
                "checkout): no chart repository is reachable here, the stacks install that copy")
        engine = Engine(work)
        with engine.running():
            for pair in sdk_plugin_pairs():
                log(pair)
            engine.check_invalid_config()
            runs = [engine.run_stack(s, base, ov, faults and not args.no_faults, args.interrupt and i == 0)
                    for i, (s, base, ov, faults) in enumerate(
                        x for x in STACKS if not args.stack or x[0] in args.stack)]
            scaling = preview_scaling(engine, args.scaling) if args.scaling else []
        for row in scaling:
            print(f"| {row['apps']} | {row['resources']} | {row['seconds']} |")
        for r in runs:
            log(f"{r.name}: {r.resources} resources; " + ", ".join(f"{k} {v:.0f}s" for k, v in r.timings.items()))
        log(f"total {time.monotonic() - t0:.0f}s")
        for pair in sdk_plugin_pairs():
            print(pair)
        print(f"engine: {len(runs)} stacks up, {sum(r.resources for r in runs)} resources, "
              f"0 changes on re-preview, 0 left after destroy")
        return 0
    except install.InstallError as e:
        if ci:
            print(f"engine: FAILED (CI=true, a component is missing): {e}", file=sys.stderr)
            return 1
        print(f"engine: skipped, a component is missing (CI=true makes this fail): {e}")
        return 0
    except EngineError as e:
        print(f"engine: FAILED: {e}\n(logs in {work})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
