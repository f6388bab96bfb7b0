"""The `vistas` command and the API under gunicorn, as users run them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import requests

from recommender.settings import Settings
from tests.conftest import DEMO, sample_rows
from tests.helpers import VISTAS, env_for, free_port, start_api, stop

def test_help_explains_every_command() -> None:
    for command in ([], ["ingest"], ["serve"], ["demo"]):
        out = subprocess.run([*VISTAS, *command, "--help"], capture_output=True, text=True, check=True).stdout
        assert "Usage:" in out and len(out.splitlines()) > 5


def test_folder_to_similar_items_over_http_and_across_restart(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for row in sample_rows():
        (folder / row["category"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO / row["image"], folder / row["category"] / f"{row['id']}.jpg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    done = subprocess.run([*VISTAS, "ingest", str(folder)], env=env_for(settings), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{len(sample_rows())} of {len(sample_rows()) + 1} items indexed, 1 failed" in done.stdout
    assert "failed broken: not an image" in done.stderr

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/items/landmark-landmark-tajmahal/similar?k=10"
    api = start_api(settings, port)
    try:
        first = requests.get(url, timeout=5).json()
    finally:
        stop(api)
    ids = [r["id"] for r in first["items"]]
    assert "landmark-landmark-tajmahal_2" in ids and first["version"] == 1

    api = start_api(settings, port)  # a new process loads the same version from disk
    try:
        assert requests.get(url, timeout=5).json() == first
        bad = requests.get(url.replace("k=10", "k=1000"), timeout=5)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_parameter"
    finally:
        stop(api)


def test_unreachable_redis_says_how_to_fix(tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0", "VISTAS_DATA_DIR": str(tmp_path)}
    done = subprocess.run([*VISTAS, "ingest", str(DEMO / "manifest.csv")], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "cannot reach Redis" in done.stderr and "REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_setting_in_environment_is_a_usage_error(tmp_path: Path) -> None:
    env = {**os.environ, "VISTAS_TOPICS": "abc"}
    done = subprocess.run([*VISTAS, "ingest", str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "VISTAS_TOPICS='abc' is invalid" in done.stderr


def test_empty_folder_is_an_error(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = subprocess.run([*VISTAS, "ingest", str(tmp_path / "empty")], env=env_for(settings),
                          capture_output=True, text=True)
    assert done.returncode == 1 and "holds no items" in done.stderr
