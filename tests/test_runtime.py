"""The compiled CPU runtimes against the torch reference, the export cache, threads, and an API without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommender.model.exported import MissingExport, backbone_export, runtime_dir, weights_file
from recommender.model.onnx_export import export_backbone
from recommender.model.runtime import choose_runtime, thread_split
from recommender.model.tagger import Tagger, Tagging
from recommender.settings import Settings
from recommender.store import Store
from tests.conftest import DEMO, REPO, sample_rows, write_manifest

#: Every 5th demo photo: 105 of the 523, a spread over the catalog's sources (bench/tagging.py --equality: all).
PHOTOS = sorted((DEMO / "images").glob("*/*.jpg"))[::5]
#: Float32 on any CPU: summation order differs between kernels (AVX2, AVX-512), never more than this.
MIN_COSINE = 0.9999
MIN_TOP5_AGREEMENT = 0.99


def agreement(reference: dict[str, Tagging], other: dict[str, Tagging]) -> tuple[float, float]:
    """(share of photos whose top-5 labels are identical, in order; the smallest feature cosine)."""
    same = np.mean([[l for l, _ in reference[k].labels[:5]] == [l for l, _ in other[k].labels[:5]]
                    for k in reference])
    cosine = min(float(reference[k].features @ other[k].features)
                 / float(np.linalg.norm(reference[k].features) * np.linalg.norm(other[k].features))
                 for k in reference)
    return float(same), cosine


@pytest.fixture(scope="module")
def with_head(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A data dir holding the demo's custom head, as `vistas demo` installs it."""
    data = tmp_path_factory.mktemp("runtime")
    shutil.copytree(DEMO.parent / "heads", data / "heads")
    return Settings(device="cpu", data_dir=data)


@pytest.fixture(scope="module")
def reference(with_head: Settings) -> dict[str, Tagging]:
    tagger = Tagger(with_head.with_(runtime="torch"))
    return dict(tagger.tag((p.name, p) for p in PHOTOS))


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
def test_compiled_runtime_equals_torch(with_head: Settings, reference: dict[str, Tagging], runtime: str) -> None:
    tagger = Tagger(with_head.with_(runtime=runtime))
    assert [h.name for h in tagger.heads] == ["groups"]
    out = dict(tagger.tag((p.name, p) for p in PHOTOS))
    assert set(out) == set(reference)
    top5, cosine = agreement(reference, out)
    assert top5 >= MIN_TOP5_AGREEMENT and cosine >= MIN_COSINE, (top5, cosine)
    heads = {k: [label for label, _ in t.labels[5:]] for k, t in reference.items()}
    assert {k: [label for label, _ in t.labels[5:]] for k, t in out.items()} == heads
    assert any(heads.values())  # the head did speak


def test_export_is_made_once_per_weights_file(tmp_path: Path) -> None:
    settings = Settings(device="cpu", data_dir=tmp_path)
    path = export_backbone(settings)
    assert path == backbone_export(settings) and path.name.startswith("backbone-efficientnet-lite0-")
    stamp = path.stat().st_mtime_ns
    assert export_backbone(settings).stat().st_mtime_ns == stamp  # cached, not exported again
    assert [p.name for p in runtime_dir(settings).iterdir()] == [path.name]  # no temporary file left
    copy = tmp_path / "weights.pth"
    copy.write_bytes(weights_file(settings).read_bytes())
    assert backbone_export(settings.with_(backbone_weights=copy)) == path  # same bytes, same export
    data = copy.read_bytes()
    copy.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert backbone_export(settings.with_(backbone_weights=copy)) != path  # other bytes, another export


def test_an_api_process_never_exports(tmp_path: Path) -> None:
    with pytest.raises(MissingExport, match="vistas export"):
        Tagger(Settings(device="cpu", data_dir=tmp_path), serving=True)


def test_runtime_choice() -> None:
    assert choose_runtime(Settings(device="cpu")) == "openvino"
    assert choose_runtime(Settings(device="auto"), serving=True) == "openvino"
    assert choose_runtime(Settings(device="cuda")) == "torch"
    assert choose_runtime(Settings(device="cuda"), serving=True) == "openvino"
    assert choose_runtime(Settings(runtime="onnx")) == "onnx"
    with pytest.raises(ValueError, match="VISTAS_RUNTIME"):
        choose_runtime(Settings(runtime="tensorrt"))


def test_threads_follow_the_setting_and_the_affinity() -> None:
    assert thread_split(Settings(threads=2)) == (2, 1)
    assert thread_split(Settings(threads=4)) == (3, 1)
    assert thread_split(Settings(threads=16)) == (13, 3)
    assert sum(thread_split(Settings(threads=8))) == 8
    assert thread_split(Settings())[0] <= len(os.sched_getaffinity(0))
    assert Settings.from_env({"VISTAS_THREADS": "3", "VISTAS_RUNTIME": "onnx"}).threads == 3


API_SEARCH = """
import json, sys
from recommender.app import create_app
from recommender.settings import Settings
client = create_app(Settings.from_env()).test_client()
with open(sys.argv[1], "rb") as photo:
    response = client.post("/v1/search?k=3", content_type="multipart/form-data", data={"photo": (photo, "q.jpg")})
print(json.dumps({"status": response.status_code, "items": len(response.get_json().get("items", [])),
                  "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))}))
"""


def test_the_api_serves_a_photo_search_without_importing_torch(indexed: Settings) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "REDIS_URL": indexed.redis_url_or_default,
           "VISTAS_DATA_DIR": str(indexed.data_dir), "VISTAS_KEY_PREFIX": indexed.key_prefix}
    env.pop("VISTAS_RUNTIME", None)
    run = subprocess.run([sys.executable, "-c", API_SEARCH, str(PHOTOS[0])], env=env, cwd=REPO,
                         capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"status": 200, "items": 3, "torch": []}


WITHOUT_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, NoTorch())
from indexer.cli import main
main(sys.argv[1:])
"""


def test_the_indexer_tags_without_torch_once_exported(settings: Settings, tmp_path: Path) -> None:
    """As in the CPU image: the export baked in, no torch installed, ingest still indexes."""
    export_backbone(settings)
    manifest = write_manifest(sample_rows()[:6], tmp_path / "catalog")
    env = {**os.environ, "PYTHONPATH": str(REPO), "REDIS_URL": settings.redis_url_or_default,
           "VISTAS_DATA_DIR": str(settings.data_dir), "VISTAS_KEY_PREFIX": settings.key_prefix}
    run = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, "ingest", str(manifest)], env=env, cwd=REPO,
                         capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert Store.from_url(settings.redis_url_or_default, settings.key_prefix).items.count() == 6
