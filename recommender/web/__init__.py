"""The demo pages (catalog map, storefront): a Flask blueprint, templates and static files (no build step, no CDN)."""
