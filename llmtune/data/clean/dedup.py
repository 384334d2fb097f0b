"""Stages 9-10: exact dedup (a hash of the normalised text) and near dedup (datasketch MinHash + LSH).

The rule is the same for both and decides which copy survives: a document is dropped when it
duplicates an EARLIER document of the dedup input (whether that one was kept or not). That rule splits
exactly over shards: a shard checks its documents against its own earlier ones, and the final step
checks the survivors of shard s against everything shards 0..s-1 fed into dedup. So a sharded run
gives the same corpus as a single run.

LSH candidates are verified with the MinHash estimate of the Jaccard similarity. The estimate of a pair
at similarity J has a standard deviation of sqrt(J (1 - J) / num_perm) (0.035 at J = 0.8 and 128
permutations), so a check of estimate >= threshold would miss half of the pairs just above it. The check
instead accepts estimates down to ``verify_threshold`` (the threshold minus 1.65 standard deviations), which
catches 95 % of the pairs exactly at the threshold and nearly all above it; pairs a few points below the
threshold (still copies with a few percent of words changed) are dropped too, some of the time. The LSH bands
are tuned for that lower threshold (datasketch's optimiser, false negatives weighted 0.98) to miss few pairs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Optional

from llmtune.data.clean.normalize import words

if TYPE_CHECKING:
    import numpy as np

    from llmtune.config.clean import NearDedupConfig

_Z_95 = 1.645  # one-sided 95 % quantile of the normal distribution
_LSH_WEIGHTS = (0.02, 0.98)  # (false positive, false negative) weights for choosing bands x rows
EXACT, NEAR = "exact_dedup", "near_dedup"


def exact_key(text: str) -> int:
    """A 64-bit hash of ``text`` lower-cased with whitespace collapsed (so case/spacing copies match)."""
    digest = hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def shingles(text: str, n: int) -> list[bytes]:
    """Word ``n``-grams of ``text`` (one shingle of all its words when it has fewer than ``n``)."""
    tokens = words(text)
    if len(tokens) <= n:
        return [" ".join(tokens).encode("utf-8")]
    return [" ".join(tokens[i: i + n]).encode("utf-8") for i in range(len(tokens) - n + 1)]


@lru_cache(maxsize=4)
def _template(num_perm: int, seed: int) -> Any:
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=seed)  # computing the permutations once per setting


def signature(text: str, cfg: NearDedupConfig) -> np.ndarray:
    """The MinHash signature (``num_perm`` uint32 values) of ``text``'s word shingles."""
    from datasketch import MinHash

    template = _template(cfg.num_perm, cfg.seed)
    minhash = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, permutations=template.permutations, scheme=template.scheme)
    minhash.update_batch(shingles(text, cfg.ngram))
    return minhash.hashvalues.copy()


def verify_threshold(cfg: NearDedupConfig) -> float:
    """The lowest MinHash estimate accepted as a near copy (see the module docstring)."""
    return cfg.threshold - _Z_95 * math.sqrt(cfg.threshold * (1 - cfg.threshold) / cfg.num_perm)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Share of equal MinHash values: an unbiased estimate of the Jaccard similarity."""
    return float((a == b).mean())


@dataclass
class DedupIndex:
    """Every document fed into dedup so far: exact hashes and MinHash signatures in an LSH index.

    Keys are input row numbers, so a removal names the row it duplicates.
    """

    cfg: NearDedupConfig
    exact: dict[int, int] = field(default_factory=dict)
    signatures: dict[int, Any] = field(default_factory=dict)
    lsh: Any = None

    def __post_init__(self) -> None:
        from datasketch import MinHashLSH

        self.lsh = MinHashLSH(threshold=verify_threshold(self.cfg), num_perm=self.cfg.num_perm, weights=_LSH_WEIGHTS)

    def find_exact(self, key: int) -> Optional[int]:
        """The row of an earlier document with the same exact hash, or None."""
        return self.exact.get(key)

    def find_near(self, sig: np.ndarray) -> Optional[int]:
        """The earliest indexed row whose estimated Jaccard with ``sig`` passes the verification, or None."""
        lowest = verify_threshold(self.cfg)
        matches = [row for row in self.lsh.query(self._minhash(sig))
                   if estimated_jaccard(self.signatures[row], sig) >= lowest]
        return min(matches) if matches else None

    def add(self, row: int, key: int, sig: Optional[np.ndarray]) -> None:
        """Index one document (its signature only when near dedup is on and it is not an exact copy)."""
        self.exact.setdefault(key, row)
        if sig is not None:
            self.signatures[row] = sig
            self.lsh.insert(row, self._minhash(sig))

    def _minhash(self, sig: np.ndarray) -> Any:
        from datasketch import LeanMinHash

        return LeanMinHash(seed=self.cfg.seed, hashvalues=sig, scheme=_template(self.cfg.num_perm, self.cfg.seed).scheme)


def dedup_verdict(
    index: DedupIndex, row: int, key: int, sig: Optional[np.ndarray], exact_on: bool, near_on: bool
) -> tuple[Optional[str], Optional[int]]:
    """Check one document against ``index`` (without adding it).

    Returns:
        ``(stage, matched_row)``: ``("exact_dedup", r)`` or ``("near_dedup", r)`` when it duplicates
        row ``r``, else ``(None, None)``.
    """
    if exact_on:
        match = index.find_exact(key)
        if match is not None:
            return EXACT, match
    if near_on and sig is not None:
        match = index.find_near(sig)
        if match is not None:
            return NEAR, match
    return None, None
