"""The live harness: the rendered stack running on this machine against the real components.

    with Harness("dev", mode="envoy-filter") as h:   # or h = Harness(...).start(); h.stop()
        with h.resolving():                          # *.authproxy.test -> the gateway, in-process
            requests.get(h.app_url("echo"), verify=h.ca_file)

What runs (all on loopback, free ports, one run directory per start):

- **Redis** (Debian ``redis-server``) with the rendered password, append-only persistence in the
  run's temp dir, so a restart keeps the sessions.
- **Keycloak** (``kc.sh start-dev``) with ``--hostname`` set to the rendered Keycloak URL, so every
  issuer string is exactly the render's, and an H2 file database in the run's temp dir (a restart
  keeps realm, users and SSO sessions). Then the stack itself configures it: the real
  ``pulumi up`` of the program (pulumi-keycloak, pulumi-random, pulumi-kubernetes) against this
  Keycloak and a throw-away etcd + kube-apiserver started for the run
  (:mod:`authproxy_local.live_stack`; `--hostname` keeps the stack's issuer, the providers reach
  Keycloak through a CONNECT proxy that knows only its host).
- **echo apps** (:mod:`authproxy_local.echo`), one per rendered app, standing in for its pods.
- **Envoy**: the ingress gateway (HTTPS 443 + HTTP 80 on a per-run loopback address 127.x.y.z)
  and one Envoy per app playing its sidecar (inbound), each running the configuration istiod
  generates for that proxy: Istio's own translation (``tools/istio-xds``, built from the pinned
  istio.io/istio) over the render, assembled into static bootstraps by
  :mod:`authproxy_local.xds_adapter`. istiod fetches the JWKS from the local Keycloak over TLS
  (Keycloak's HTTPS listener, reached through a CONNECT proxy that knows only its host).
- a **CONNECT proxy** through which oauth2-proxy reaches the public hosts (Keycloak via the
  gateway), and refuses any other host.
- **oauth2-proxy** with exactly the args and env of the Deployment `pulumi up` created in the
  API server; only cluster addresses are rewritten (:mod:`authproxy_local.local_map`), Secret
  references resolve to the Secrets the stack created.

The render (the program under mocks) still gives what the harness plays instead of a cluster:
Istio's objects for istiod's translation, the pods/Services to stand in for, the chart values.

Secrets: the client secret, cookie secret, Redis password and demo users' passwords are the
values pulumi-random generated in that `pulumi up`, read from the Kubernetes Secrets the stack
created in the API server (demo passwords from the stack's secret output); the Keycloak admin
password (the stack's ``keycloakAdminPassword``) and, for ``realmMode: existing``, the pre-made
admin client's secret are the run's own (a user supplies those). They are kept in memory and in
0600 files of the run's temp dir (deleted on stop), passed to processes through env or config
files (never on a command line), and never logged. Logs go to
``<cache>/runs/<run id>/`` (the last 10 runs are kept).

Every process started is stopped on :meth:`Harness.stop`, on an exception during start, on
interpreter exit and on SIGTERM/SIGINT.

Rooms: this module is the orchestration (and the per-run secret values); processes, ports, the
CONNECT proxy and in-process name resolution are :mod:`authproxy_local.processes`, certificates
:mod:`authproxy_local.tls`, Istio's translation and its assembly into bootstraps
:mod:`authproxy_local.xds_adapter`; Redis is spoken through redis-py (:func:`redis_command`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_py
import yaml

from authproxy_local import install, keycloak_admin, live_stack, local_map, xds_adapter
from authproxy_local.cache import cache_dir
from authproxy_local.echo import EchoServer
from authproxy_local.processes import (
    ConnectProxy,
    HarnessError,
    Process,
    _file_lock,
    free_port,
    http_ok,
    pick_gateway_ip,
    resolving,
    tcp_open,
    wait_for,
)
from authproxy_local.tls import _write_private, make_tls

COMPONENTS = ("redis", "keycloak", "echo", "envoy", "oauth2-proxy")
KEEP_RUNS = 10




# --------------------------------------------------------------------------------------------
# Redis (redis-py)
# --------------------------------------------------------------------------------------------


def redis_client(addr: tuple[str, int], password: str | None, timeout: float = 5.0) -> redis_py.Redis:
    """A redis-py client answering with the replies as Redis sends them (decoded strings, ints,
    lists): no per-command parsing, so ``INFO`` is the text the bench reads and ``ROLE`` /
    ``SENTINEL`` replies are plain lists."""
    client = redis_py.Redis(host=addr[0], port=addr[1], password=password, decode_responses=True,
                            socket_timeout=timeout, socket_connect_timeout=timeout)
    client.response_callbacks.clear()
    return client


def redis_command(addr: tuple[str, int], password: str | None, *args: str, timeout: float = 5.0) -> Any:
    """Run one command on a Redis server (or sentinel). A server that is not there (yet) raises
    ``OSError``, which :func:`wait_for` retries."""
    try:
        with redis_client(addr, password, timeout) as client:
            return client.execute_command(*args)
    except redis_py.ConnectionError as e:  # also timeouts
        raise OSError(f"redis {addr[0]}:{addr[1]}: {e}") from e


def redis_keys(addr: tuple[str, int], password: str | None, pattern: str) -> list[str]:
    """Every key matching ``pattern`` (SCAN, so it is safe on a live server)."""
    cursor, keys = "0", []
    with redis_client(addr, password) as client:
        while True:
            cursor, batch = client.execute_command("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
            keys += batch
            if cursor == "0":
                return sorted(set(keys))


# --------------------------------------------------------------------------------------------
# The harness
# --------------------------------------------------------------------------------------------


@dataclass
class DemoUser:
    username: str
    password: str
    groups: list[str]
    email: str


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, what: str, seconds: float) -> None:
        self.seconds[what] = round(seconds, 2)


class Harness:
    """Starts, controls and stops the rendered stack locally. See the module docstring."""

    def __init__(self, stack: str = "dev", mode: str | None = None,
                 overrides: Mapping[str, Any] | None = None, render_result: Any = None,
                 log: Callable[[str], None] | None = None,
                 before_gateway: Callable[[Harness], None] | None = None) -> None:
        """``before_gateway(harness)`` runs after Keycloak is configured and before the gateway
        and oauth2-proxy start (tests use it to add test-only Keycloak objects)."""
        self.stack = stack
        self.mode = mode
        self.overrides = dict(overrides or {})
        self.render = render_result
        self._log_fn = log
        self.before_gateway = before_gateway
        self.extras: dict[str, Any] = {}
        self.redis_replicas: list[tuple[str, int]] = []
        """Replica servers (sentinel mode), besides the first server in endpoints.redis."""
        """Test fixtures' own state (e.g. a test machine client)."""
        self.timings = Timings()
        self.procs: dict[str, Process] = {}
        self.echo: dict[str, EchoServer] = {}
        self.connect_proxy: ConnectProxy | None = None
        self.config_secrets: dict[str, str] = {}
        """The stack's secret config values for this run (a user supplies these)."""
        self.users: dict[str, DemoUser] = {}
        self.stack_up: live_stack.LiveStack | None = None
        """The run's `pulumi up` (its secrets and the objects it created)."""
        self._cluster: Future[Any] | None = None
        self._live_deployment: dict[str, Any] | None = None
        self.run_id = ""
        self._run_dir: Path | None = None
        self._tmp: Path | None = None
        self._endpoints: local_map.LocalEndpoints | None = None
        self._stopped = True
        self._prev_handlers: dict[int, Any] = {}
        self.keycloak_admin_password = ""
        self.translation: xds_adapter.Bootstraps | None = None
        self._admin: dict[str, tuple[str, int]] = {}

    # ---- public information ----------------------------------------------------------------

    @property
    def endpoints(self) -> local_map.LocalEndpoints:
        """Where everything listens (set once start() has prepared the run)."""
        if self._endpoints is None:
            raise HarnessError("the harness has not been started")
        return self._endpoints

    @property
    def run_dir(self) -> Path:
        """This run's log directory (kept after stop)."""
        if self._run_dir is None:
            raise HarnessError("the harness has not been started")
        return self._run_dir

    @property
    def tmp(self) -> Path:
        """This run's private temp dir (secrets-bearing files; deleted on stop)."""
        if self._tmp is None:
            raise HarnessError("the harness has not been started")
        return self._tmp

    @property
    def config(self) -> Any:
        return self.render.config

    @property
    def ca_file(self) -> str:
        return self.endpoints.ca_file

    @property
    def gateway_ip(self) -> str:
        return self.endpoints.gateway_ip

    @property
    def public_hosts(self) -> list[str]:
        cfg = self.config
        hosts = [cfg.auth_hostname, *(a.host for a in cfg.apps), *cfg.gateway_hosts]
        return local_map.public_hosts(hosts, cfg.keycloak.host)

    def host_map(self) -> dict[str, str]:
        return dict.fromkeys(self.public_hosts, self.gateway_ip)

    def resolving(self) -> contextlib.AbstractContextManager[None]:
        """In-process resolution of the public hosts to this run's gateway."""
        return resolving(self.host_map())

    def app_url(self, app: str, path: str = "/") -> str:
        a = next(x for x in self.config.apps if x.name == app)
        return f"https://{a.host}{path}"

    @property
    def auth_url(self) -> str:
        return f"https://{self.config.auth_hostname}"

    @property
    def issuer(self) -> str:
        return self.config.keycloak.issuer

    @property
    def redis_password(self) -> str:
        """The password oauth2-proxy sends to Redis (its container's Secret reference)."""
        return self._secret_for_kube("Secret", self._redis_secret_ref())

    def redis_server_password(self) -> str:
        """The password the Redis *server* requires: the session-store chart's ``existingSecret``
        / ``authKey`` (so a mismatch with oauth2-proxy's reference shows up as a failed start),
        or the ``externalRedisPassword`` config secret for an external Redis."""
        for rel in self.render.helm_releases:
            v = rel.get("values") or {}
            if rel.get("chart") in ("redis-ha", "valkey", "redis") and v.get("existingSecret"):
                return self._secret_for_kube(
                    "Secret", (rel.get("namespace") or "", v["existingSecret"], v.get("authKey", "auth")))
        return self.config_secrets.get("externalRedisPassword") or self.redis_password

    def secret_values(self) -> set[str]:
        """Every secret value of the run (tests only, to look for leaks; never log them): the
        stack's secret config, the Secrets read from the API server, the users' passwords."""
        out = set(self.config_secrets.values()) | {u.password for u in self.users.values()}
        if self.stack_up is not None:
            out |= self.stack_up.secret_values()
        return out

    def admin_session(self) -> keycloak_admin.AdminSession:
        return keycloak_admin.AdminSession(
            f"http://{self.endpoints.keycloak[0]}:{self.endpoints.keycloak[1]}", "admin",
            self.keycloak_admin_password)

    def redis(self, *args: str) -> Any:
        return redis_command(self.endpoints.redis, self.redis_server_password(), *args)

    def redis_keys(self, pattern: str) -> list[str]:
        return redis_keys(self.endpoints.redis, self.redis_server_password(), pattern)

    def keycloak_sessions(self, username: str) -> list[dict[str, Any]]:
        """The user's Keycloak SSO sessions (admin API)."""
        s = self.admin_session()
        realm = self.config.keycloak.realm
        users = s.call("GET", f"/realms/{realm}/users?username={username}&exact=true").json()
        if not users:
            raise HarnessError(f"no Keycloak user {username!r}")
        return s.call("GET", f"/realms/{realm}/users/{users[0]['id']}/sessions").json()

    def log(self, msg: str) -> None:
        line = f"[harness {self.run_id or '-'}] {msg}"
        if self._log_fn:
            self._log_fn(line)
        if self._run_dir:
            # another run on the machine may have pruned this run's directory (older harnesses
            # prune by age only): recreate it rather than fail a long run at its end
            self._run_dir.mkdir(parents=True, exist_ok=True)
            with open(self._run_dir / "harness.log", "a") as f:
                f.write(f"{dt.datetime.now().isoformat(timespec='seconds')} {msg}\n")

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> Harness:
        """Start everything; on any failure stop what was started and re-raise."""
        self._stopped = False
        self._install_signal_handlers()
        t_all = time.monotonic()
        try:
            self._prepare()
            self._start_keycloak_process()
            self._start_cluster()
            self._start_echo_and_proxy()
            self._wait_keycloak_and_up()
            self._start_redis()
            self._wait_redis()
            if self.before_gateway is not None:
                self.before_gateway(self)
            # The gateway starts once Keycloak serves the realm, as istiod only pushes JWT
            # policies after it fetched their JWKS; oauth2-proxy needs the gateway for discovery.
            self._start_envoy()
            self._start_oauth2_proxy()
        except BaseException:
            self.log("start failed; stopping everything started so far")
            self.stop()
            raise
        self.timings.add("total", time.monotonic() - t_all)
        self.log(f"ready in {self.timings.seconds['total']}s: {self.timings.seconds}")
        return self

    def stop(self) -> None:
        """Stop every process and thread this harness started; remove the temp dir."""
        first = ("oauth2-proxy", "envoy", *(n for n in self.procs if n.startswith("envoy-")), "keycloak")
        for name in [*first, *(n for n in self.procs if n not in first)]:
            p = self.procs.get(name)
            if p is not None:
                p.stop()
        for e in self.echo.values():
            with contextlib.suppress(Exception):
                e.stop()
        self.echo.clear()
        if self.connect_proxy:
            self.connect_proxy.stop()
            self.connect_proxy = None
        self._stop_cluster()
        if self._tmp and self._tmp.exists():
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._restore_signal_handlers()
        if not self._stopped:
            self.log("stopped")
        self._stopped = True

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: Any) -> None:
            self.stop()
            prev = self._prev_handlers.get(signum)
            if callable(prev):
                prev(signum, frame)
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            self._prev_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, prev in self._prev_handlers.items():
            with contextlib.suppress(Exception):
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._prev_handlers.clear()

    # ---- preparation -----------------------------------------------------------------------

    def _prepare(self) -> None:
        t0 = time.monotonic()
        if self.render is None:
            from authproxy_local import render as render_mod

            self.render = render_mod.render(self.stack, self.mode, self.overrides or None)
        self.timings.add("render", time.monotonic() - t0)
        self.run_id = f"{dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}-{self.stack}-{self.render.mode}"
        runs = cache_dir() / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        old = sorted(p for p in runs.iterdir() if p.is_dir() and not _run_alive(p.name))
        for p in old[: max(0, len(old) - KEEP_RUNS + 1)]:
            shutil.rmtree(p, ignore_errors=True)
        self._run_dir = runs / self.run_id
        self.run_dir.mkdir()
        self._tmp = Path(tempfile.mkdtemp(prefix="authproxy-run-"))
        os.chmod(self.tmp, 0o700)
        self.log(f"stack {self.stack}, ext_authz mode {self.render.mode}, logs in {self.run_dir}")

        # The secrets a user supplies as stack config: the Keycloak bootstrap admin password is the
        # stack's keycloakAdminPassword; a pre-made admin client's secret (client-credentials).
        # Everything else is generated by pulumi-random in the run's `pulumi up`.
        self.keycloak_admin_password = keycloak_admin.make_password(32)
        self.config_secrets = {"keycloakAdminPassword": self.keycloak_admin_password}
        if self.config.keycloak.admin.auth == "client-credentials":
            self.config_secrets["keycloakAdminClientSecret"] = keycloak_admin.make_password(40)
        if any(src.get("resource") == "config" and src.get("field") == "externalRedisPassword"
               for src in self.render.placeholders.values()):
            self.config_secrets["externalRedisPassword"] = keycloak_admin.make_password(40)

        gw_ip = pick_gateway_ip()
        tls = make_tls(self._cert_hosts(), self.tmp / "tls", keycloak_host=self.config.keycloak.host)
        apps = [a.name for a in self.config.apps]
        self._endpoints = local_map.LocalEndpoints(
            gateway_ip=gw_ip,
            # Every local listener sits on the run's own loopback address: other processes on the
            # machine (and outgoing connections, whose source is 127.0.0.1) never take its ports
            # between allocation and bind.
            keycloak=(gw_ip, free_port(gw_ip)),
            oauth2_proxy=(gw_ip, free_port(gw_ip)),
            oauth2_proxy_metrics=(gw_ip, free_port(gw_ip)),
            redis=(gw_ip, free_port(gw_ip)),
            sidecars={a: (gw_ip, free_port(gw_ip)) for a in apps},
            envoy_admin=(gw_ip, free_port(gw_ip)),
            keycloak_https=(gw_ip, free_port(gw_ip)),
            ca_file=tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file,
            keycloak_cert_file=tls.keycloak_cert_file, keycloak_key_file=tls.keycloak_key_file,
        )

    def _cert_hosts(self) -> list[str]:
        """Every public host by name (no wildcard even if the Gateway has one, so the gateway's
        certificate never covers the Keycloak host)."""
        return self.public_hosts

    def _demo_users(self, passwords: Mapping[str, str]) -> dict[str, DemoUser]:
        """The demo users the stack created, with the passwords pulumi-random generated (the
        stack output ``demoUserPasswords``)."""
        users: dict[str, DemoUser] = {}
        kc = self.config.keycloak
        for u in kc.demo_users:
            if u.username not in passwords:
                raise HarnessError(f"the stack output demoUserPasswords has no password for {u.username!r}")
            users[u.username] = DemoUser(
                username=u.username, password=passwords[u.username], groups=list(u.groups),
                email=u.email or f"{u.username}@{self.config.domain}")
        return users

    # ---- the rendered objects ------------------------------------------------------------

    def kube(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [o for o in self.render.kubernetes
                if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]

    def _proxy_deployment(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The oauth2-proxy Deployment and its container (found by the container's args): the one
        `pulumi up` created in the API server once it has run, else the render's."""
        for d in self.kube("Deployment"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                if any(str(a).startswith("--provider=") for a in c.get("args", [])):
                    if self.stack_up is None:
                        return d, c
                    live = self._live_proxy_deployment(d["metadata"].get("namespace"), d["metadata"]["name"])
                    return live, next(x for x in live["spec"]["template"]["spec"]["containers"]
                                      if x["name"] == c["name"])
        raise HarnessError("the render has no oauth2-proxy Deployment (no container with --provider)")

    def _live_proxy_deployment(self, namespace: str | None, name: str) -> dict[str, Any]:
        if self._live_deployment is None:
            assert self.stack_up is not None
            self._live_deployment = self.stack_up.object("apps/v1", "Deployment", namespace, name)
        return self._live_deployment

    def _secret_for_kube(self, _kind: str, ref: tuple[str, str, str]) -> str:
        """A key of a Secret the stack created in the API server (pulumi-random's value)."""
        if self.stack_up is None:
            raise HarnessError("secrets are known once the stack is up")
        namespace, name, key = ref
        return self.stack_up.secret(namespace, name, key)

    def _redis_secret_ref(self) -> tuple[str, str, str]:
        d, c = self._proxy_deployment()
        ns = d["metadata"].get("namespace") or ""
        for e in c.get("env", []):
            if e["name"] == "OAUTH2_PROXY_REDIS_PASSWORD":
                r = e["valueFrom"]["secretKeyRef"]
                return ns, r["name"], r["key"]
        raise HarnessError("the oauth2-proxy container has no OAUTH2_PROXY_REDIS_PASSWORD")

    # ---- Redis -----------------------------------------------------------------------------

    def sentinel_settings(self) -> dict[str, Any] | None:
        """Sentinel mode as the render sets it up: oauth2-proxy's sentinel flags, and replicas /
        quorum / sentinel auth from the session-store chart's values. None for a single Redis."""
        _, c = self._proxy_deployment()
        args = dict(str(a)[2:].split("=", 1) for a in c.get("args", []) if "=" in str(a))
        if args.get("redis-use-sentinel") != "true":
            return None
        urls = [str(a).split("=", 1)[1] for a in c.get("args", [])
                if str(a).startswith("--redis-sentinel-connection-urls=")]
        values: dict[str, Any] = next(
            (r.get("values") or {} for r in self.render.helm_releases if r.get("chart") == "redis-ha"), {})
        sentinel = values.get("sentinel") or {}
        return {
            "master": args["redis-sentinel-master-name"],
            "sentinels": len(urls),
            "replicas": int(values.get("replicas", 3)),
            "quorum": int(sentinel.get("quorum", 2)),
            "auth": bool(sentinel.get("auth", False)),
        }

    def _redis_conf(self, name: str, port: int, extra: list[str]) -> Path:
        data = self.tmp / name
        data.mkdir(exist_ok=True)
        conf = self.tmp / f"{name}.conf"
        _write_private(conf, "\n".join([
            f"bind {self.gateway_ip}",
            f"port {port}",
            "protected-mode yes",
            f"dir {data}",
            "daemonize no",
            "loglevel notice",
            *extra,
            "",
        ]))
        return conf

    def _start_redis(self) -> None:
        exe = install.ensure("redis")
        pw = self.redis_server_password()
        persistence = ["appendonly yes", "appendfsync always", "save 1 1", f"requirepass {pw}",
                       f"masterauth {pw}"]
        conf = self._redis_conf("redis", self.endpoints.redis[1], persistence)
        self.procs["redis"] = Process("redis", [str(exe), str(conf)], {"PATH": "/usr/bin:/bin"},
                                      self.run_dir / "redis.log").start()
        s = self.sentinel_settings()
        if s is None:
            return
        # Replication + sentinels like the chart: replicas-1 replicas of the first server, and one
        # sentinel per sentinel URL the render gives oauth2-proxy.
        master = self.endpoints.redis
        self.redis_replicas = []
        for i in range(1, s["replicas"]):
            port = free_port(self.gateway_ip)
            self.redis_replicas.append((self.gateway_ip, port))
            conf = self._redis_conf(f"redis-{i}", port, [*persistence, f"replicaof {master[0]} {master[1]}"])
            self.procs[f"redis-{i}"] = Process(f"redis-{i}", [str(exe), str(conf)], {"PATH": "/usr/bin:/bin"},
                                               self.run_dir / f"redis-{i}.log").start()
        sentinel_exe = str(Path(exe).parent / "redis-sentinel")
        self.endpoints.sentinels = []
        for i in range(s["sentinels"]):
            port = free_port(self.gateway_ip)
            self.endpoints.sentinels.append((self.gateway_ip, port))
            conf = self._redis_conf(f"sentinel-{i}", port, [
                f"sentinel monitor {s['master']} {master[0]} {master[1]} {s['quorum']}",
                f"sentinel auth-pass {s['master']} {pw}",
                f"sentinel down-after-milliseconds {s['master']} 5000",
                f"sentinel failover-timeout {s['master']} 30000",
                *([f"requirepass {pw}"] if s["auth"] else []),
            ])
            self.procs[f"sentinel-{i}"] = Process(f"sentinel-{i}", [sentinel_exe, str(conf)],
                                                  {"PATH": "/usr/bin:/bin"},
                                                  self.run_dir / f"sentinel-{i}.log").start()

    def _wait_redis(self) -> None:
        p = self.procs["redis"]
        wait_for("redis", lambda: self.redis("PING") == "PONG", 30, p)
        s = self.sentinel_settings()
        if s is not None:
            pw = self.redis_server_password() if s["auth"] else None
            want = [self.endpoints.redis[0], str(self.endpoints.redis[1])]

            def knows_master(addr: tuple[str, int]) -> Callable[[], bool]:
                return lambda: redis_command(addr, pw, "SENTINEL", "get-master-addr-by-name",
                                             s["master"]) == want

            for i, addr in enumerate(self.endpoints.sentinels):
                wait_for(f"sentinel-{i}", knows_master(addr), 30, self.procs[f"sentinel-{i}"])
            # and every replica replicating (a session written now is on the replicas too)
            wait_for("redis replicas", lambda: len(self.redis("ROLE")[2]) == len(self.redis_replicas), 30, p)
        self.timings.add("redis", time.monotonic() - p.started_at)

    # ---- Keycloak --------------------------------------------------------------------------

    def _keycloak_cmd(self) -> tuple[list[str], dict[str, str]]:
        home = install.ensure("keycloak")
        java = install.keycloak_java()
        kc = self.config.keycloak
        port = self.endpoints.keycloak[1]
        host = self.endpoints.keycloak[0]
        self._kc_mgmt_port = getattr(self, "_kc_mgmt_port", 0) or free_port(host)
        db = self.tmp / "keycloak-db" / "keycloakdb"
        db.parent.mkdir(exist_ok=True)
        cmd = [
            str(home / "bin" / "kc.sh"), "start-dev",
            "--http-enabled=true", f"--http-host={host}", f"--http-port={port}",
            # HTTPS listener with the Keycloak host's certificate: istiod (the translator) fetches
            # the JWKS from it, as an istiod that reaches Keycloak would.
            f"--https-port={self.endpoints.keycloak_https[1]}",
            f"--https-certificate-file={self.endpoints.keycloak_cert_file}",
            f"--https-certificate-key-file={self.endpoints.keycloak_key_file}",
            "--http-management-scheme=http",  # else the management port inherits HTTPS
            f"--hostname={kc.url}",
            "--proxy-headers=xforwarded",
            "--health-enabled=true", f"--http-management-port={self._kc_mgmt_port}",
            f"--db-url=jdbc:h2:file:{db};NON_KEYWORDS=VALUE",
        ]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.tmp),
            "JAVA_HOME": str(Path(java).resolve().parent.parent),
            "KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.keycloak_admin_password,
        }
        return cmd, env

    def _start_keycloak_process(self) -> None:
        cmd, env = self._keycloak_cmd()
        # start-dev re-augments Keycloak in its (shared, cached) home when build options change;
        # serialise starts so two harnesses never augment at once.
        self._kc_lock: contextlib.ExitStack | None = contextlib.ExitStack()
        self._kc_lock.enter_context(_file_lock("keycloak-start"))
        self.procs["keycloak"] = Process("keycloak", cmd, env, self.run_dir / "keycloak.log").start()

    def _wait_keycloak(self, timeout: float = 420) -> None:
        p = self.procs["keycloak"]
        try:
            host = self.endpoints.keycloak[0]
            wait_for("keycloak", lambda: http_ok(f"http://{host}:{self._kc_mgmt_port}/health/ready"),
                     timeout, p, interval=0.5)
        finally:
            lock = getattr(self, "_kc_lock", None)
            if lock is not None:
                lock.close()
                self._kc_lock = None
        self.timings.add("keycloak", time.monotonic() - p.started_at)

    def existing_realm_settings(self) -> dict[str, Any]:
        """How the stand-in for an existing realm (realmMode: existing) is set: Keycloak's defaults
        except the SSO session lifetimes, which match the stack's session settings. Keycloak
        refuses a client whose session idle/max exceeds the realm's (HTTP 400 "Client session
        idle timeout cannot exceed realm SSO session idle timeout"), so an existing realm must
        allow at least the stack's lifetimes; tests/e2e/test_97_prod.py shows what happens with a
        realm left at Keycloak's defaults."""
        s = self.config.session
        return {"ssoSessionIdleTimeout": s.sso_session_idle_timeout,
                "ssoSessionMaxLifespan": s.sso_session_max_lifespan}

    def _start_cluster(self) -> None:
        """etcd + kube-apiserver for the run's `pulumi up`, started in the background while
        Keycloak boots (the shared CLI session too)."""
        missing = [t for t in live_stack.required_tools() if install.find(t) is None]
        for tool in missing:
            install.ensure(tool)  # raises InstallError naming it
        pool = ThreadPoolExecutor(1, thread_name_prefix="cluster")

        def start() -> Any:
            t0 = time.monotonic()
            live_stack.shared_session()
            cfg = self.config
            existing = {cfg.istio.gateway.namespace, *(a.service.namespace for a in cfg.apps)} - {cfg.namespace}
            cluster = live_stack.start_cluster(self.tmp / "cluster", sorted(existing))
            self.timings.add("cluster", time.monotonic() - t0)
            return cluster

        self._cluster = pool.submit(start)
        pool.shutdown(wait=False)

    def _wait_keycloak_and_up(self) -> None:
        """Keycloak ready, what the stack expects to exist made by hand (as a user has it), then
        the real `pulumi up`; the run's secrets are what it generated."""
        self._wait_keycloak()
        t0 = time.monotonic()
        # A Keycloak just started answers its first logins slowly (key generation, password hashing,
        # JIT; seconds on a busy machine): log in once before the provider does, so its client
        # timeout measures the stack's calls, not Keycloak's warm-up.
        session = self.admin_session()
        wait_for("keycloak admin login", lambda: bool(session.token()), 120, self.procs["keycloak"])
        admin = self.config.keycloak.admin
        made = keycloak_admin.create_existing(
            session, self.render.keycloak.get("lookups", []), self.existing_realm_settings(),
            (admin.realm, admin.client_id, self.config_secrets["keycloakAdminClientSecret"])
            if admin.auth == "client-credentials" else None)
        if made:
            self.log("created what the stack expects to exist: " + ", ".join(made))
        from authproxy_local import render as render_mod

        values = render_mod.stack_values(self.stack, self.overrides or None, self.render.mode)
        proxy = ConnectProxy([self.config.keycloak.host], self.endpoints.keycloak_https).start()
        try:
            assert self._cluster is not None
            cluster = self._cluster.result()
            t1 = time.monotonic()
            up = live_stack.LiveStack(live_stack.shared_session(), f"h-{self.run_id}", values,
                                      self.config_secrets, proxy.address, Path(self.ca_file).read_text())
            self.stack_up = up
            up.keep_logs_in = self.run_dir
            up.up(cluster)
            passwords = up.outputs().get("demoUserPasswords") or {}
            self.timings.add("pulumi-up", time.monotonic() - t1)
        finally:
            proxy.stop()
        self.users = self._demo_users(passwords)
        # Read what the run needs from the API server now: the Secrets oauth2-proxy and Redis
        # use, and oauth2-proxy's Deployment.
        self.redis_server_password()
        self.oauth2_proxy_secrets()
        self.timings.add("keycloak+stack", time.monotonic() - t0)
        self.log(f"pulumi up: {up.resources} resources ({up.seconds})")
        # Everything the run needs from the API server is read: stop it (about 450 MB with etcd).
        self._stop_cluster()

    def _stop_cluster(self) -> None:
        fut, self._cluster = self._cluster, None
        if fut is None:
            return
        try:
            cluster = fut.result()
        except Exception:  # noqa: BLE001 - its failure was raised to start(); here only cleanup
            return
        cluster.stop()
        if self.stack_up is not None:
            self.stack_up.forget()

    def oauth2_proxy_secrets(self) -> list[tuple[str, str, str]]:
        """The (namespace, name, key) of every Secret key oauth2-proxy's container reads."""
        d, c = self._proxy_deployment()
        ns = d["metadata"].get("namespace") or ""
        refs = [(ns, e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                for e in c.get("env", []) if (e.get("valueFrom") or {}).get("secretKeyRef")]
        for ref in refs:
            self._secret_for_kube("Secret", ref)
        return refs

    # ---- echo apps and the CONNECT proxy ----------------------------------------------------

    def _start_echo_and_proxy(self) -> None:
        for app in self.config.apps:
            server = EchoServer(app.name, host=self.gateway_ip).start()
            self.echo[app.name] = server
            self.endpoints.apps[app.name] = server.address
        self.connect_proxy = ConnectProxy(self.public_hosts, self.endpoints.gateway_https).start()
        self.endpoints.connect_proxy = self.connect_proxy.address

    # ---- Envoy -----------------------------------------------------------------------------

    def translate(self, render: Any = None) -> xds_adapter.Bootstraps:
        """Istio's translation of the render (plus the harness's pods, Services and EndpointSlices)
        into one static bootstrap per proxy (gateway, each app's sidecar). With ``render``, that
        render (e.g. the other ext_authz mode's, for the benchmark) on this run's addresses; the
        run's own translation is kept for the run."""
        t0 = time.monotonic()
        own = render is None
        render = self.render if own else render
        exe = install.ensure("istio-xds")
        w = xds_adapter.workloads(render, self.endpoints)
        directory = xds_adapter.write_input(
            render, w, self.run_dir / ("istio-xds" if own else f"istio-xds-{render.mode}"))
        kc = self.config.keycloak.host
        jwks_proxy = ConnectProxy([kc], self.endpoints.keycloak_https).start()
        try:
            out = xds_adapter.translate(
                exe, directory, xds_adapter.translator_env(os.environ, jwks_proxy.address, self.ca_file))
        finally:
            jwks_proxy.stop()
        if not self._admin:
            self._admin = {p.name: (self.gateway_ip, free_port(self.gateway_ip)) for p in w.proxies}
            self._admin["gateway"] = self.endpoints.envoy_admin
        boots = xds_adapter.bootstraps(out, w, self.endpoints, kc, self._admin,
                                       xds_adapter.credential_names(render))
        if own:
            self.translation = boots
            self.timings.add("istio-xds", time.monotonic() - t0)
        return boots

    def envoy_bootstrap(self, proxy: str = "gateway") -> dict[str, Any]:
        """The static bootstrap one proxy runs (istiod's config through the adapter)."""
        boots = self.translation or self.translate()
        return boots.by_proxy[proxy]

    @property
    def gateway_config(self) -> str:
        """Which translation the proxies run (the numbers line of `make e2e`)."""
        v = self.translation.istio_version if self.translation else "?"
        return f"istiod {v}"

    def _start_envoy(self, boots: xds_adapter.Bootstraps | None = None, only: tuple[str, ...] = ()) -> None:
        """Start the Envoys of ``boots`` (default: the run's translation); ``only`` limits it to
        those proxies (e.g. ``("gateway",)``)."""
        exe = install.ensure("envoy")
        boots = boots or self.translation or self.translate()
        t0 = time.monotonic()
        started = []
        for proxy, boot in boots.by_proxy.items():
            if only and proxy not in only:
                continue
            name = "envoy" if proxy == "gateway" else f"envoy-{proxy}"
            path = self.run_dir / f"{name}.yaml"
            path.write_text(yaml.safe_dump(boot, sort_keys=False))
            # Validate first: a rejected field (e.g. an Istio-only extension the adapter does not
            # know) gives a clear error naming it instead of a dead process.
            check = subprocess.run([str(exe), "--mode", "validate", "-c", str(path)],
                                   capture_output=True, text=True, timeout=120)
            if check.returncode != 0:
                (self.run_dir / f"{name}-validate.log").write_text(check.stdout + check.stderr)
                raise HarnessError(f"Envoy rejected the {proxy} bootstrap built from istiod's config:\n"
                                   + (check.stderr or check.stdout)[-3000:])
            args = [str(exe), "-c", str(path), "--disable-hot-restart", "--log-level", "info",
                    "--component-log-level", "ext_authz:debug,jwt:debug,rbac:debug"]
            if proxy != "gateway":
                args += ["--concurrency", "1"]
            self.procs[name] = Process(name, args, {"PATH": "/usr/bin:/bin"}, self.run_dir / f"{name}.log").start()
            started.append((name, proxy))
        for name, proxy in started:
            admin = self._admin[proxy]
            addr = _listen_addrs(boots.by_proxy[proxy])[0]

            def ready(a: tuple[str, int] = admin, la: tuple[str, int] = addr) -> bool:
                return http_ok(f"http://{a[0]}:{a[1]}/ready") and tcp_open(la)

            wait_for(name, ready, 60, self.procs[name])
        self.timings.add("envoy", time.monotonic() - t0)

    def run_gateway(self, boots: xds_adapter.Bootstraps | None = None) -> None:
        """Restart the gateway Envoy on ``boots``' gateway bootstrap (default: the run's own);
        tests use it to run a deliberately wrong translation and then restore the real one."""
        self.stop_component("envoy")
        self._start_envoy(boots, only=("gateway",))

    # ---- oauth2-proxy ----------------------------------------------------------------------

    def oauth2_proxy_command(self) -> tuple[list[str], dict[str, str]]:
        """The local command line and environment: the rendered args and env, with only the
        cluster addresses rewritten (local_map) and Secret references resolved."""
        exe = install.ensure("oauth2-proxy")
        d, c = self._proxy_deployment()
        ns = d["metadata"].get("namespace") or ""
        if c.get("command"):
            raise HarnessError("the oauth2-proxy container overrides the entrypoint; not supported")
        args = local_map.rewrite_proxy_args(c.get("args", []), self.endpoints)
        env = local_map.resolve_env(
            c.get("env", []),
            lambda name, key: self._secret_for_kube("Secret", (ns, name, key)),
            c.get("resources"),
        )
        proxy = self.endpoints.connect_proxy
        env.update({
            "HTTPS_PROXY": f"http://{proxy[0]}:{proxy[1]}",
            "HTTP_PROXY": f"http://{proxy[0]}:{proxy[1]}",
            "NO_PROXY": "",
            "SSL_CERT_FILE": self.ca_file,
        })
        return [str(exe), *args], env

    def _start_oauth2_proxy(self) -> None:
        cmd, env = self.oauth2_proxy_command()
        p = Process("oauth2-proxy", cmd, env, self.run_dir / "oauth2-proxy.log").start()
        self.procs["oauth2-proxy"] = p
        host, port = self.endpoints.oauth2_proxy
        wait_for("oauth2-proxy", lambda: http_ok(f"http://{host}:{port}/ready"), 60, p)
        self.timings.add("oauth2-proxy", time.monotonic() - p.started_at)

    # ---- fault control ---------------------------------------------------------------------

    def stop_component(self, name: str) -> None:
        """Stop one component (fault tests). Redis is stopped with SHUTDOWN-like SIGTERM, which
        writes its data first; the others with SIGTERM."""
        p = self.procs.get(name)
        if p is None:
            raise HarnessError(f"unknown component {name!r}")
        p.stop()
        self.log(f"stopped {name}")

    def start_component(self, name: str) -> float:
        """Start a stopped component again with the same settings; returns seconds to ready."""
        t0 = time.monotonic()
        if name == "redis":
            p = self.procs["redis"]
            p.popen = None
            p.start()
            self._wait_redis()
        elif name == "keycloak":
            cmd, env = self._keycloak_cmd()
            self.procs["keycloak"] = Process("keycloak", cmd, env, self.run_dir / "keycloak.log").start()
            self._wait_keycloak()
        elif name == "oauth2-proxy":
            self._start_oauth2_proxy()
        elif name == "envoy":
            self._start_envoy(only=("gateway",))
        else:
            raise HarnessError(f"unknown component {name!r}")
        self.log(f"started {name} again in {time.monotonic() - t0:.1f}s")
        return time.monotonic() - t0

    def restart_component(self, name: str) -> float:
        self.stop_component(name)
        return self.start_component(name)

    def alive(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.alive()

    def summary(self) -> dict[str, Any]:
        """Non-secret facts for logs and the demo banner."""
        e = self._endpoints
        return {
            "run": self.run_id,
            "mode": self.render.mode,
            "gateway": e.gateway_ip if e else None,
            "logs": str(self._run_dir),
            "timings": self.timings.seconds,
            "gateway_config": self.gateway_config,
            "istio_only_removed": self.translation.removed if self.translation else None,
            "pids": {n: p.pid for n, p in self.procs.items()},
        }


def _run_alive(run_id: str) -> bool:
    """Whether the process that owns a run directory (``<date>-<time>-<pid>-<mode>``) still runs:
    a live run's logs and configs are never pruned (a long ``make bench`` outlives many e2e
    starts on a shared machine)."""
    parts = run_id.split("-")
    if len(parts) < 3 or not parts[2].isdigit():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listen_addrs(boot: Mapping[str, Any]) -> list[tuple[str, int]]:
    return [(sa["address"], sa["port_value"]) for lst in boot["static_resources"]["listeners"]
            for sa in [lst["address"]["socket_address"]]]
