"""Per-step seeds: a trainer reseeds every step from (namespace, seed, rank, step) instead of carrying RNG
state, so a resumed run draws exactly what the uninterrupted one would have, and ranks draw differently."""

from __future__ import annotations

import hashlib


def step_seed(namespace: str, seed: int, rank: int, step: int) -> int:
    """A 63-bit seed from sha256 of "namespace:seed:rank:step" (the namespace keeps two trainers' draws apart)."""
    digest = hashlib.sha256(f"{namespace}:{seed}:{rank}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
