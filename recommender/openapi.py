"""The OpenAPI 3 description of every endpoint, served at /openapi.json.

Written out by hand, next to nothing else: the schemas here are what the
schemathesis test in tests/test_openapi.py holds the real answers to.
"""

from __future__ import annotations

from typing import Any

from recommender.catalog_map import REPRESENTATIONS
from recommender.events import EVENT_WEIGHTS
from recommender.reasons import SOURCES as REASON_SOURCES
from recommender.store.items import Status

ID = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}
NULLABLE_STR = {"type": ["string", "null"]}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


def _param(name: str, where: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description}


ITEM_ID = _param("item_id", "path", ID, "Item id")
USER_ID = _param("user_id", "path", ID, "User id")
K = _param("k", "query", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "Results wanted")
FILTERS = [
    _param("kind", "query", {"type": "string"}, "Only items of this kind"),
    _param("category", "query", {"type": "string"}, "Only items of this category"),
    _param("active_at", "query", {"type": "string"},
           "ISO-8601 instant whose sale window must contain it; 'now' (default) or 'any'"),
    _param("exclude", "query", {"type": "string"}, "Comma-separated item ids to leave out"),
]
DIVERSITY = _param("diversity", "query", {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
                   "0 = pure similarity; towards 1 = more varied results (MMR over topics)")
COMMON_ERRORS = {"400": _error("Bad parameter"), "401": _error("Missing or invalid API key"),
                 "503": _error("Redis unreachable or no index loaded")}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "TopicWeight": {"type": "object", "required": ["id", "name", "weight"], "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "weight": {"type": "number"}}},
    "Topic": {"type": "object", "required": ["id", "name", "group", "top_tags"], "properties": {
        "id": {"type": "integer", "description": "Stable across reindexes while the topic matches"},
        "name": {"type": "string"},
        "model_name": {"type": "string", "description": "The topic model's name, when an admin renamed it"},
        "group": {"type": "integer", "description": "Id of the first topic it is a near-duplicate of (else its own)"},
        "top_tags": {"type": "array", "items": {"type": "object", "properties": {
            "tag": {"type": "string"}, "weight": {"type": "number"}}}}}},
    "Item": {"type": "object", "required": ["id", "title", "kind", "category", "status", "tags", "topics"],
             "properties": {
                 "id": {"type": "string"}, "title": {"type": "string"}, "kind": {"type": "string"},
                 "category": {"type": "string"}, "url": {"type": "string"},
                 "price": {"type": ["number", "null"]}, "starts_at": NULLABLE_STR, "ends_at": NULLABLE_STR,
                 "attrs": {"type": "object"},
                 "status": {"type": "string", "enum": [s.value for s in Status]},
                 "reason": NULLABLE_STR, "version": {"type": ["integer", "null"]},
                 "tags": {"type": "array", "items": {"type": "object", "properties": {
                     "tag": {"type": "string"}, "score": {"type": "number"}}}},
                 "topics": {"type": "array", "items": _ref("TopicWeight")}}},
    "Result": {"type": "object", "required": ["id", "score", "title", "reasons"], "properties": {
        "id": {"type": "string"}, "score": {"type": "number"}, "title": {"type": "string"},
        "kind": {"type": "string"}, "category": {"type": "string"}, "price": {"type": ["number", "null"]},
        "url": NULLABLE_STR, "starts_at": NULLABLE_STR, "ends_at": NULLABLE_STR,
        "reasons": {"type": "object", "properties": {
            "topics": {"type": "array", "items": _ref("TopicWeight")},
            "tags": {"type": "array", "items": {"type": "string"}},
            "because_of": {"type": "array", "items": {"type": "string"}},
            "popular": {"type": "boolean"},
            "source": {"type": "string", "enum": list(REASON_SOURCES),
                       "description": "recommendations and also: the signal that brought the result"},
            "text": {"type": "string", "description": "recommendations and also: why, in a sentence"}}}}},
    "ItemPage": {"type": "object", "required": ["items", "total", "offset", "version"], "properties": {
        "items": {"type": "array", "items": {"allOf": [_ref("Item"), {"type": "object", "required": ["photo"],
                                                                      "properties": {"photo": {"type": "boolean"}}}]}},
        "total": {"type": "integer", "description": "Served items in all"}, "offset": {"type": "integer"},
        "version": {"type": "integer"}}},
    "Results": {"type": "object", "required": ["items", "version"], "properties": {
        "items": {"type": "array", "items": _ref("Result")}, "version": {"type": "integer"},
        "model": {"type": ["integer", "null"], "description": "recommendations: the user-model version, null: none"}}},
    "Map": {"type": "object", "required": [
        "version", "representation", "count", "ids", "titles", "x", "y", "topics", "own_topics", "own_topic_names",
        "photos", "thumbnail_url", "representations", "summary"], "properties": {
        "version": {"type": "integer"}, "representation": {"type": "string", "enum": list(REPRESENTATIONS)},
        "label": {"type": "string"}, "count": {"type": "integer"},
        "ids": {"type": "array", "items": {"type": "string"}}, "titles": {"type": "array", "items": {"type": "string"}},
        "x": {"type": "array", "items": {"type": "number"}}, "y": {"type": "array", "items": {"type": "number"}},
        "topics": {"type": "array", "items": {"type": "integer"}, "description": "Dominant served topic, -1: none"},
        "own_topics": {"type": ["array", "null"], "items": {"type": "integer"}},
        "own_topic_names": {"type": ["array", "null"], "items": {"type": "string"}},
        "photos": {"type": "array", "items": {"type": "integer", "enum": [0, 1]}},
        "thumbnail_url": {"type": "string", "description": "URL template: replace {id}"},
        "representations": {"type": "array", "items": {"type": "object", "required": ["id", "label", "available"]}},
        "summary": {"type": "object", "required": ["text", "silhouette", "best"]}}},
    "ItemWrite": {"type": "object", "additionalProperties": False,
                  "anyOf": [{"required": ["image"]}, {"required": ["tags"]}], "properties": {
        "title": {"type": "string", "maxLength": 500}, "kind": {"type": "string", "maxLength": 64},
        "category": {"type": "string", "maxLength": 128}, "url": {"type": "string", "maxLength": 2048},
        "price": {"type": "number", "minimum": 0}, "starts_at": {"type": "string", "format": "date-time"},
        "ends_at": {"type": "string", "format": "date-time"}, "attrs": {"type": "object"},
        "tags": {"type": "array", "minItems": 1, "maxItems": 50, "items": {"type": "string", "minLength": 1, "maxLength": 100}},
        "image": {"type": "string", "description": "Path under the server's image root"}}},
    "Event": {"type": "object", "required": ["item_id", "type"], "additionalProperties": False, "properties": {
        "item_id": ID, "type": {"type": "string", "enum": list(EVENT_WEIGHTS)},
        "ts": {"description": "ISO-8601 or epoch seconds; default now",
               "oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}}},
}


def spec() -> dict[str, Any]:
    results = {"200": _json(_ref("Results"), "Results, best first"), **COMMON_ERRORS}
    item_404 = {"404": _error("Unknown item")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Vistas recommender API", "version": "1",
                 "description": "Content-based image recommendations: similar items, user recommendations, topics."},
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
        "security": [{"bearer": []}, {"apiKey": []}, {}],
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {
                "200": _json({"type": "object"}, "Process is up")}}},
            "/readyz": {"get": {"summary": "Readiness: Redis reachable and an index loaded", "security": [],
                                "responses": {"200": _json({"type": "object"}, "Ready"),
                                              "503": _json({"type": "object"}, "Not ready, with the failing checks")}}},
            "/v1/items": {"get": {
                "summary": "The served catalog a page at a time, in index order (a storefront grid)",
                "parameters": [_param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100,
                                                         "default": 24}, "Items per page"),
                               _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 10**9,
                                                          "default": 0}, "Items to skip")],
                "responses": {"200": _json(_ref("ItemPage"), "A page of items"), **COMMON_ERRORS}}},
            "/v1/items/{item_id}": {
                "get": {"summary": "One item: metadata, status, tags, named topics", "parameters": [ITEM_ID],
                        "responses": {"200": _json(_ref("Item"), "The item"), **COMMON_ERRORS, **item_404}},
                "put": {"summary": "Create or replace an item (admin); indexed asynchronously",
                        "parameters": [ITEM_ID],
                        "requestBody": {"required": True, "content": {
                            "application/json": {"schema": _ref("ItemWrite")},
                            "multipart/form-data": {"schema": {"type": "object", "required": ["photo"], "properties": {
                                "photo": {"type": "string", "format": "binary"},
                                "metadata": {"type": "string", "description": "ItemWrite as JSON"}}}}}},
                        "responses": {"202": _json({"type": "object", "required": ["id", "status"], "properties": {
                            "id": {"type": "string"}, "status": {"type": "string"}}}, "Queued for indexing"),
                            "403": _error("Needs an admin key"), "413": _error("Body or photo too large"),
                            "422": _error("Invalid item"), **COMMON_ERRORS}},
                "delete": {"summary": "Delete an item (admin); gone from every answer at once",
                           "parameters": [ITEM_ID],
                           "responses": {"204": {"description": "Deleted"}, "403": _error("Needs an admin key"),
                                         **COMMON_ERRORS, **item_404}},
            },
            "/v1/items/{item_id}/similar": {"get": {
                "summary": "Items most similar to this one, with reasons", "parameters": [ITEM_ID, K, *FILTERS, DIVERSITY],
                "responses": {**results, **item_404, "409": _error("Item not indexed yet (queued or failed)")}}},
            "/v1/items/{item_id}/also": {"get": {
                "summary": "Customers also viewed: co-occurrence from the user model, filled from content similarity "
                           "when the item is too new or no model is trained yet",
                "parameters": [ITEM_ID, K, *FILTERS],
                "responses": {**results, **item_404, "409": _error("Item not indexed yet (queued or failed)")}}},
            "/v1/topics": {"get": {"summary": "Topics of the served version", "responses": {
                "200": _json({"type": "object", "required": ["topics", "version"], "properties": {
                    "topics": {"type": "array", "items": _ref("Topic")}, "version": {"type": "integer"}}}, "Topics"),
                **COMMON_ERRORS}}},
            "/v1/topics/{topic_id}": {"put": {
                "summary": "Rename a topic (admin); the name outlives reindexes that keep the topic",
                "parameters": [_param("topic_id", "path", {"type": "integer", "minimum": 0}, "Topic id")],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 80, "pattern": "\\S"}}}}}},
                "responses": {"200": _json({**_ref("Topic"), "description": "The renamed topic"}, "Renamed"),
                              "403": _error("Needs an admin key"), "404": _error("No such topic in the served version"),
                              "409": _error("Another topic has this name"), "422": _error("Invalid name"),
                              **COMMON_ERRORS}}},
            "/v1/users/{user_id}/events": {"post": {
                "summary": "Record one event or a list of up to 500", "parameters": [USER_ID],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [_ref("Event"), {"type": "array", "minItems": 1, "maxItems": 500, "items": _ref("Event")}]}}}},
                "responses": {"202": _json({"type": "object", "properties": {"accepted": {"type": "integer"}}},
                                           "Stored"),
                              "404": _error("Unknown item"), "422": _error("Invalid events; nothing stored"),
                              **COMMON_ERRORS}}},
            "/v1/users/{user_id}/recommendations": {"get": {
                "summary": "Recommendations: the trained hybrid (content, collaborative, viewed-next, trending, "
                           "popular), else the affinity profile blended with popularity; never a dismissed item",
                "parameters": [USER_ID, K, *FILTERS], "responses": results}},
            "/v1/users/{user_id}/profile": {"get": {
                "summary": "The user's topic mixture and recent events", "parameters": [USER_ID],
                "responses": {"200": _json({"type": "object", "required": ["user_id", "topics", "events"]},
                                           "Profile"), **COMMON_ERRORS}}},
            "/v1/users/{user_id}": {"delete": {
                "summary": "Forget the user (privacy request)", "parameters": [USER_ID],
                "responses": {"204": {"description": "Forgotten"}, **COMMON_ERRORS}}},
            "/v1/search": {"post": {
                "summary": "Items most similar to an uploaded photo", "parameters": [K, *FILTERS, DIVERSITY],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["photo"],
                    "properties": {"photo": {"type": "string", "format": "binary"}}}}}},
                "responses": {**results, "413": _error("Photo too large"), "422": _error("Not a readable photo"),
                              "503": _error("Redis unreachable, no index loaded, or the backbone not exported "
                                            "yet (`vistas export`)")}}},
            "/v1/map": {"get": {
                "summary": "The catalog map: every item's 2-D position, title and topic, as parallel arrays",
                "parameters": [_param("representation", "query", {"type": "string", "enum": list(REPRESENTATIONS)},
                                      "Which map; default: the one whose topics cluster best")],
                "responses": {"200": _json(_ref("Map"), "The map"), **COMMON_ERRORS,
                              "404": _error("This catalog has no such map (no photo features)"),
                              "409": _error("The served version was built without a map")}}},
            "/v1/items/{item_id}/thumbnail": {"get": {
                "summary": "A small JPEG of the item's photo (256 px), with ETag and Cache-Control",
                "parameters": [ITEM_ID],
                "responses": {"200": {"description": "JPEG", "content": {"image/jpeg": {"schema": {
                    "type": "string", "format": "binary"}}}},
                    "304": {"description": "Not modified (If-None-Match matched the ETag)"}, **COMMON_ERRORS,
                    "404": _error("Unknown item, or it has no readable photo")}}},
            **{path: {"get": {"summary": f"The {page} page (HTML; it asks for a client key when keys are set)",
                              "security": [], "responses": {"200": {"description": "The page", "content": {
                                  "text/html": {"schema": {"type": "string"}}}}}}}
               for path, page in (("/", "catalog map"), ("/map", "catalog map"), ("/store", "storefront demo"))},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {
                "200": {"description": "Text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
    }
