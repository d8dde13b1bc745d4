"""Duplicate filter of the quality gate: exact and near duplicates of candidates that passed before.

A candidate is a duplicate when an item that *passed* earlier (recorded with `DuplicateIndex.add`)
has the same normalised text (`exact_of`: BLAKE2b of `normalise(text)`), or an estimated Jaccard
similarity >= `threshold` (default 0.85) between the word 3-shingles of the two normalised texts
(`near_of`: MinHash LSH, every bucket candidate verified against the stored signatures).
Idempotent by id: an item is never a duplicate of itself, and `add` of an id already there changes
nothing, so a replay gets the same decision (ids name immutable content). ``check(batch)`` gives
the decisions of ``for item in batch: check([item]); add([item]) if not duplicate``: give it only
the items that passed every other filter, in order (run it last), and `add` its non-duplicates.
`MemoryBandStore` keeps the index in the process, with no expiry.

Design (banding, weights, throughput): docs/concepts/gate.md#duplicates
"""

from __future__ import annotations

import hashlib
import time
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Collection, Protocol, Sequence

import numpy as np
from datasketch import LeanMinHash, MinHash
from datasketch.lsh import _optimal_param

__all__ = [
    "BandStore",
    "DuplicateCheck",
    "DuplicateIndex",
    "IndexEntry",
    "MemoryBandStore",
    "lsh_params",
    "normalise",
    "shingles",
]

NORMALISE_VERSION = 1  # bump when `normalise` changes: it is part of every key namespace
LSH_WEIGHTS = (0.1, 0.9)  # (false positive, false negative) weights for datasketch's optimiser
_SCHEME = "affine32"
_SIG_DTYPE = np.dtype("<u4")


# ---------------------------------------------------------------------------------------------
# Text


def _strip_punct(token: str) -> str:
    if token[0].isalnum() and token[-1].isalnum():
        return token  # the common case
    i, j = 0, len(token)
    while i < j and unicodedata.category(token[i])[0] == "P":
        i += 1
    while j > i and unicodedata.category(token[j - 1])[0] == "P":
        j -= 1
    return token[i:j]


def normalise(text: str) -> str:
    """The text that exact and near duplicates are judged on.

    1. Unicode NFKC (compatibility forms fold: full-width letters, ligatures, non-breaking spaces).
    2. Lower-case with `str.casefold` (full Unicode case folding: "Straße" -> "strasse").
    3. Split on any run of Unicode whitespace.
    4. Strip Unicode punctuation (general category P*: .,;:!?'"()[]{}-_/ and the like, in any
       script) from both ends of every token, keeping it inside ("don't", "e.g", "3.14");
       tokens left empty (all punctuation) are dropped. Symbols (S*: $ + = < > emoji) are kept.
    5. Join the tokens with single spaces.
    """
    tokens = (_strip_punct(t) for t in unicodedata.normalize("NFKC", text).casefold().split())
    return " ".join(t for t in tokens if t)


def _shingles_of_normalised(norm: str, k: int) -> set[bytes]:
    words = norm.split(" ")
    if len(words) < k or not norm:
        return {norm.encode("utf-8")}
    return {s.encode("utf-8") for s in map(" ".join, zip(*(words[i:] for i in range(k))))}


def shingles(text: str, k: int = 3) -> set[bytes]:
    """Word k-shingles (UTF-8, words joined by one space) of `normalise(text)`.

    A text of fewer than k words is one shingle: the whole normalised text (b"" for an empty one).
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    return _shingles_of_normalised(normalise(text), k)


@lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) for `threshold` from datasketch's optimiser, weighted by `LSH_WEIGHTS`."""
    return _optimal_param(threshold, num_perm, *LSH_WEIGHTS)


# ---------------------------------------------------------------------------------------------
# Stores


@dataclass(frozen=True)
class IndexEntry:
    """What `DuplicateIndex.add` records for one item: tokens and a signature, never the text."""

    id: str
    exact: str  # hash of the normalised text
    sig_token: str  # namespace + id
    signature: bytes  # num_perm little-endian uint32
    bands: tuple[str, ...]  # one bucket token per band


class BandStore(Protocol):
    """Storage of the index; a store chooses its own layout for the tokens it is given."""

    def lookup(self, exact: Sequence[str], bands: Sequence[Sequence[str]]) -> tuple[list[str | None], list[set[str]]]:
        """For item i: the id recorded under exact[i] (or None) and the union of the ids in its
        bucket tokens bands[i]. One round trip for the whole batch."""
        ...

    def signatures(self, tokens: Collection[str]) -> dict[str, bytes]:
        """The signatures stored under `tokens` (missing or expired ones left out). One round trip."""
        ...

    def write(self, entries: Sequence[IndexEntry]) -> None:
        """Record entries; first writer wins for exact and signature keys. One round trip."""
        ...


