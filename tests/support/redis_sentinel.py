"""A Redis Sentinel group as real processes: a master, a replica and three sentinels on loopback.

Each redis-server runs in a temp directory on a free port (the sentinels with ``--sentinel`` and a
config file they may rewrite). ``start()`` returns once the replica is in sync and every sentinel knows
the master, the replica and the other two sentinels, so ``failover()`` (``SENTINEL FAILOVER``) can
promote the replica at once; it returns when every sentinel names the new master and the old one
follows it as a replica. ``kill_master()`` SIGKILLs the master instead and returns once the sentinels
agreed it is down (``down-after-milliseconds`` 2000) and promoted the replica. Everything is stopped
and removed on exit.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from apps.common.redis_target import RedisTarget
from tests.support.processes import free_port

MASTER_NAME = "gwmaster"


def _wait(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"redis sentinel group: {what} not reached within {timeout:.0f} s ({last})")


class SentinelGroup:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gw-sentinel-"))
        self.data_ports = [free_port(), free_port()]  # [0] starts as the master, [1] as its replica
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.processes: list[subprocess.Popen] = []
        self._logs: list = []

    @property
    def target(self) -> RedisTarget:
        return RedisTarget(sentinels=tuple(("127.0.0.1", p) for p in self.sentinel_ports), master=MASTER_NAME)

    def env(self) -> dict[str, str]:
        """What a gateway process needs to use this group (REDIS_URL cleared: sentinels instead)."""
        return {
            "REDIS_URL": "",
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports),
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        self.processes.append(
            subprocess.Popen(["redis-server", *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def _data_node(self, index: int, port: int, *replica_of: str) -> None:
        node_dir = self.dir / f"redis-{index}"
        node_dir.mkdir()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(node_dir)]
        self._spawn(f"redis-{index}", [*args, *(["--replicaof", *replica_of] if replica_of else [])])

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)

    def master_port(self) -> int:
        """The port every sentinel names as the master (they must agree)."""
        answers = {
            tuple(self.client(p).sentinel_get_master_addr_by_name(MASTER_NAME) or ()) for p in self.sentinel_ports
        }
        if len(answers) != 1 or not next(iter(answers)):
            raise redis.RedisError(f"sentinels disagree on the master: {answers}")
        return int(next(iter(answers))[1])

    def role(self, port: int) -> str:
        return self.client(port).execute_command("ROLE")[0].decode()

    def start(self) -> SentinelGroup:
        master, replica = self.data_ports
        self._data_node(0, master)
        self._data_node(1, replica, "127.0.0.1", str(master))
        _wait("replica in sync", lambda: self.client(replica).info("replication")["master_link_status"] == "up")
        for index, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel-{index}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 2000\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self._spawn(f"sentinel-{index}", [str(conf), "--sentinel"])
        for port in self.sentinel_ports:
            sentinel = self.client(port)
            _wait(f"sentinel {port} knows the replica", lambda s=sentinel: len(s.sentinel_slaves(MASTER_NAME)) == 1)
            _wait(f"sentinel {port} knows its peers", lambda s=sentinel: len(s.sentinel_sentinels(MASTER_NAME)) == 2)
        return self

    def failover(self, timeout: float = 60.0) -> int:
        """Promote the replica (``SENTINEL FAILOVER``); return the new master's port once all agree."""
        old = self.master_port()
        self.client(self.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", MASTER_NAME)

        def switched() -> bool:
            new = self.master_port()
            return new != old and self.role(new) == "master" and self.role(old) == "slave"

        _wait("failover", switched, timeout)
        new = self.master_port()
        _wait("old master following", lambda: self.client(old).info("replication")["master_link_status"] == "up")
        return new

    def kill_master(self, timeout: float = 60.0) -> int:
        """SIGKILL the master (no failover command: the sentinels must notice it is down and agree);
        return the promoted replica's port once every sentinel names it and it is the master."""
        old = self.master_port()
        self.processes[self.data_ports.index(old)].kill()

        def promoted() -> bool:
            new = self.master_port()
            return new != old and self.role(new) == "master"

        _wait("failover after the master was killed", promoted, timeout)
        return self.master_port()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        for log in self._logs:
            log.close()
        self.processes.clear()
        self._logs.clear()

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}" for path in sorted(self.dir.glob("*.log"))
        )

    def __enter__(self) -> SentinelGroup:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
