"""Tagging throughput end to end (decode included) vs the pure forward pass.

Both are measured in the same run, alternating, on the same photos from the
demo catalog: the forward pass on crops decoded beforehand, and the full
`Tagger.tag` path that decodes on the prefetch threads while the model runs.
Prints photos/s for each (medians of the rounds) and their ratio; the target
is a ratio of at least 0.8 on CPU (decoding must hide behind inference).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from recommender.model.tagger import Tagger
from recommender.photos import load_crop
from recommender.settings import Settings

from report import demo_photos, fmt



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=256, help="photos per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    settings = Settings.from_env(device=args.device)
    paths = demo_photos()[: args.photos]
    tagger = Tagger(settings, with_heads=False)
    crops = np.stack([load_crop(p, settings.max_image_pixels, settings.max_image_bytes) for p in paths])
    tagger.tag_arrays(crops[: tagger.batch_size])  # warm-up

    def run_forward() -> float:
        started = time.perf_counter()
        for start in range(0, len(crops), tagger.batch_size):
            tagger.tag_arrays(crops[start:start + tagger.batch_size])
        return len(crops) / (time.perf_counter() - started)

    def run_end_to_end() -> float:
        started = time.perf_counter()
        done = sum(1 for _ in tagger.tag((i, p) for i, p in enumerate(paths)))
        return done / (time.perf_counter() - started)

    forward, end_to_end = [], []
    for round_no in range(args.rounds):  # alternate which goes first, so drift hits both alike
        if round_no % 2:
            end_to_end.append(run_end_to_end())
            forward.append(run_forward())
        else:
            forward.append(run_forward())
            end_to_end.append(run_end_to_end())
    ratios = [e / f for e, f in zip(end_to_end, forward)]

    print(f"device {tagger.device}, batch {tagger.batch_size}, {len(paths)} photos x {args.rounds} rounds")
    print(f"forward only (decoded tensors): {statistics.median(forward):8.1f} photos/s  {fmt(forward)}")
    print(f"end to end (decode included):   {statistics.median(end_to_end):8.1f} photos/s  {fmt(end_to_end)}")
    print(f"ratio end-to-end / forward:     {statistics.median(ratios):8.2f} (median of paired rounds "
          f"{fmt(ratios, 2)}; target >= 0.80)")


if __name__ == "__main__":
    main()
