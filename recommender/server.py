"""Running the API under gunicorn from Python (``vistas serve``, ``vistas demo``)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from recommender.settings import Settings


class GunicornServer(BaseApplication):
    """gunicorn with our app factory: each worker process builds its own app and index."""

    def __init__(self, settings: Settings, bind: str, workers: int, **options: Any):
        self.settings = settings
        self.options = {"bind": bind, "workers": workers, "timeout": 60, "graceful_timeout": 10,
                        "accesslog": "-", **options}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self):
        from recommender.app import create_app

        return create_app(self.settings)
