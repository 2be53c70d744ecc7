"""The run's Redis (Debian ``redis-server``) as the stack's redis-ha release runs it: the password
its values name, the server and sentinel settings of the chart (its ``values.yaml`` defaults
under the rendered values: ``redis.config``, ``redis.disableCommands``, ``sentinel.config``,
quorum) and, when the render sets up sentinel mode, the replicas and one sentinel per server;
each server and sentinel announces the run's address as the chart announces each pod's Service
address (otherwise replicas and sentinels are known by their connections' source, 127.0.0.1, and
no failover can happen). Data lives in the run's temp dir (the chart's RDB saves; a SIGTERM'd
server saves on shutdown). Redis is spoken through redis-py (:func:`redis_command`).

Faults: :meth:`RedisPart.kill_master` kills the current master and the sentinel beside it (a pod
that dies takes both), :meth:`RedisPart.recover_server` brings that pod back the way the chart's
init container does (a replica of whatever master the sentinels name).

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.install`, redis-py, PyYAML,
:mod:`.stack`.
"""

from __future__ import annotations

import functools
import os
import signal
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis as redis_py
import yaml

from authproxy_local import install
from authproxy_local.core.paths import REDIS_CHART
from authproxy_local.core.pki import write_private
from authproxy_local.core.processes import HarnessError, Process, free_port, wait_for
from authproxy_local.render import deep_merge

from .stack import StackPart


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


@functools.cache
def chart_defaults(chart: Path = REDIS_CHART) -> dict[str, Any]:
    """The redis-ha chart's own ``values.yaml`` (what the release gets where the stack sets
    nothing)."""
    with tarfile.open(chart) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/values.yaml")
                      and m.name.count("/") == 1)
        f = tar.extractfile(member)
        if f is None:
            raise HarnessError(f"{chart}: no values.yaml")
        return dict(yaml.safe_load(f.read()))


def _conf_value(value: Any) -> str:
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def server_settings(values: Mapping[str, Any]) -> list[str]:
    """redis.conf lines the chart writes from its values (templates/_configs.tpl
    ``config-redis.conf``): every ``redis.config`` key, and ``rename-command X ""`` for each of
    ``redis.disableCommands``."""
    redis = values.get("redis") or {}
    lines = []
    for key, value in (redis.get("config") or {}).items():
        for v in value if isinstance(value, list) else [value]:
            if v is not None and str(v) != "":
                lines.append(f"{key} {_conf_value(v)}")
    lines += [f'rename-command {c} ""' for c in redis.get("disableCommands") or []]
    return lines


def sentinel_settings_lines(values: Mapping[str, Any], master: str) -> list[str]:
    """sentinel.conf lines the chart writes from ``sentinel.config`` (``sentinel <key> <master>
    <value>``; ``maxclients`` as a plain directive)."""
    lines = []
    for key, value in ((values.get("sentinel") or {}).get("config") or {}).items():
        if key == "maxclients":
            lines.append(f"maxclients {value}")
        else:
            lines.append(f"sentinel {key} {master} {_conf_value(value)}")
    return lines


