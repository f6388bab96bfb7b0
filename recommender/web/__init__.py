"""The map page: a Flask blueprint, its template and its static files (no build step, nothing from a CDN)."""
