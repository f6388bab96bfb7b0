"""Vistas indexer: the offline side, everything that turns photos into vectors."""
