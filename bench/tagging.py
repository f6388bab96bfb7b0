"""Tagging throughput on CPU: torch (today's path) against the chosen compiled runtime, forward and end to end.

One run, the same demo photos for every figure, measured in paired rounds
(each round runs every variant once, in an order that rotates so drift hits
all alike); medians of the rounds, with each round's figure beside them:

* torch forward (crops decoded beforehand) and torch end to end (``Tagger.tag``
  on files, decoding on the prefetch threads): the baseline;
* the chosen runtime's forward and end to end (decode included);

then the ratios, each a median of per-round ratios. Targets: runtime end to
end >= 3.0x torch end to end, and >= 0.8 of the runtime's own forward.

``--busy N`` runs N busy-looping processes beside it the whole time (how each
runtime degrades when it does not own its cores); ``--equality`` first
compares the runtime's labels and features with torch's on every demo photo.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recommender.model.tagger import Tagger, Tagging
from recommender.photos import load_crop
from recommender.settings import Settings

from report import DEMO, demo_photos, fmt

TARGET_SPEED_UP, TARGET_END_TO_END_SHARE = 3.0, 0.8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=256, help="photos per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runtime", choices=["auto", "onnx", "openvino"],
                        help="the compiled runtime to measure [default VISTAS_RUNTIME, else auto: the default one]")
    parser.add_argument("--busy", type=int, default=0, help="busy-looping processes competing for the cores")
    parser.add_argument("--equality", action="store_true", help="first compare with torch on all demo photos")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings.from_env(device="cpu", data_dir=Path(data_dir), runtime=args.runtime)
        torch_tagger = Tagger(settings.with_(runtime="torch"), with_heads=False)
        fast = Tagger(settings, with_heads=False)
        if fast.runtime == "torch":
            raise SystemExit("the chosen runtime is torch: nothing to compare (pass --runtime openvino or onnx)")
        if args.equality:
            equality(torch_tagger, fast)
        paths = demo_photos()[: args.photos]
        crops = np.stack([load_crop(p, settings.max_image_pixels, settings.max_image_bytes) for p in paths])
        variants = {
            "torch forward": lambda: forward(torch_tagger, crops),
            "torch end to end": lambda: end_to_end(torch_tagger, paths),
            f"{fast.runtime} forward": lambda: forward(fast, crops),
            f"{fast.runtime} end to end": lambda: end_to_end(fast, paths),
        }
        for run in variants.values():  # warm-up: first-call allocations and kernel choices
            run()
        with competing(args.busy):
            rates = paired_rounds(variants, args.rounds)

    names = list(variants)
    print(f"batch {fast.batch_size}, {fast.threads} runtime threads + {fast.decode_threads} decoding, "
          f"{len(paths)} photos x {args.rounds} rounds, {args.busy} competing busy processes")
    for name in names:
        print(f"{name + ':':26s}{statistics.median(rates[name]):8.1f} photos/s  {fmt(rates[name])}")
    torch_fwd, torch_e2e, fast_fwd, fast_e2e = (rates[n] for n in names)
    ratio("forward speed-up", fast_fwd, torch_fwd)
    ratio("end-to-end speed-up", fast_e2e, torch_e2e, TARGET_SPEED_UP)
    ratio(f"{fast.runtime} end to end / forward", fast_e2e, fast_fwd, TARGET_END_TO_END_SHARE)


def forward(tagger: Tagger, crops: np.ndarray) -> float:
    started = time.perf_counter()
    for start in range(0, len(crops), tagger.batch_size):
        tagger.tag_arrays(crops[start:start + tagger.batch_size])
    return len(crops) / (time.perf_counter() - started)


def end_to_end(tagger: Tagger, paths: list[Path]) -> float:
    started = time.perf_counter()
    done = sum(1 for _, result in tagger.tag(enumerate(paths)) if isinstance(result, Tagging))
    return done / (time.perf_counter() - started)


def paired_rounds(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Every variant once per round, the order rotated each round."""
    names = list(variants)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(rounds):
        for name in names[round_no % len(names):] + names[: round_no % len(names)]:
            rates[name].append(variants[name]())
    return rates


def ratio(label: str, numerator: list[float], denominator: list[float], target: float | None = None) -> None:
    ratios = [n / d for n, d in zip(numerator, denominator)]
    goal = f"; target >= {target:.2f}" if target is not None else ""
    print(f"{label + ':':40s}{statistics.median(ratios):6.2f} (median of paired rounds {fmt(ratios, 2)}{goal})")


def equality(reference: Tagger, other: Tagger) -> None:
    """Top-5 labels and feature cosine of ``other`` against torch on every demo photo."""
    photos = sorted((DEMO / "images").glob("*/*.jpg"))
    ref = dict(reference.tag((p.name, p) for p in photos))
    out = dict(other.tag((p.name, p) for p in photos))
    same = [[label for label, _ in ref[k].labels] == [label for label, _ in out[k].labels] for k in ref]
    top1 = [ref[k].labels[0][0] == out[k].labels[0][0] for k in ref]
    cosine = [float(ref[k].features @ out[k].features)
              / float(np.linalg.norm(ref[k].features) * np.linalg.norm(out[k].features)) for k in ref]
    print(f"equality, {other.runtime} vs torch on {len(ref)} demo photos: top-5 labels identical {np.mean(same):.4f} "
          f"(target >= 0.99), top-1 {np.mean(top1):.4f}, feature cosine min {min(cosine):.7f} (target >= 0.9999)")


def _spin() -> None:
    while True:
        pass


class competing:
    """``n`` busy-looping processes for the duration of the block."""

    def __init__(self, n: int):
        self.processes = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]

    def __enter__(self) -> None:
        for process in self.processes:
            process.start()

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
            process.join()


if __name__ == "__main__":
    main()
