"""The duplicate filter on the in-memory store: normalisation, exact and near duplicates, replays."""

from __future__ import annotations

import copy
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from streams.gate.dedup import (
    DuplicateCheck,
    DuplicateIndex,
    MemoryBandStore,
    lsh_params,
    normalise,
    shingles,
)

ROOT = Path(__file__).resolve().parents[2]


def words(n: int, seed: int) -> list[str]:
    """n made-up words, all distinct within a text and unlikely to repeat across seeds."""
    rng = random.Random(seed)
    return [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) + str(i) for i in range(n)
    ]


def text(n: int, seed: int) -> str:
    return " ".join(words(n, seed))


def change(t: str, *positions: int, tag: str = "zz") -> str:
    ws = t.split()
    for p in positions:
        ws[p] = f"{tag}{p}"
    return " ".join(ws)


def true_jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def index(threshold: float = 0.85, store=None) -> DuplicateIndex:
    return DuplicateIndex(MemoryBandStore() if store is None else store, threshold=threshold)


# --- normalise and shingles ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("Hello   World", "hello world"),
        ("  Hello,\tWORLD!!\n", "hello world"),
        ("\uff28\uff45\uff4c\uff4c\uff4f \ufb01ne", "hello fine"),  # full-width letters and the fi ligature (NFKC)
        ("a\u00a0b\u2003c", "a b c"),  # no-break and em spaces are whitespace
        ("Stra\u00dfe", "strasse"),  # case folding
        ("don't (e.g.) 3.14 \u00ab\u00a1hola!\u00bb", "don't e.g 3.14 hola"),  # only the edges of a token
        ("wait ... \u2014 what ?", "wait what"),  # tokens of punctuation only disappear
        ("$5 C++ <b> \U0001f600", "$5 c++ <b> \U0001f600"),  # symbols are not punctuation
        ("", ""),
        (" \n\t ", ""),
    ],
)
def test_normalise(raw, want):
    assert normalise(raw) == want
    assert normalise(want) == want  # idempotent


def test_shingles():
    assert shingles("a b c d") == {b"a b c", b"b c d"}
    assert shingles("A, b. C! d?") == {b"a b c", b"b c d"}  # of the normalised text
    assert shingles("a b c d", k=2) == {b"a b", b"b c", b"c d"}
    assert shingles("Hello, world") == {b"hello world"}  # shorter than k: the whole text
    assert shingles("") == {b""}
    assert shingles("caf\u00e9 ol\u00e9 x") == {"caf\u00e9 ol\u00e9 x".encode()}
    assert len(shingles(text(60, 1))) == 58
    with pytest.raises(ValueError):
        shingles("a", k=0)


# --- exact and near duplicates ---------------------------------------------------------------


def test_exact_duplicate_after_whitespace_case_and_punctuation_changes():
    idx = index()
    original = "The quick brown fox jumps over the lazy dog. It was not amused, was it?"
    variant = "  the QUICK brown fox\njumps over the lazy dog ...  it was NOT amused was it  "
    idx.add([("a", original)])
    [r] = idx.check([("b", variant)])
    assert r == DuplicateCheck(exact_of="a", near_of=None, similarity=1.0)
    assert r.is_duplicate
    [r] = idx.check([("c", original + " Really.")])  # one more word is not exact
    assert r.exact_of is None


def test_near_duplicate_one_word_changed_in_60_words():
    idx = index()
    base = text(60, seed=11)
    near = change(base, 30)
    assert 0.88 < true_jaccard(base, near) < 0.92  # 3 of 58 shingles changed
    idx.add([("orig", base)])
    [r] = idx.check([("copy", near)])
    assert r.exact_of is None
    assert r.near_of == "orig"
    assert r.similarity >= 0.85


def test_near_duplicate_recall_over_many_pairs():
    """One word changed anywhere in a 60-word text (true Jaccard ~0.90): found at 0.85 nearly always.

    With MinHashLSH's default weights (b=8, r=16) about one in five of these pairs is never even
    a candidate; this guards the choice of weights for the banding."""
    idx = index()
    rng = random.Random(5)
    pairs = [(text(60, 1000 + i), rng.randrange(60)) for i in range(100)]
    idx.add([(f"o{i}", t) for i, (t, _) in enumerate(pairs)])
    results = idx.check([(f"n{i}", change(t, p)) for i, (t, p) in enumerate(pairs)])
    found = sum(r.near_of == f"o{i}" for i, r in enumerate(results))
    assert found >= 90, found
    assert all(r.near_of in (None, f"o{i}") for i, r in enumerate(results))


