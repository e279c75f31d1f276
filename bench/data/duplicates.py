"""Group exact and near-duplicate images so that no group straddles a split.

* **Exact duplicates** share the sha256 of their bytes.
* **Near duplicates** are the same picture re-saved, resized or re-encoded. Two images
  are near duplicates when BOTH their 64-bit perceptual hash (pHash, DCT based) and their
  64-bit difference hash (dHash, gradient based) differ in at most
  :data:`NEAR_PHASH_BITS` / :data:`NEAR_DHASH_BITS` bits.

Why two hashes and these thresholds: on the brain MRI set, pHash alone at distance 6-8
also links different sequences of the same patient (e.g. ``Y105`` and ``Y81``); those
differ by 11-12 bits in dHash, while true re-saves (``Y161``/``Y61``, ``Y112``/``Y146``,
``Y255``/``Y30`` with an added arrow) stay within 8 bits in both. Distances between
unrelated scans start around 10 (pHash) and are mostly above 16.

Groups are the connected components of the "duplicate of" relation (union-find), so
a chain of near copies forms one group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


NEAR_PHASH_BITS = 8
NEAR_DHASH_BITS = 8


@dataclass(frozen=True)
class DuplicateGroup:
    """Indices (into the record list) of images that must stay in one split."""

    members: tuple[int, ...]
    kind: str  # "exact" (all copies identical), "near", or "single"

    @property
    def size(self) -> int:
        return len(self.members)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _hash_bits(hexes: list[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def group_duplicates(records: list) -> list[DuplicateGroup]:
    """Partition ``records`` into duplicate groups (singletons included).

    Groups are ordered by their first member's index, members ascending, so the result
    depends only on the records' order and content.
    """
    n = len(records)
    uf = _UnionFind(n)
    first_by_sha: dict[str, int] = {}
    for i, rec in enumerate(records):
        j = first_by_sha.setdefault(rec.sha256, i)
        if j != i:
            uf.union(i, j)
    phash = _hash_bits([r.phash for r in records])
    dhash = _hash_bits([r.dhash for r in records])
    for i in range(n - 1):
        dp = np.bitwise_count(phash[i + 1 :] ^ phash[i])
        dd = np.bitwise_count(dhash[i + 1 :] ^ dhash[i])
        for j in np.nonzero((dp <= NEAR_PHASH_BITS) & (dd <= NEAR_DHASH_BITS))[0]:
            uf.union(i, i + 1 + int(j))
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(uf.find(i), []).append(i)
    groups = []
    for idx in sorted(members.values(), key=lambda m: m[0]):
        if len(idx) == 1:
            kind = "single"
        elif len({records[i].sha256 for i in idx}) == 1:
            kind = "exact"
        else:
            kind = "near"
        groups.append(DuplicateGroup(tuple(idx), kind))
    return groups


def exact_duplicate_sets(records: list) -> list[list[str]]:
    """Sets of paths with identical bytes (two or more files each), sorted."""
    by_sha: dict[str, list[str]] = {}
    for rec in records:
        by_sha.setdefault(rec.sha256, []).append(rec.path)
    return sorted(sorted(p) for p in by_sha.values() if len(p) > 1)
