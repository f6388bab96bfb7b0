"""Helpers several test modules share: running `vistas` as users do, and reading API errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import requests

from recommender.settings import Settings

VISTAS = [sys.executable, "-m", "indexer.cli"]


def env_for(settings: Settings) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": settings.redis_url_or_default, "VISTAS_DATA_DIR": str(settings.data_dir),
            "VISTAS_KEY_PREFIX": settings.key_prefix, "VISTAS_DEVICE": "cpu"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(settings: Settings, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*VISTAS, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"], env=env_for(settings),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still loading the index
            pass
        assert proc.poll() is None, "vistas serve exited"
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("API did not become ready")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(20)


def assert_error(response, status: int, code: str) -> None:
    """A JSON error with this status and code, and a message."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["code"] == code and body["error"]["message"]