class MemoryBandStore:
    """`BandStore` in dicts, for one process: unit tests and offline runs. Nothing expires."""

    def __init__(self) -> None:
        self.exact: dict[str, str] = {}
        self.buckets: dict[str, set[str]] = {}
        self.sigs: dict[str, bytes] = {}

    def lookup(self, exact: Sequence[str], bands: Sequence[Sequence[str]]) -> tuple[list[str | None], list[set[str]]]:
        found = [self.exact.get(e) for e in exact]
        empty: set[str] = set()
        members = [set().union(*(self.buckets.get(t, empty) for t in tokens)) for tokens in bands]
        return found, members

    def signatures(self, tokens: Collection[str]) -> dict[str, bytes]:
        return {t: self.sigs[t] for t in tokens if t in self.sigs}

    def write(self, entries: Sequence[IndexEntry]) -> None:
        for e in entries:
            self.sigs.setdefault(e.sig_token, e.signature)
            self.exact.setdefault(e.exact, e.id)
            for t in e.bands:
                self.buckets.setdefault(t, set()).add(e.id)


# ---------------------------------------------------------------------------------------------
# Index


@dataclass(frozen=True)
class DuplicateCheck:
    exact_of: str | None  # id of an earlier item with the same normalised text, or None
    near_of: str | None  # id of an earlier item whose estimated Jaccard >= threshold, or None
    similarity: float  # best estimated Jaccard among near candidates (1.0 for exact, 0.0 when none)

    @property
    def is_duplicate(self) -> bool:
        return self.exact_of is not None or self.near_of is not None


_NOT_DUPLICATE = DuplicateCheck(None, None, 0.0)


@dataclass(frozen=True)
class _Prepared:
    entry: IndexEntry
    minhash: LeanMinHash


