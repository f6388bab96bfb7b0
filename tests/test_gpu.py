"""The GPU fast path against the CPU reference.

The loader, the header checks and the device decode-and-crop run on any
device, so their tests run here on the CPU too; the ones that need CUDA (or
FAISS built for GPUs) skip with the reason. bench/gpu_check.sh runs this file
with --noconftest on GPU machines, so it uses no fixture from conftest.py.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from indexer.knn import exact_search, faiss_gpu_available
from recommender.model.images import Jpeg, crops_on_device, jpeg_or_crop
from recommender.model.loader import device_batches
from recommender.model.tagger import Tagger, Tagging
from recommender.photos import CROP_SIZE, ImageError, load_crop
from recommender.settings import Settings

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "demo" / "catalog" / "images"
PHOTO = IMAGES / "scratch" / "nature-beach-malibu.jpg"
LIMITS = {"max_pixels": 20_000_000, "max_bytes": 5_000_000}
CPU = torch.device("cpu")
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device: GPU-only comparison not run (CPU parts still tested)")


def encode(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb() -> Image.Image:
    return Image.open(PHOTO).convert("RGB")


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(rgb(), exif=exif.tobytes())


def odd_photos() -> dict[str, bytes]:
    """Photos the device must hand to Pillow, each still a usable photo."""
    return {
        "png": encode(rgb(), "PNG"),
        "cmyk": encode(rgb().convert("CMYK")),
        "rotated": rotated_jpeg(),
        "progressive": encode(rgb(), progressive=True),
        "trailing-bytes": encode(rgb()) + b"appended by a camera",
    }


def bad_photos(tmp_path: Path) -> dict[str, Path | bytes]:
    """Photos the reference path refuses; the fast path must refuse them the same way."""
    return {
        "truncated": PHOTO.read_bytes()[:20_000],
        "garbage": b"not a photo" * 100,
        "bomb": encode(Image.new("L", (6000, 6000))),
        "too-many-bytes": b"\xff\xd8" + b"\x00" * 6_000_000 + b"\xff\xd9",
        "missing": tmp_path / "nope.jpg",
    }


@pytest.fixture(scope="module")
def reference() -> Tagger:
    return Tagger(Settings(device="cpu", runtime="torch"), with_heads=False)


@pytest.fixture(scope="module")
def gpu() -> Tagger:
    return Tagger(Settings(device="cuda", batch_size=256), with_heads=False)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))


# -- the host side: which photos the device may decode ------------------------------------------


def test_plain_jpegs_go_to_the_device_with_their_size() -> None:
    jpeg = jpeg_or_crop(PHOTO, **LIMITS)
    assert isinstance(jpeg, Jpeg)
    assert (jpeg.width, jpeg.height) == Image.open(PHOTO).size
    assert bytes(jpeg.data.numpy()) == PHOTO.read_bytes()
    grey = jpeg_or_crop(encode(rgb().convert("L")), **LIMITS)
    assert isinstance(grey, Jpeg)


@pytest.mark.parametrize("name", sorted(odd_photos()))
def test_odd_photos_take_the_reference_path(name: str) -> None:
    data = odd_photos()[name]
    out = jpeg_or_crop(data, **LIMITS)
    assert isinstance(out, np.ndarray), f"{name} should have been decoded by Pillow"
    np.testing.assert_array_equal(out, load_crop(data, **LIMITS))


@pytest.mark.parametrize("name", ["truncated", "garbage", "bomb", "too-many-bytes", "missing"])
def test_refused_photos_give_the_reference_error(name: str, tmp_path: Path) -> None:
    source = bad_photos(tmp_path)[name]
    with pytest.raises(ImageError) as expected:
        load_crop(source, **LIMITS)
    with pytest.raises(ImageError) as got:
        jpeg_or_crop(source, **LIMITS)
    assert str(got.value) == str(expected.value)


# -- decode and crop on a device (here the CPU; CUDA below) -------------------------------------


def demo_jpegs(n: int) -> list[Path]:
    photos = sorted(IMAGES.glob("*/*.jpg"))
    return photos[:: max(1, len(photos) // n)][:n]


def assert_crops_match_reference(device: torch.device, mean_tolerance: float, max_tolerance: int) -> None:
    photos = demo_jpegs(40)
    jpegs = [jpeg_or_crop(p, **LIMITS) for p in photos]
    assert all(isinstance(j, Jpeg) for j in jpegs)
    crops = crops_on_device(jpegs, device, **LIMITS)
    for photo, crop in zip(photos, crops):
        assert isinstance(crop, torch.Tensor) and crop.device.type == device.type
        assert crop.shape == (3, CROP_SIZE, CROP_SIZE) and crop.dtype == torch.uint8
        diff = np.abs(crop.permute(1, 2, 0).cpu().numpy().astype(int) - load_crop(photo, **LIMITS).astype(int))
        assert diff.mean() < mean_tolerance and diff.max() <= max_tolerance, photo.name


def test_device_crops_match_pillow_crops_on_cpu() -> None:
    assert_crops_match_reference(CPU, mean_tolerance=0.5, max_tolerance=2)


def test_a_jpeg_the_decoder_refuses_goes_through_pillow() -> None:
    png = encode(rgb(), "PNG")
    smuggled = Jpeg(torch.frombuffer(bytearray(png), dtype=torch.uint8), *rgb().size)
    junk = Jpeg(torch.frombuffer(bytearray(b"junk" * 50), dtype=torch.uint8), 300, 200)
    good = jpeg_or_crop(PHOTO, **LIMITS)
    out = crops_on_device([smuggled, good, junk], CPU, **LIMITS)
    np.testing.assert_array_equal(out[0].permute(1, 2, 0).numpy(), load_crop(png, **LIMITS))
    assert isinstance(out[1], torch.Tensor)
    assert isinstance(out[2], ImageError) and "not an image" in str(out[2])


def mixed_sources(tmp_path: Path) -> list[tuple[str, Path | bytes]]:
    sources: list[tuple[str, Path | bytes]] = [(p.name, p) for p in demo_jpegs(12)]
    sources[3:3] = list(odd_photos().items())
    sources[9:9] = list(bad_photos(tmp_path).items())
    return sources


def assert_same_tags(reference: dict, other: dict, top1: float, min_cosine: float) -> None:
    assert set(other) == set(reference)
    for key, expected in reference.items():
        if isinstance(expected, ImageError):
            assert isinstance(other[key], ImageError) and str(other[key]) == str(expected), key
        else:
            assert isinstance(other[key], Tagging), key
            assert cosine(expected.features, other[key].features) >= min_cosine, key
    tagged = [k for k, v in reference.items() if isinstance(v, Tagging)]
    agree = np.mean([reference[k].labels[0][0] == other[k].labels[0][0] for k in tagged])
    assert agree >= top1


def test_fast_path_on_cpu_matches_the_reference(reference: Tagger, tmp_path: Path) -> None:
    sources = mixed_sources(tmp_path)
    done: list[int] = []
    fast = dict(reference.tag_on_device(sources, on_done=done.append))
    assert sum(done) == len(sources)
    assert_same_tags(dict(reference.tag(sources)), fast, top1=0.9, min_cosine=0.995)


def test_loader_batches_in_order_and_stops_with_its_consumer() -> None:
    sources = [(i, p) for i, p in enumerate(demo_jpegs(10) * 3)]
    batches = device_batches(sources, CPU, batch_size=4, workers=2, **LIMITS)
    first = next(batches)
    assert first.keys == [0, 1, 2, 3] and first.wait().shape == (4, 3, CROP_SIZE, CROP_SIZE)
    assert first.pixels.is_contiguous(memory_format=torch.channels_last)
    batches.close()
    assert not [t for t in threading.enumerate() if t.name == "device-decode"]
    keys = [key for batch in device_batches(sources, CPU, batch_size=4, workers=2, **LIMITS) for key in batch.keys]
    assert keys == list(range(len(sources)))


def test_loader_hands_a_source_error_to_the_consumer() -> None:
    def sources():
        yield "a", PHOTO
        raise OSError("manifest went away")

    with pytest.raises(OSError, match="manifest went away"):
        list(device_batches(sources(), CPU, batch_size=4, workers=1, **LIMITS))


def test_exact_search_is_exact_on_cpu() -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal((5000, 30)).astype(np.float32)
    queries = base[:20] + 0.01
    scores, rows = exact_search(base, queries, 5)
    expected = np.argsort(-(queries @ base.T), axis=1)[:, :5]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ base.T, expected, axis=1), rtol=1e-5)


def test_gpu_check_quick_runs_its_cpu_baseline() -> None:
    run = subprocess.run([sys.executable, "bench/gpu_check.py", "--quick"], check=False, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "CPU reference, end to end (batch 16):" in out
    rate = float(out.split("CPU reference, end to end (batch 16):")[1].split("photos/s")[0])
    assert rate > 0
    assert "top-1 label equal:" in out and "CPU:" in out
    if not CUDA:
        assert "GPU end to end and forward-only: skipped (no CUDA device)" in out


@pytest.mark.skipif(CUDA, reason="a CUDA device is present: the no-GPU message is not shown")
def test_gpu_check_script_fails_fast_without_a_gpu() -> None:
    run = subprocess.run(["bash", "bench/gpu_check.sh"], check=False, cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1
    assert "no CUDA device" in run.stderr


# -- CUDA: the same comparisons on the GPU -------------------------------------------------------


@needs_cuda
def test_gpu_crops_match_pillow_crops() -> None:
    assert_crops_match_reference(torch.device("cuda"), mean_tolerance=2.0, max_tolerance=80)


@needs_cuda
def test_gpu_tagging_matches_the_cpu_reference(reference: Tagger, gpu: Tagger, tmp_path: Path) -> None:
    sources = mixed_sources(tmp_path)
    assert_same_tags(dict(reference.tag(sources)), dict(gpu.tag(sources)), top1=0.85, min_cosine=0.97)


@needs_cuda
def test_gpu_top5_agrees_with_cpu_on_the_demo_catalog(reference: Tagger, gpu: Tagger) -> None:
    photos = [(p.name, p) for p in sorted(IMAGES.glob("*/*.jpg"))]
    cpu, fast = dict(reference.tag(photos)), dict(gpu.tag(photos))
    overlap = np.mean([len({a for a, _ in cpu[k].labels} & {b for b, _ in fast[k].labels}) / 5 for k in cpu])
    top1 = np.mean([cpu[k].labels[0][0] == fast[k].labels[0][0] for k in cpu])
    cosines = [cosine(cpu[k].features, fast[k].features) for k in cpu]
    print(f"GPU vs CPU on {len(cpu)} photos: top-1 {top1:.3f}, top-5 overlap {overlap:.3f}, "
          f"cosine mean {np.mean(cosines):.4f} min {min(cosines):.4f}")
    assert top1 >= 0.9 and overlap >= 0.85 and np.mean(cosines) >= 0.99


@needs_cuda
def test_gpu_batches_of_256_with_a_short_last_batch(gpu: Tagger) -> None:
    photos = demo_jpegs(100)
    sources = [(i, photos[i % len(photos)]) for i in range(300)]
    out = dict(gpu.tag(sources))
    assert sorted(out) == list(range(300))
    for i in range(100, 300):  # the same photo in another batch, another position: same result
        assert cosine(out[i].features, out[i % 100].features) > 0.999
        assert out[i].labels[0][0] == out[i % 100].labels[0][0]


@pytest.mark.skipif(not faiss_gpu_available(), reason="FAISS has no GPU here (faiss-cpu, or no device)")
def test_faiss_gpu_search_equals_cpu() -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal((200_000, 30)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = base[:256]
    cpu_scores, cpu_rows = exact_search(base, queries, 10, gpu=False)
    gpu_scores, gpu_rows = exact_search(base, queries, 10, gpu=True)
    np.testing.assert_allclose(gpu_scores, cpu_scores, atol=1e-4)
    assert np.mean(gpu_rows == cpu_rows) > 0.99
    assert (gpu_rows[:, 0] == np.arange(256)).all()
