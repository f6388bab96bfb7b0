"""The GPU check's figures, each beside the CPU baseline measured in the same run.

    python bench/gpu_check.py            on a GPU machine (bench/gpu_check.sh runs it after the GPU tests)
    python bench/gpu_check.py --quick    tiny sizes; runs the CPU baseline parts anywhere

Figures: tagging throughput end to end (files on disk to labels and features
in host memory) and forward-only (bf16, batch 256) in photos/s; GPU vs CPU
top-5 label agreement on the demo catalog; FAISS exact search time over 1M
30-D vectors, GPU vs CPU. Targets (one H200): end to end >= 3,000 photos/s on
512-px JPEGs, and end to end >= 0.7 of forward-only. Exit status 1 when a
target is missed on a GPU, 0 otherwise (including "no GPU here" and --quick).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from indexer.knn import exact_search, faiss_gpu_available
from recommender.model.tagger import Tagger, Tagging
from recommender.settings import Settings

DEMO_IMAGES = Path(__file__).resolve().parent.parent / "demo" / "catalog" / "images"
TARGET_PHOTOS_PER_S = 3000
TARGET_END_TO_END_RATIO = 0.7
GPU_BATCH = 256
PHOTO_SIDE = 512


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does: the full check, or --quick."""

    distinct_photos: int
    photos_end_to_end: int
    photos_cpu_baseline: int
    forward_iterations: int
    agreement_photos: int | None  # None: the whole demo catalog
    vectors: int
    queries: int


FULL = Sizes(2048, 16384, 512, 40, None, 1_000_000, 4096)
QUICK = Sizes(24, 48, 24, 2, 16, 20_000, 64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, CPU baseline parts only without a GPU")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False): nothing measured. "
              "Run it on a GPU machine, or pass --quick for the CPU baseline parts.")
        return 0
    sizes = QUICK if args.quick else FULL
    _header(cuda)
    misses: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vistas-gpu-check-") as tmp:
        photos = make_photos(Path(tmp), sizes.distinct_photos)
        misses += tagging_throughput(photos, sizes, cuda)
    agreement(sizes, cuda)
    faiss_search(sizes)
    if not cuda:
        print("\nno CUDA device: GPU figures skipped; CPU baseline parts ran")
        return 0
    if args.quick:
        print("\n--quick: sizes too small to judge the targets")
        return 0
    print("\nall targets met" if not misses else "\ntargets missed: " + "; ".join(misses))
    return 1 if misses else 0


def _header(cuda: bool) -> None:
    import faiss
    import torchvision

    device = torch.cuda.get_device_name(0) if cuda else "none"
    print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"faiss {faiss.__version__} (GPU: {faiss_gpu_available()}), CUDA device: {device}, "
          f"{os.cpu_count()} CPU threads")


