"""User recommendations: the collaborative model (``implicit``) and the hybrid blend (pure numpy/scipy, no Redis)."""
