"""The compiled CPU runtimes: the exported backbone and heads under OpenVINO or ONNX Runtime, no torch.

Which runtime tags (``VISTAS_RUNTIME``): ``torch`` is the reference and the
CUDA path; ``openvino`` and ``onnx`` run the same weights exported to ONNX
(:mod:`recommender.model.onnx_export`). ``auto`` is torch on a CUDA device
(its bf16/nvJPEG path) and OpenVINO on CPUs: on EfficientNet-Lite0 at batch
16 with 2 threads it measured about 1.1-1.8x ONNX Runtime's throughput and
10x torch's (README, "Runtimes"). Both compiled runtimes run float32 whatever
the CPU (OpenVINO would pick bf16 on CPUs that have it), so their results
match the reference to float rounding.

Threads: a process uses the cores it may run on (``os.sched_getaffinity``),
or ``VISTAS_THREADS``; :func:`thread_split` shares them between the runtime
and the decode threads.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from recommender.model.exported import LABELS_FILE, MissingExport, backbone_export, head_export, saved_heads
from recommender.settings import RUNTIMES, Settings

#: Labels a photo keeps from the backbone, best first.
TOP_LABELS = 5


def choose_runtime(settings: Settings, serving: bool = False) -> str:
    """The runtime that tags in this process.

    ``auto``: torch on CUDA (a CUDA device is looked for only where torch is
    installed and the device setting allows it), else the first compiled
    runtime installed. An API process (``serving``) answers one photo at a
    time: it takes the compiled CPU runtime whatever the device setting.
    """
    if settings.runtime not in RUNTIMES:
        raise ValueError(f"VISTAS_RUNTIME={settings.runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if settings.runtime != "auto":
        return settings.runtime
    if not serving and (settings.device == "cuda" or (settings.device == "auto" and _cuda_present())):
        return "torch"
    for name, module in (("openvino", "openvino"), ("onnx", "onnxruntime")):
        if importlib.util.find_spec(module) is not None:
            return name
    return "torch"


#: Where an NVIDIA driver shows itself (WSL's GPU bridge included): without one, no CUDA, and torch is not
#: imported to find that out (it costs a CPU indexer a second and hundreds of MB).
_GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg")


def _cuda_present() -> bool:
    if not any(os.path.exists(path) for path in _GPU_DRIVER_PATHS):
        return False
    try:
        import torch
    except ImportError:  # the CPU image has no torch
        return False
    return torch.cuda.is_available()


def owned_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_split(settings: Settings) -> tuple[int, int]:
    """(runtime threads, decode threads) out of ``VISTAS_THREADS`` or the owned cores.

    Decoding a demo photo costs about a fifth of its forward pass's core time
    (1.4 ms against 7.6 on OpenVINO), so one decode thread in six keeps up.
    From 4 cores on, the decode threads get cores of their own; below, they
    share the runtime's (the runtime does not spin-wait, so the decode
    thread's slices cost it little), since giving one of 2 cores away would
    halve the forward pass.
    """
    total = max(1, settings.threads or owned_cores())
    decode = -(-total // 6)
    return (total - decode if total >= 4 else total), decode


class Outputs(Protocol):
    """A compiled model: numpy in, numpy out."""

    def __call__(self, array: np.ndarray) -> list[np.ndarray]: ...


def compile_model(runtime: str, path: Path, threads: int) -> Outputs:
    """The ONNX file at ``path`` ready to run on ``threads`` CPU threads, float32."""
    if runtime == "openvino":
        return _OpenVino(path, threads)
    if runtime == "onnx":
        return _OnnxRuntime(path, threads)
    raise ValueError(f"not a compiled runtime: {runtime!r}")


class _OpenVino:
    def __init__(self, path: Path, threads: int):
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}
        self.model = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.model.create_infer_request()
        self.lock = threading.Lock()  # one infer request: calls from several threads take turns

    def __call__(self, array: np.ndarray) -> list[np.ndarray]:
        with self.lock:
            results = self.request.infer({0: array})
            return [np.array(results[output]) for output in self.model.outputs]


class _OnnxRuntime:
    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning threads burn the cores decode threads and neighbours need; measured slower on 2 shared cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, array: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input: array})


class CompiledBackbone:
    """The exported backbone: features and the top-5 classes of a batch of uint8 NHWC crops."""

    device = "cpu"

    def __init__(self, settings: Settings, runtime: str, threads: int):
        path = backbone_export(settings)
        if not path.exists():
            raise MissingExport(f"no exported backbone at {path}: run `vistas export` (or any ingest) first")
        self.model = compile_model(runtime, path, threads)
        features, probabilities = self.model(np.zeros((1, 224, 224, 3), dtype=np.uint8))
        self.feature_dim, self.classes = features.shape[1], probabilities.shape[1]

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 NHWC crops -> (features, top-5 probabilities, top-5 classes)."""
        features, probabilities = self.model(np.ascontiguousarray(crops))
        top_i = np.argsort(-probabilities, axis=1, kind="stable")[:, :TOP_LABELS]
        return features, np.take_along_axis(probabilities, top_i, axis=1), top_i


class CompiledHead:
    """A saved custom head, exported: label probabilities from pooled features."""

    def __init__(self, name: str, labels: list[str], model: Outputs):
        self.name, self.labels, self.model = name, labels, model

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return self.model(np.ascontiguousarray(features, dtype=np.float32))[0]


def compiled_heads(data_dir: Path, runtime: str) -> list[CompiledHead]:
    """Every saved head under the data directory, exported, by name (one thread each: they are tiny)."""
    heads = []
    for directory in saved_heads(data_dir):
        path = head_export(directory)
        if not path.exists():
            raise MissingExport(f"head {directory.name!r} is not exported ({path}): run `vistas export` first")
        labels = json.loads((directory / LABELS_FILE).read_text())
        heads.append(CompiledHead(directory.name, labels, compile_model(runtime, path, threads=1)))
    return heads
