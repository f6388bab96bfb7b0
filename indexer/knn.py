"""Exact nearest neighbours in bulk, on the GPU when the installed FAISS has one.

The API answers one query at a time from its CPU index (recommender/index.py):
for a single 30-D query the copy to a GPU costs more than the search. Bulk
jobs (every item against every item: ``indexer.evaluation``, for `vistas eval`)
are where the GPU pays; this is their entry point. The GPU build of FAISS
(``faiss-gpu``, in docker/Dockerfile.gpu) provides ``StandardGpuResources``;
``faiss-cpu`` does not, and then everything runs on the CPU.
"""

from __future__ import annotations

from functools import cache

import faiss
import numpy as np

#: Multiply-adds (base rows x queries x dimensions) below which the CPU is faster than the transfer to a GPU.
GPU_MIN_WORK = 1_000_000_000


def faiss_gpu_available() -> bool:
    """True when FAISS was built with GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@cache
def _gpu_resources() -> faiss.StandardGpuResources:
    return faiss.StandardGpuResources()


def exact_search(
    base: np.ndarray, queries: np.ndarray, k: int, gpu: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` inner products of each query over ``base``, best first: (scores, base rows).

    ``gpu=None`` uses the GPU when there is one and the search is large enough
    to repay the transfer; True or False forces the choice (the benchmark
    times both).
    """
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if gpu is None:
        gpu = faiss_gpu_available() and base.size * len(queries) >= GPU_MIN_WORK
    if gpu:
        if not faiss_gpu_available():
            raise ValueError("a GPU search was asked for, but FAISS has no GPU (install faiss-gpu on a GPU machine)")
        return faiss.knn_gpu(_gpu_resources(), queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
    return faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