class RedisPart(StackPart):
    redis_killed: int | None = None
    """The index of the server (and sentinel) :meth:`kill_master` took down, until recovered."""

    def redis(self, *args: str) -> Any:
        """A command on the current master (the sentinels' answer in sentinel mode)."""
        return redis_command(self.master_addr(), self.redis_server_password(), *args)

    def redis_keys(self, pattern: str) -> list[str]:
        return redis_keys(self.master_addr(), self.redis_server_password(), pattern)

    @property
    def redis_servers(self) -> list[tuple[str, int]]:
        """Every Redis server, in chart order (server i runs beside sentinel i)."""
        return [self.endpoints.redis, *self.redis_replicas]

    def master_addr(self) -> tuple[str, int]:
        """The master as the sentinels name it (sentinel mode), else the one server."""
        s = self.sentinel_settings()
        if s is None or not self.endpoints.sentinels:
            return self.endpoints.redis
        pw = self.redis_server_password() if s["auth"] else None
        for i, addr in enumerate(self.endpoints.sentinels):
            if i == self.redis_killed:
                continue
            try:
                host, port = redis_command(addr, pw, "SENTINEL", "get-master-addr-by-name", s["master"], timeout=2)
                return host, int(port)
            except OSError:
                continue
        raise HarnessError("no sentinel answers with a master")

    def chart_values(self) -> dict[str, Any]:
        """The redis-ha release's values as Helm sees them: the chart's defaults under the
        rendered values."""
        rendered: dict[str, Any] = next(
            (r.get("values") or {} for r in self.render.helm_releases if r.get("chart") == "redis-ha"), {})
        return deep_merge(chart_defaults(), rendered)

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
        write_private(conf, "\n".join([
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

    @staticmethod
    def _server_name(i: int) -> str:
        return "redis" if i == 0 else f"redis-{i}"

    def _start_server(self, i: int, replica_of: tuple[str, int] | None) -> None:
        """Server i with the chart's settings (a replica of ``replica_of``, if given)."""
        exe = install.ensure("redis")
        pw = self.redis_server_password()
        name, addr = self._server_name(i), self.redis_servers[i]
        conf = self._redis_conf(name, addr[1], [
            *server_settings(self.chart_values()), f"requirepass {pw}", f"masterauth {pw}",
            f"replica-announce-ip {addr[0]}", f"replica-announce-port {addr[1]}",
            *([f"replicaof {replica_of[0]} {replica_of[1]}"] if replica_of else []),
        ])
        self.procs[name] = Process(name, [str(exe), str(conf)], {"PATH": "/usr/bin:/bin"},
                                   self.run_dir / f"{name}.log").start()

    def _start_sentinel(self, i: int, master: tuple[str, int]) -> None:
        """Sentinel i watching ``master`` with the chart's sentinel settings."""
        s = self.sentinel_settings()
        assert s is not None
        pw = self.redis_server_password()
        exe = install.ensure("redis")
        addr = self.endpoints.sentinels[i]
        conf = self._redis_conf(f"sentinel-{i}", addr[1], [
            f"sentinel monitor {s['master']} {master[0]} {master[1]} {s['quorum']}",
            f"sentinel auth-pass {s['master']} {pw}",
            *sentinel_settings_lines(self.chart_values(), s["master"]),
            f"sentinel announce-ip {addr[0]}", f"sentinel announce-port {addr[1]}",
            *([f"requirepass {pw}"] if s["auth"] else []),
        ])
        sentinel_exe = str(Path(exe).parent / "redis-sentinel")
        self.procs[f"sentinel-{i}"] = Process(f"sentinel-{i}", [sentinel_exe, str(conf)],
                                              {"PATH": "/usr/bin:/bin"},
                                              self.run_dir / f"sentinel-{i}.log").start()

    def _start_redis(self) -> None:
        s = self.sentinel_settings()
        self.redis_replicas = []
        if s is not None:
            # Replication + sentinels like the chart: replicas-1 replicas of the first server, and
            # one sentinel per sentinel URL the render gives oauth2-proxy.
            self.redis_replicas = [(self.gateway_ip, free_port(self.gateway_ip)) for _ in range(1, s["replicas"])]
            self.endpoints.sentinels = [(self.gateway_ip, free_port(self.gateway_ip)) for _ in range(s["sentinels"])]
        master = self.endpoints.redis
        self._start_server(0, None)
        for i in range(1, len(self.redis_servers)):
            self._start_server(i, master)
        for i in range(len(self.endpoints.sentinels)):
            self._start_sentinel(i, master)

    def kill_master(self) -> int:
        """SIGKILL the current master and the sentinel beside it (the pod dies: a node lost, an
        OOM kill); returns the server's index."""
        master = self.master_addr()
        i = self.redis_servers.index(master)
        for name in (self._server_name(i), f"sentinel-{i}"):
            p = self.procs.get(name)
            if p is not None and p.popen is not None and p.alive():
                os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait(timeout=10)
        self.redis_killed = i
        self.log(f"killed the Redis master {self._server_name(i)} and sentinel-{i}")
        return i

    def recover_server(self, timeout: float = 60) -> None:
        """Bring the killed pod back as the chart's init container does: a replica of the master
        the sentinels name now, and its sentinel watching that master."""
        i = self.redis_killed
        if i is None:
            return
        self.redis_killed = None
        master = self.master_addr()
        if master == self.redis_servers[i]:
            raise HarnessError("the sentinels still name the killed server as master")
        self._start_server(i, master)
        if i < len(self.endpoints.sentinels):
            self._start_sentinel(i, master)
        pw = self.redis_server_password()
        addr = self.redis_servers[i]

        def synced() -> bool:
            role = redis_command(addr, pw, "ROLE", timeout=2)
            return role[0] == "slave" and role[3] == "connected"

        wait_for(f"{self._server_name(i)} replicating", synced, timeout, self.procs[self._server_name(i)])
        self.log(f"{self._server_name(i)} back as a replica of {master[0]}:{master[1]}")

    def _wait_redis(self) -> None:
        p = self.procs["redis"]
        pw0 = self.redis_server_password()
        wait_for("redis", lambda: redis_command(self.endpoints.redis, pw0, "PING") == "PONG", 30, p)
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
            wait_for("redis replicas", lambda: len(redis_command(self.endpoints.redis, pw0, "ROLE")[2])
                     == len(self.redis_replicas), 30, p)
        self.timings.add("redis", time.monotonic() - p.started_at)
