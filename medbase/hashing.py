"""Stable hashing for split assignment: the same key always lands in the same split,
whatever the record order, Python's hash seed or the rest of the data."""

from __future__ import annotations

import hashlib


def stable_fraction(key: str, salt: str | None = "", algorithm: str = "blake2b") -> float:
    """A number in [0, 1) fixed by `key` (and `salt`).

    blake2b (8-byte digest) of `salt \\x00 key` is the project's rule (QA ontology split, EHR
    patient splits). `salt=None, algorithm="sha1"` is the first 8 bytes of sha1(key), kept
    only because MedTok's held-out codes were drawn with it and every published MedTok figure
    depends on that assignment (a golden test pins both).
    """
    if algorithm == "blake2b":
        data = key if salt is None else f"{salt}\x00{key}"
        h = hashlib.blake2b(data.encode("utf-8"), digest_size=8).digest()
    elif algorithm == "sha1":
        data = key if salt is None else f"{salt}\x00{key}"
        h = hashlib.sha1(data.encode("utf-8")).digest()[:8]
    else:
        raise ValueError(f"algorithm must be 'blake2b' or 'sha1', got {algorithm!r}")
    return int.from_bytes(h, "big") / 2.0 ** 64


def split_of(key: str, fractions: dict[str, float], salt: str = "") -> str:
    """Assign `key` to one of `fractions` (name -> share, summing to 1) by `stable_fraction`."""
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-9 or min(fractions.values()) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    u, acc = stable_fraction(key, salt), 0.0
    names = list(fractions)
    for name in names:
        acc += fractions[name]
        if u < acc:
            return name
    return names[-1]


def file_digest(path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes (cache keys, provenance records)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