def make_photos(directory: Path, count: int) -> list[Path]:
    """``count`` distinct baseline JPEGs, longer side 512, cut from the demo catalog's photos."""
    sources = sorted(DEMO_IMAGES.glob("*/*.jpg"))

    def make(i: int) -> Path:
        with Image.open(sources[i % len(sources)]) as im:
            im = im.convert("RGB")
            if (i // len(sources)) % 2:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            scale = PHOTO_SIDE / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS)
            path = directory / f"photo-{i:05d}.jpg"
            im.save(path, "JPEG", quality=85 + i % 10)
            return path

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        return list(pool.map(make, range(count)))


def _photos_per_second(tag: Callable[[], int]) -> float:
    started = time.perf_counter()
    done = tag()
    return done / (time.perf_counter() - started)


def _tag_all(tagger: Tagger, photos: list[Path], count: int) -> int:
    sources = ((i, photos[i % len(photos)]) for i in range(count))
    results = sum(1 for _, result in tagger.tag(sources) if isinstance(result, Tagging))
    if results != count:
        raise RuntimeError(f"{count - results} of {count} photos failed to tag")
    return results


def tagging_throughput(photos: list[Path], sizes: Sizes, cuda: bool) -> list[str]:
    """End-to-end photos/s on the CPU (reference) and the GPU, and GPU forward-only at batch 256."""
    print(f"\n== tagging: EfficientNet-Lite0, {len(photos)} distinct {PHOTO_SIDE}-px JPEGs")
    cpu = Tagger(Settings(device="cpu", runtime="torch"), with_heads=False)
    _tag_all(cpu, photos, min(16, sizes.photos_cpu_baseline))
    cpu_rate = _photos_per_second(lambda: _tag_all(cpu, photos, sizes.photos_cpu_baseline))
    print(f"CPU reference, end to end (batch {cpu.batch_size}): {cpu_rate:8.1f} photos/s")
    if not cuda:
        print("GPU end to end and forward-only: skipped (no CUDA device)")
        return []
    gpu = Tagger(Settings(device="cuda", batch_size=GPU_BATCH), with_heads=False)
    _tag_all(gpu, photos, 2 * GPU_BATCH)
    end_to_end = _photos_per_second(lambda: _tag_all(gpu, photos, sizes.photos_end_to_end))
    forward = forward_only(gpu, sizes.forward_iterations)
    ratio = end_to_end / forward
    print(f"GPU end to end (batch {GPU_BATCH}, bf16, nvJPEG): {end_to_end:8.1f} photos/s "
          f"({end_to_end / cpu_rate:.1f}x the CPU reference)")
    print(f"GPU forward only (batch {GPU_BATCH}, bf16):        {forward:8.1f} photos/s")
    print(f"end to end / forward only: {ratio:.2f}")
    misses = []
    if end_to_end < TARGET_PHOTOS_PER_S:
        misses.append(f"end to end {end_to_end:.0f} < {TARGET_PHOTOS_PER_S} photos/s")
    if ratio < TARGET_END_TO_END_RATIO:
        misses.append(f"end to end / forward only {ratio:.2f} < {TARGET_END_TO_END_RATIO}")
    return misses


def forward_only(tagger: Tagger, iterations: int) -> float:
    """Photos/s of the model alone on a resident uint8 batch (the ceiling for end to end)."""
    pixels = torch.randint(0, 256, (GPU_BATCH, 3, 224, 224), dtype=torch.uint8, device=tagger.device)
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        tagger.forward(pixels)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(iterations):
        tagger.forward(pixels)
    torch.cuda.synchronize()
    return iterations * GPU_BATCH / (time.perf_counter() - started)


def agreement(sizes: Sizes, cuda: bool) -> None:
    """Top-5 labels of the fast path against the CPU reference on the demo catalog's own photos."""
    photos = sorted(DEMO_IMAGES.glob("*/*.jpg"))[: sizes.agreement_photos]
    device = "cuda" if cuda else "cpu"
    reference_tagger = Tagger(Settings(device="cpu", runtime="torch"), with_heads=False)
    reference = dict(reference_tagger.tag((p.name, p) for p in photos))
    fast = Tagger(Settings(device=device, runtime="torch", batch_size=GPU_BATCH), with_heads=False)
    other = dict(fast.tag_on_device((p.name, p) for p in photos))
    top1 = np.mean([reference[k].labels[0][0] == other[k].labels[0][0] for k in reference])
    top5 = np.mean([
        len({label for label, _ in reference[k].labels} & {label for label, _ in other[k].labels}) / 5
        for k in reference
    ])
    cosine = [
        float(reference[k].features @ other[k].features)
        / float(np.linalg.norm(reference[k].features) * np.linalg.norm(other[k].features))
        for k in reference
    ]
    print(f"\n== agreement: fast path on {device} vs CPU reference, {len(reference)} demo photos")
    print(f"top-1 label equal: {top1:.3f}; top-5 overlap: {top5:.3f}; "
          f"feature cosine mean {np.mean(cosine):.4f}, min {min(cosine):.4f}")


def faiss_search(sizes: Sizes) -> None:
    """Exact inner-product search over random unit vectors: CPU time beside GPU time."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal((sizes.vectors, 30), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = base[rng.choice(sizes.vectors, sizes.queries, replace=False)]
    print(f"\n== FAISS exact search: {sizes.vectors:,} vectors x 30-D, {sizes.queries} queries, k=10")
    started = time.perf_counter()
    _, cpu_rows = exact_search(base, queries, 10, gpu=False)
    cpu_s = time.perf_counter() - started
    print(f"CPU: {cpu_s * 1000:9.1f} ms")
    if not faiss_gpu_available():
        print("GPU: skipped (FAISS has no GPU here: faiss-cpu, or no device)")
        return
    exact_search(base[:1000], queries[:8], 10, gpu=True)
    started = time.perf_counter()
    _, gpu_rows = exact_search(base, queries, 10, gpu=True)
    gpu_s = time.perf_counter() - started
    same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(cpu_rows, gpu_rows)])
    print(f"GPU: {gpu_s * 1000:9.1f} ms ({cpu_s / gpu_s:.1f}x faster, incl. transfers); "
          f"top-10 equal to CPU's: {same:.4f}")


if __name__ == "__main__":
    sys.exit(main())
