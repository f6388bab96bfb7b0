"""The API against its own OpenAPI description, with schemathesis generating the requests.

Every answer must be a documented status with a body matching its schema, and
no input may produce a 500.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from schemathesis.checks import positive_data_acceptance

from indexer.ingest import ingest
from indexer.manifest import read_catalog
from recommender.app import create_app
from recommender.model.onnx_export import export_all
from recommender.model.tagger import Tagger
from recommender.settings import Settings
from recommender.store import Store
from tests.conftest import sample_rows, write_manifest


def test_api_matches_its_openapi_description(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    """Its own small catalog: generated PUTs and DELETEs must not disturb other tests.

    Schema-valid writes may still be refused (a photo path that does not exist
    under the image root cannot be expressed in a schema), so the "valid data
    is accepted" heuristic is left out; every other check runs.
    """
    ingest(read_catalog(write_manifest(sample_rows()[:12], tmp_path)), settings, store, tagger, progress=False)
    export_all(settings)  # query by photo's exports, where the API looks (the shared tagger has its own data dir)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", create_app(settings))
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, report them together
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_spec_covers_every_route(indexed: Settings) -> None:
    app = create_app(indexed)
    documented = set(app.test_client().get("/openapi.json").get_json()["paths"])
    routes = {r.rule.replace("<", "{").replace(">", "}") for r in app.url_map.iter_rules() if r.endpoint != "static"}
    assert routes - {"/openapi.json", "/docs"} == documented
