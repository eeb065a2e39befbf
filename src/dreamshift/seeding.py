"""Seeds derived from names, so that every sample has its own random stream.

``seed = derive_seed(run_seed, sample_id)``: a sample's pixels do not depend on batch size,
batch position, worker count or the point where a run resumed (DESIGN.md, "Seeds").
"""

from __future__ import annotations

import hashlib

import numpy as np

_MASK63 = (1 << 63) - 1


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any sequence of ints and strings, stable across runs and platforms.

    >>> derive_seed(0, "abc") == derive_seed(0, "abc") != derive_seed(1, "abc")
    True
    """
    text = "\x1f".join(repr(p) if not isinstance(p, str) else p for p in parts)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK63


def rng_for(*parts: object) -> np.random.Generator:
    """A numpy generator (PCG64) seeded by :func:`derive_seed` of ``parts``."""
    return np.random.Generator(np.random.PCG64(derive_seed(*parts)))
