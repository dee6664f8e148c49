"""A real Redis Cluster on loopback for the tests: three masters (and optionally a replica each).

Started the way an operator would: ``redis-server --cluster-enabled yes`` per node on a free port in a
temp dir, then ``redis-cli --cluster create ... --cluster-yes``; ready once every node reports
``cluster_state:ok`` and agrees on the slot owners. ``failover(master)`` runs ``CLUSTER FAILOVER`` on
that master's replica (a manual, lossless switch: the master stops taking writes until its replica has
caught up) and waits until every node sees the replica as the new owner of the slots.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

from tests.support.processes import free_port


def cli(port: int, *args: str, timeout: float = 10.0) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return done.stdout


class RedisCluster:
    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000) -> None:
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports = [free_port() for _ in range(masters * (1 + replicas))]
        # The cluster bus needs a port too (by default port + 10000, too high for most ephemeral ports).
        self.bus_ports = {port: free_port() for port in self.ports}
        self.dir = tempfile.mkdtemp(prefix="gw-redis-cluster-")
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def nodes(self) -> str:
        """The value of REDIS_CLUSTER_NODES: every node (a client needs only one that answers)."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        for port in self.ports:
            node_dir = os.path.join(self.dir, str(port))
            os.makedirs(node_dir)
            self.processes[port] = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-port", str(self.bus_ports[port]), "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(self.node_timeout_ms),
                 "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--dir", node_dir,
                 "--logfile", os.path.join(node_dir, "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        for port in self.ports:
            self._wait(lambda port=port: cli(port, "PING").strip() == "PONG", f"node {port} to start")
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every node says cluster_state:ok and all of them agree on which node serves each slot range."""

        def ready() -> bool:
            views = set()
            for port in self.live_ports():
                if "cluster_state:ok" not in cli(port, "CLUSTER", "INFO"):
                    return False
                views.add(tuple(sorted(self._owners(port).items())))
            return len(views) == 1

        self._wait(ready, "cluster_state:ok on every node", timeout)

    def _owners(self, port: int) -> dict[str, str]:
        """slot range -> master address, as ``port`` sees it."""
        owners = {}
        for line in cli(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) > 8 and "master" in fields[2] and "fail" not in fields[2]:
                for slots in fields[8:]:
                    owners[slots] = fields[1].split("@")[0]
        return owners

    def live_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def master_ports(self) -> list[int]:
        return [port for port in self.live_ports() if "role:master" in cli(port, "INFO", "replication")]

    def replica_of(self, master_port: int) -> int:
        master_id = cli(master_port, "CLUSTER", "MYID").strip()
        for port in self.live_ports():
            info = cli(port, "CLUSTER", "NODES")
            for line in info.splitlines():
                fields = line.split()
                if "myself" in fields[2] and "slave" in fields[2] and fields[3] == master_id:
                    return port
        raise RuntimeError(f"no replica of {master_port}")

    def master_for_key(self, key: str) -> int:
        port = self.live_ports()[0]
        slot = int(cli(port, "CLUSTER", "KEYSLOT", key).strip())
        for ranges, address in self._owners(port).items():
            start, _, end = ranges.partition("-")
            if int(start) <= slot <= int(end or start):
                return int(address.rsplit(":", 1)[1])
        raise RuntimeError(f"no master serves slot {slot}")

    def failover(self, master_port: int, timeout: float = 60.0) -> int:
        """A manual failover of ``master_port`` to its replica; returns the new master's port."""
        replica = self.replica_of(master_port)
        answer = cli(replica, "CLUSTER", "FAILOVER").strip()
        if answer != "OK":
            raise RuntimeError(f"CLUSTER FAILOVER on {replica}: {answer}")
        self._wait(lambda: "role:master" in cli(replica, "INFO", "replication"), f"{replica} to become master", timeout)
        self.wait_ready(timeout)
        return replica

    def _wait(self, condition, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except (subprocess.TimeoutExpired, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}")

    def __enter__(self) -> RedisCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
