"""Running the API under gunicorn from Python (``vistas serve``, ``vistas demo``)."""

from __future__ import annotations

import os
import shutil
from typing import Any

from gunicorn.app.base import BaseApplication

from recommender.app import create_app
from recommender.settings import Settings


class GunicornServer(BaseApplication):
    """gunicorn with our app factory: each worker process builds its own app and index.

    The workers share what matters without ``preload_app``: the modules this process
    imported before forking (copy-on-write), and the served version, which every worker
    memory-maps from the same files, so the page cache holds it once per host
    (``bench/scale.py`` prints an extra worker's private memory). Preloading would load
    the index before the fork, with Redis connections and loader threads that do not
    survive one.
    """

    def __init__(self, settings: Settings, bind: str, workers: int, **options: Any):
        self.settings = settings
        self.options = {"bind": bind, "workers": workers, "timeout": 60, "graceful_timeout": 10,
                        "accesslog": "-", "child_exit": _child_exit, **options}
        # Metrics from all workers are merged through files in this directory, fresh for each server.
        metrics_dir = settings.data_dir.resolve() / f"metrics-{os.getpid()}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self):
        return create_app(self.settings)


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