def test_clearly_different_text_is_not_a_duplicate():
    idx = index()
    idx.add([("a", text(60, 21))])
    [r] = idx.check([("b", text(60, 22))])
    assert r == DuplicateCheck(None, None, 0.0)
    assert not r.is_duplicate


def test_half_similar_pair_depends_on_threshold():
    base = text(60, 31)
    other = " ".join(base.split()[:40] + words(20, 32))  # 38 shingles shared of 78
    assert 0.45 < true_jaccard(base, other) < 0.55
    strict, loose = index(0.85), index(0.4)
    for idx in (strict, loose):
        idx.add([("a", base)])
    [r] = strict.check([("b", other)])
    assert r.near_of is None and r.exact_of is None
    [r] = loose.check([("b", other)])
    assert r.near_of == "a"
    assert abs(r.similarity - true_jaccard(base, other)) < 0.12


def test_lsh_candidates_are_verified_against_the_threshold():
    """A pair that shares a bucket but whose estimated Jaccard is below the threshold is not
    reported: the threshold is the signatures', not the banding's."""
    idx = index()
    base = text(100, 41)
    rng = random.Random(41)
    for attempt in range(200):
        other = change(base, *rng.sample(range(100), 5), tag=f"q{attempt}x")  # true Jaccard ~0.78-0.82
        a, b = idx._prepare("a", base), idx._prepare("b", other)
        if set(a.entry.bands) & set(b.entry.bands) and a.minhash.jaccard(b.minhash) < 0.85:
            break
    else:
        pytest.fail("no bucket-sharing pair below the threshold found")
    idx.add([("a", base)])
    [r] = idx.check([("b", other)])
    assert r.near_of is None
    assert r.similarity == pytest.approx(a.minhash.jaccard(b.minhash))
    assert 0.6 < r.similarity < 0.85


def test_lsh_params_come_from_datasketch_weighted_for_recall():
    from datasketch.lsh import _optimal_param

    assert lsh_params(0.85, 128) == _optimal_param(0.85, 128, 0.1, 0.9) == (11, 11)
    idx = index()
    assert (idx.bands, idx.rows) == (11, 11)
    assert len(idx._prepare("a", "x y z").entry.bands) == 11


# --- replays and batches ---------------------------------------------------------------------


def test_recheck_of_an_added_id_is_not_a_duplicate_of_itself():
    store = MemoryBandStore()
    idx = index(store=store)
    t = text(60, 51)
    idx.add([("a", t)])
    assert idx.check([("a", t)]) == [DuplicateCheck(None, None, 0.0)]
    assert idx.check([("b", t)])[0].exact_of == "a"
    assert idx.check([("b", change(t, 10))])[0].near_of == "a"
    before = copy.deepcopy(store.__dict__)
    idx.add([("a", t)])
    idx.add([("a", t), ("a", t)])
    assert store.__dict__ == before  # adding the same id again changes nothing


def test_replay_of_a_batch_gives_the_same_decisions():
    idx = index()
    old = text(60, 61)
    idx.add([("old", old)])
    batch = [("n1", change(old, 5)), ("n2", text(60, 62)), ("n3", text(60, 62)), ("n4", old.upper())]
    first = idx.check(batch)
    assert [r.is_duplicate for r in first] == [True, False, True, True]
    idx.add([item for item, r in zip(batch, first) if not r.is_duplicate])
    assert idx.check(batch) == first  # the crash came after `add`: same answers
    idx2 = index(store=idx.store)  # or a restarted process
    assert idx2.check(batch) == first


def test_within_batch_duplicates():
    idx = index()
    t, u = text(60, 71), text(60, 72)
    batch = [("a", t), ("b", t.upper() + "!"), ("c", change(t, 7)), ("d", u), ("e", t)]
    rs = idx.check(batch)
    assert rs[0] == DuplicateCheck(None, None, 0.0)
    assert rs[1] == DuplicateCheck("a", None, 1.0)
    assert rs[2].near_of == "a" and rs[2].exact_of is None
    assert not rs[3].is_duplicate
    assert rs[4].exact_of == "a"  # the first, not the duplicate "b" in between
    assert not any(r.is_duplicate for r in idx.check(batch, within_batch=False))  # the store is empty
    assert idx.check([]) == []
    # the same id twice in a batch (a replayed message) is not a duplicate of itself
    assert idx.check([("a", t), ("a", t)]) == [DuplicateCheck(None, None, 0.0)] * 2


