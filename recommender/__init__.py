"""Vistas recommender: the online side, everything a query touches."""
