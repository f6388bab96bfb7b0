"""The API's own description: /openapi.json and a readable /docs page (no CDN)."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template_string

from recommender.openapi import spec

bp = Blueprint("docs", __name__)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Vistas API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
code{background:#f3f3f3;padding:0 .3em}h2{margin-top:2rem}.m{font-weight:bold;text-transform:uppercase;
display:inline-block;width:4.5rem}li{margin:.2rem 0}</style></head><body>
<h1>{{ s.info.title }}</h1><p>{{ s.info.description }} The machine-readable description is
<a href="/openapi.json">/openapi.json</a>. Errors are <code>{"error": {"code", "message"}}</code>.</p>
{% for path, ops in s.paths.items() %}<h2><code>{{ path }}</code></h2><ul>
{% for method, op in ops.items() %}<li><span class="m">{{ method }}</span> {{ op.summary }}
{% if op.parameters %}<ul>{% for p in op.parameters %}<li><code>{{ p.name }}</code> ({{ p.in }}):
{{ p.description }}</li>{% endfor %}</ul>{% endif %}
<div>Responses: {% for code, r in op.responses.items() %}<code>{{ code }}</code> {{ r.description }}{% if not loop.last %};
{% endif %}{% endfor %}</div></li>{% endfor %}</ul>{% endfor %}
</body></html>"""


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(spec())


@bp.get("/docs")
def docs():
    return render_template_string(PAGE, s=spec())