class DuplicateIndex:
    """Exact and near-duplicate index of the candidates that passed; see the module docstring."""

    def __init__(
        self,
        store: BandStore,
        *,
        threshold: float = 0.85,
        num_perm: int = 128,
        shingle_size: int = 3,
        seed: int = 1,
    ):
        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        if num_perm < 2:
            raise ValueError("num_perm must be >= 2")
        if shingle_size < 1:
            raise ValueError("shingle_size must be >= 1")
        self.store = store
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.seed = seed
        self.bands, self.rows = lsh_params(threshold, num_perm)
        self._template = MinHash(num_perm=num_perm, seed=seed, scheme=_SCHEME)
        self._sig_ns = f"n{NORMALISE_VERSION}k{shingle_size}p{num_perm}s{seed}"
        self._band_ns = f"{self._sig_ns}b{self.bands}r{self.rows}"
        self._cache: dict[tuple[str, str], _Prepared] = {}  # the last `check` batch, for `add`

    def _minhash(self, norm: str) -> MinHash:
        t = self._template
        m = MinHash(num_perm=self.num_perm, seed=self.seed, permutations=t.permutations, scheme=_SCHEME)
        m.update_batch(_shingles_of_normalised(norm, self.shingle_size))
        return m

    def near_keys(self, text: str) -> bytes:
        """The text's LSH band keys as raw bytes, 8 per band (the digests the bucket keys name):
        what the gate writes on a candidate so that the dataset builder can resolve near
        duplicates over a whole window, in event-time order, without this index."""
        m = self._minhash(normalise(text))
        sig = m.hashvalues.astype(_SIG_DTYPE, copy=False).tobytes()
        r = self.rows * 4
        return b"".join(hashlib.blake2b(sig[i * r : (i + 1) * r], digest_size=8).digest() for i in range(self.bands))

    def _prepare(self, item_id: str, text: str) -> _Prepared:
        cached = self._cache.get((item_id, text))
        if cached is not None:
            return cached
        norm = normalise(text)
        exact = hashlib.blake2b(norm.encode("utf-8"), digest_size=16, person=b"flywheel-dedup-x").hexdigest()
        m = self._minhash(norm)
        sig = m.hashvalues.astype(_SIG_DTYPE, copy=False).tobytes()
        r, ns = self.rows * 4, self._band_ns
        bands = tuple(
            f"{ns}:{i}:{hashlib.blake2b(sig[i * r : (i + 1) * r], digest_size=8).hexdigest()}"
            for i in range(self.bands)
        )
        entry = IndexEntry(item_id, exact, f"{self._sig_ns}:{item_id}", sig, bands)
        return _Prepared(entry, LeanMinHash(m))

    def _lean(self, sig: bytes) -> LeanMinHash | None:
        if len(sig) != 4 * self.num_perm:
            return None
        return LeanMinHash(seed=self.seed, hashvalues=np.frombuffer(sig, dtype=_SIG_DTYPE), scheme=_SCHEME)

    def check(self, items: Sequence[tuple[str, str]], *, within_batch: bool = True) -> list[DuplicateCheck]:
        """Decisions for (id, text) pairs against the items added before; records nothing.

        With `within_batch`, an earlier item of `items` that is not itself a duplicate also counts
        as added before (see the module docstring). Two round trips at most on a remote store.
        """
        prepared = [self._prepare(i, t) for i, t in items]
        self._cache = {(i, t): p for (i, t), p in zip(items, prepared)}
        if not prepared:
            return []
        exact_hits, bucket_hits = self.store.lookup(
            [p.entry.exact for p in prepared], [p.entry.bands for p in prepared]
        )
        wanted: dict[str, str] = {}  # sig token -> id, for candidates that need verifying
        for p, x, ids in zip(prepared, exact_hits, bucket_hits):
            if x is None or x == p.entry.id:
                for cid in ids:
                    if cid != p.entry.id:
                        wanted[f"{self._sig_ns}:{cid}"] = cid
        stored = self.store.signatures(list(wanted)) if wanted else {}
        sigs: dict[str, LeanMinHash | None] = {wanted[t]: self._lean(s) for t, s in stored.items()}

        batch = MemoryBandStore() if within_batch else None
        batch_minhash: dict[str, LeanMinHash] = {}
        out: list[DuplicateCheck] = []
        for p, x, ids in zip(prepared, exact_hits, bucket_hits):
            own = p.entry.id
            exact_of = x if x is not None and x != own else None
            if exact_of is None and batch is not None:
                y = batch.exact.get(p.entry.exact)
                exact_of = y if y is not None and y != own else None
            if exact_of is not None:
                out.append(DuplicateCheck(exact_of, None, 1.0))
                continue
            candidates = {cid: sigs.get(cid) for cid in ids if cid != own}
            if batch is not None:
                _, (earlier,) = batch.lookup([], [p.entry.bands])
                for cid in earlier:
                    if cid != own and candidates.get(cid) is None:
                        candidates[cid] = batch_minhash[cid]
            best_sim, best_id = 0.0, None
            for cid in sorted(candidates):  # ties go to the smallest id: the same answer every time
                mh = candidates[cid]
                if mh is None:
                    continue  # expired, not written yet, or of another shape
                sim = p.minhash.jaccard(mh)
                if sim > best_sim:
                    best_sim, best_id = sim, cid
            near_of = best_id if best_sim >= self.threshold else None
            out.append(DuplicateCheck(None, near_of, best_sim) if best_sim else _NOT_DUPLICATE)
            if near_of is None and batch is not None:
                batch.write([p.entry])
                batch_minhash[own] = p.minhash
        return out

    def add(self, items: Sequence[tuple[str, str]]) -> None:
        """Record (id, text) pairs as passed. Adding an id that is already there changes nothing."""
        if items:
            self.store.write([self._prepare(i, t).entry for i, t in items])


# ---------------------------------------------------------------------------------------------
# Benchmark: .venv/bin/python -m streams.gate.dedup [--batches N]


def _bench_texts(n: int, words: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    vocab = ["".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(2, 10))) for _ in range(20_000)]
    out = []
    for i in range(n):
        if i % 10 == 9:  # one in ten: a near copy of an earlier text (one word changed)
            ws = out[int(rng.integers(0, i))][1].split()
            ws[int(rng.integers(0, len(ws)))] = "changed"
        else:
            ws = [vocab[j] for j in rng.integers(0, len(vocab), words)]
        out.append((f"c{seed}-{i}", " ".join(ws).capitalize() + "."))
    return out


def _bench(index: DuplicateIndex, batches: int, batch_size: int, words: int) -> float:
    data = _bench_texts(batches * batch_size, words, seed=7)
    index.add(_bench_texts(batch_size, words, seed=3))  # warm up (connections, caches)
    start = time.perf_counter()
    for b in range(batches):
        batch = data[b * batch_size : (b + 1) * batch_size]
        results = index.check(batch)
        index.add([item for item, r in zip(batch, results) if not r.is_duplicate])
    return len(data) / (time.perf_counter() - start)


def _main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="check + add throughput of the duplicate index")
    ap.add_argument("--batches", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--words", type=int, default=100)
    a = ap.parse_args()
    idx = DuplicateIndex(MemoryBandStore())
    print(f"b={idx.bands} r={idx.rows}")
    rate = _bench(idx, a.batches, a.batch_size, a.words)
    print(f"memory: {rate:,.0f} candidates/s ({1000 / rate:.3f} ms each)")


if __name__ == "__main__":
    _main()
