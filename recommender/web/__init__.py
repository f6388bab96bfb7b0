"""The map page: a Flask blueprint with its template and static files (no build step, nothing from a CDN)."""