def test_duplicates_in_a_batch_do_not_count_as_before():
    """Only an earlier item that is not itself a duplicate counts as "before" in a batch: b is a
    near copy of a, but a is rejected (near X) and b is not near X, so b passes, exactly as if the
    items had been checked and added one at a time."""
    idx = index(0.7)
    x = text(100, 81)
    a = change(x, 10, 30, 50, 70)
    b = change(a, 20, 40, 60, 80, tag="yy")
    sig = {k: idx._prepare(k, v).minhash for k, v in (("x", x), ("a", a), ("b", b))}
    assert sig["a"].jaccard(sig["x"]) >= 0.7 and sig["b"].jaccard(sig["a"]) >= 0.7
    assert sig["b"].jaccard(sig["x"]) < 0.7
    idx.add([("x", x)])
    ra, rb = idx.check([("a", a), ("b", b)])
    assert ra.near_of == "x"
    assert not rb.is_duplicate


def test_batch_equals_one_at_a_time():
    rng = random.Random(91)
    pool = [text(40, 900 + i) for i in range(15)]
    items = []
    for i in range(120):
        t = rng.choice(pool)
        kind = rng.random()
        if kind < 0.3:
            t = change(t, rng.randrange(40), tag=f"v{i}x")
        elif kind < 0.5:
            t = t.upper()
        items.append((f"i{i}", t))
    batched, single = index(), index()
    passed = 0
    for start in range(0, len(items), 40):
        batch = items[start : start + 40]
        rs = batched.check(batch)
        batched.add([it for it, r in zip(batch, rs) if not r.is_duplicate])
        one = []
        for it in batch:
            [r] = single.check([it])
            one.append(r)
            if not r.is_duplicate:
                single.add([it])
        assert rs == one
        passed += sum(not r.is_duplicate for r in rs)
    assert batched.store.__dict__ == single.store.__dict__
    assert 15 <= passed < 60, passed  # the pool's 15 texts and some of the changed copies


# --- stability -------------------------------------------------------------------------------


SIGNATURE_PROBE = "The quick brown fox jumps over the lazy dog, again and again."


def test_signatures_are_the_same_across_instances_and_processes():
    a, b = index(), index(threshold=0.5)
    ea, eb = a._prepare("x", SIGNATURE_PROBE).entry, b._prepare("y", SIGNATURE_PROBE).entry
    assert ea.signature == eb.signature and ea.exact == eb.exact
    assert ea.bands == index()._prepare("z", SIGNATURE_PROBE).entry.bands
    assert set(ea.bands).isdisjoint(eb.bands)  # other b/r, other bucket namespace
    code = (
        "from streams.gate.dedup import DuplicateIndex, MemoryBandStore; import sys; "
        "e = DuplicateIndex(MemoryBandStore())._prepare('x', sys.argv[1]).entry; "
        "print(e.signature.hex(), e.exact, ' '.join(e.bands))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code, SIGNATURE_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [ea.signature.hex(), ea.exact, *ea.bands]


def test_signature_is_pinned():
    """A shared index outlives deployments: if this changes (datasketch's hashing or permutations,
    `normalise`), signatures in Redis no longer match new ones. Then bump NORMALISE_VERSION (a new
    key namespace) rather than this digest alone."""
    e = index()._prepare("x", SIGNATURE_PROBE).entry
    assert len(e.signature) == 128 * 4
    assert (
        e.exact
        == hashlib.blake2b(normalise(SIGNATURE_PROBE).encode(), digest_size=16, person=b"flywheel-dedup-x").hexdigest()
    )
    assert hashlib.sha256(e.signature).hexdigest()[:16] == "9f55820e55e6156f"


def test_arguments_are_checked():
    for kw in ({"threshold": 0.0}, {"threshold": 1.5}, {"num_perm": 1}, {"shingle_size": 0}):
        with pytest.raises(ValueError):
            DuplicateIndex(MemoryBandStore(), **kw)
