"""The run's Redis (Debian ``redis-server``) with the password the stack's chart values name,
append-only persistence in the run's temp dir (a restart keeps the sessions) and, when the render
sets up sentinel mode, the replicas and sentinels as the chart runs them; Redis is spoken through
redis-py (:func:`redis_command`).

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.install`, redis-py, :mod:`.stack`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis as redis_py

from authproxy_local import install
from authproxy_local.core.pki import write_private
from authproxy_local.core.processes import Process, free_port, wait_for

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


class RedisPart(StackPart):
    def redis(self, *args: str) -> Any:
        return redis_command(self.endpoints.redis, self.redis_server_password(), *args)

    def redis_keys(self, pattern: str) -> list[str]:
        return redis_keys(self.endpoints.redis, self.redis_server_password(), pattern)

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
