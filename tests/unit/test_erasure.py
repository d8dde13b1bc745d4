"""The pure parts of erasure: keyed pseudonyms, dataset versions (latest, newest, superseded, delete),
record-users.bin, the erased list's horizon, model lineage and taint, the status's text."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import uuid

import pytest

from flywheel import pseudonyms
from flywheel.settings import DAY_MS, Settings
from streams.datasets import erasure
from streams.datasets.builder import erased_forms, record_users_bin, records_of
from flywheel.datastore import DatasetStore, manifest_json, user_hash, user_key64, users_txt
from streams.gate.filters import pseudonymous_id
from flywheel.policy import GatePolicy
from trainer.cycle import replay_ids
from trainer.registry import Registry

KEY = b"unit key"
WEEK = 7 * DAY_MS


class FakeRedis:
    """The few calls the registry and the key's resolution make."""

    def __init__(self):
        self.kv, self.h = {}, {}

    def set(self, k, v, nx=False, **_):
        if nx and k in self.kv:
            return None
        self.kv[k] = v.encode() if isinstance(v, str) else v
        return True

    def get(self, k):
        return self.kv.get(k)

    def incr(self, k):
        self.kv[k] = str(int(self.kv.get(k, b"0")) + 1).encode()
        return int(self.kv[k])

    def hset(self, k, f, v):
        self.h.setdefault(k, {})[f] = v.encode() if isinstance(v, str) else v

    def hget(self, k, f):
        return self.h.get(k, {}).get(f)

    def hkeys(self, k):
        return list(self.h.get(k, {}))


def test_pseudonyms_are_keyed_and_never_hold_the_id():
    assert user_hash("alice", KEY) == hmac.new(KEY, b"alice", "sha256").hexdigest()
    assert user_hash("alice", KEY) != user_hash("alice", b"other key") != hashlib.sha256(b"alice").hexdigest()
    forms = erased_forms("alice@example.com", KEY)
    assert len(forms) == 3 and all(len(f) == 64 and "alice" not in f for f in forms)
    assert user_hash(pseudonymous_id("alice@example.com", KEY), KEY) in forms  # the gate's stand-in, keyed too
    assert pseudonymous_id("alice@example.com", KEY) != pseudonymous_id("alice@example.com", b"other key")
    assert pseudonymous_id("alice@example.com", KEY).startswith("pii-")


def test_after_a_rotation_an_erasure_finds_the_user_under_the_older_keys_too():
    s = Settings(pseudonym_key="new key, old key")
    assert pseudonyms.resolve_keys(s) == [b"new key", b"old key"] and pseudonyms.resolve_key(s) == b"new key"
    forms = erased_forms("alice", b"new key", [b"old key"])
    assert {user_hash("alice", b"new key"), user_hash("alice", b"old key")} <= forms  # users.txt under either key
    assert user_hash(pseudonymous_id("alice", b"old key"), b"new key") in forms  # a stand-in made before, hashed now
    assert erased_forms("alice", b"new key") < forms


def test_the_key_is_the_configured_one_else_generated_once_in_redis(caplog):
    assert pseudonyms.resolve_key(Settings(pseudonym_key="configured")) == b"configured"
    r = FakeRedis()
    s = Settings(app_id=f"unit-{uuid.uuid4().hex[:6]}")
    first = pseudonyms.resolve_key(s, r)
    assert len(first) == 64 and r.get(pseudonyms.redis_key(s.app_id)) == first
    assert "FLYWHEEL_PSEUDONYM_KEY is empty" in caplog.text
    other = Settings(app_id=s.app_id)  # another process of the same flywheel: the same key
    pseudonyms._cache.clear()
    assert pseudonyms.resolve_key(other, r) == first
    assert pseudonyms.fingerprint(first) != pseudonyms.fingerprint(
        b"x"
    ) and first.decode() not in pseudonyms.fingerprint(first)


def publish(store: DatasetStore, ds: str, start: int, **fields) -> None:
    staging = store.staging(ds)
    with store.fs.open(f"{staging}/users.txt", "wb") as f:
        f.write(b"")
    with store.fs.open(f"{staging}/manifest.json", "wb") as f:
        f.write(
            manifest_json(
                {"dataset_id": ds, "window": {"start_ms": start, "end_ms": start + WEEK}, "shards": [], **fields}
            )
        )
    store.publish(ds)


@pytest.mark.parametrize("where", ["local", "memory"])
def test_readers_take_the_newest_version_of_each_window(tmp_path, where):
    store = DatasetStore(str(tmp_path / "store") if where == "local" else f"memory://s-{uuid.uuid4().hex}")
    publish(store, "ds-a", 0)
    publish(store, "ds-b", WEEK)
    publish(store, "ds-c", 0, supersedes="ds-a")  # a re-seal, published; the old one not yet recorded or deleted
    assert [m["dataset_id"] for m in store.list()] == ["ds-a", "ds-c", "ds-b"]
    assert [m["dataset_id"] for m in store.latest()] == ["ds-c", "ds-b"]  # a reader in between takes the new one
    assert store.newest_version("ds-a") == "ds-c" and store.newest_version("ds-b") == "ds-b"
    store.mark_superseded("ds-a", "ds-c", reason="erasure", mode="log", users=["p1"], at=5)
    store.mark_superseded(
        "ds-a", "ds-c", reason="erasure", mode="log", users=["p1"], at=9
    )  # idempotent: keeps its time
    assert store.superseded() == {"ds-a": {"by": "ds-c", "at": 5, "reason": "erasure", "mode": "log", "users": ["p1"]}}
    assert store.delete("ds-a") and not store.exists("ds-a") and not store.fs.exists(store.path("ds-a"))
    assert not store.delete("ds-a")
    assert [m["dataset_id"] for m in store.latest()] == ["ds-c", "ds-b"]
    publish(store, "ds-d", 0, supersedes="ds-c")  # re-sealed again (a second user)
    assert store.newest_version("ds-a") == "ds-d" and store.newest_version("ds-nope") is None
    assert [m["dataset_id"] for m in store.latest()] == ["ds-d", "ds-b"]
    assert replay_ids(store.latest(), {"window": {"start_ms": 2 * WEEK}}, 2) == ["ds-b", "ds-d"]


def test_record_users_finds_a_users_records():
    users = {u: user_hash(u, KEY) for u in ("alice", "bob", "carol")}
    import array

    a, b = array.array("Q"), array.array("Q")
    for i, u in enumerate(["alice", "bob", "alice", "carol"]):
        (a if i % 2 else b).extend([user_key64(users[u]), 1000 + i])
    body = record_users_bin([a.tobytes(), b.tobytes()])
    assert len(body) == 4 * 16
    assert records_of(body, [users["alice"]]) == {1000, 1002}
    assert records_of(body, [users["bob"], users["carol"]]) == {1001, 1003}
    assert records_of(body, [user_hash("dave", KEY)]) == set() and records_of(b"", [users["bob"]]) == set()


def test_the_erased_list_keeps_an_entry_until_retention_window_and_lag_have_passed():
    s, p = Settings(), GatePolicy()
    assert erasure.horizon_ms(s, p) == s.retention_ms + (p.datasets.window_days + p.datasets.lag_days) * DAY_MS
    assert erasure.expiry_ms(s, p, 1000) == 1000 + erasure.horizon_ms(s, p)
    assert erasure.horizon_ms(s.replace(retention_ms=-1), p) == math.inf


def test_lineage_is_transitive_and_a_model_is_tainted_by_a_replaced_version(tmp_path):
    reg = Registry(str(tmp_path / "models"), FakeRedis(), "unit")
    for v, meta in (
        ("v0001", {"event_type": "bootstrap"}),
        ("v0002", {"dataset_id": "ds-0", "replayed_datasets": [], "base_model": "v0001"}),  # before lineage was kept
        (
            "v0003",
            {"dataset_id": "ds-1", "replayed_datasets": ["ds-0"], "base_model": "v0002", "lineage": ["ds-0", "ds-1"]},
        ),
        ("v0004", {"dataset_id": "ds-2", "base_model": "v0001", "lineage": ["ds-1b", "ds-2"]}),
    ):
        (tmp_path / "models" / v).mkdir(parents=True)
        reg.redis.hset(reg.meta_key, v, json.dumps({**meta, "version": v}))
    assert reg.lineage("v0001") == [] and reg.lineage("v0002") == ["ds-0"] and reg.lineage("v0003") == ["ds-0", "ds-1"]
    superseded = {"ds-0": {"by": "ds-0b", "reason": "erasure"}, "ds-9": {"by": "ds-9b", "reason": "rebuild"}}
    assert reg.tainted("v0003", superseded) == ["ds-0"] and reg.tainted("v0004", superseded) == []
    assert reg.clean_base("v0003", superseded) == "v0001" and reg.clean_base("v0004", superseded) == "v0004"
    assert reg.flag_erasure("v0003", ["ds-0"], retire=False) and not reg.flag_erasure("v0003", ["ds-0"], retire=False)
    assert reg.flag_erasure("v0003", ["ds-0"], retire=True) and reg.show("v0003")["retire"]
    shown = reg.with_taint(reg.show("v0003"), superseded)
    assert shown["tainted_by_erasure"] == ["ds-0"] and shown["erasure_replaced_by"] == {"ds-0": "ds-0b"}
    assert erasure.tainted(["ds-0", "ds-9"], superseded) == ["ds-0"]


def test_status_text_names_pseudonyms_and_ids_never_the_user():
    report = {
        "user": "ab12cd34ef567890",
        "pseudonym_key": "FLYWHEEL_PSEUDONYM_KEY",
        "erasure_requested": True,
        "requested_at": "2026-12-01T00:00:00Z",
        "erased_list_entry_expires": "2027-02-02T00:00:00Z",
        "topics": [
            {
                "topic": "flywheel.interactions",
                "role": "interactions",
                "holds": "requests",
                "may_hold_until": "2027-01-12T00:00:00Z",
            }
        ],
        "review_queue": {"items_left": 0, "removed": 2},
        "dedup_index": "none",
        "seal_spool": "open windows",
        "datasets": [{"dataset_id": "ds-1", "state": "deleted", "superseded_by": "ds-2", "mode": "log"}],
        "pending_reseals": [],
        "models": [
            {
                "version": "v0002",
                "trained_on": ["ds-1"],
                "production": True,
                "tainted_by_erasure": ["ds-1"],
                "retire": False,
            }
        ],
        "rest_expires_by": "2027-01-12T00:00:00Z",
    }
    text = "\n".join(erasure.lines(report))
    assert (
        "ds-1: deleted (superseded_by ds-2, mode log)" in text
        and "v0002: trained on ds-1 (production) - tainted" in text
    )
    assert "review queue: 0 items left, 2 removed" in text and "the rest expires by retention: 2027-01-12" in text


def test_the_models_list_rows_say_which_serves_and_which_an_erasure_tainted(tmp_path):
    reg = Registry(str(tmp_path / "models"), FakeRedis(), "unit")
    for v, meta in (
        ("v0001", {"event_type": "bootstrap", "status": "production", "metrics": {"overall": 0.5}}),
        (
            "v0002",
            {
                "status": "candidate",
                "dataset_id": "ds-0",
                "base_model": "v0001",
                "lineage": ["ds-0"],
                "metrics": {"overall": 0.6},
                "deltas": {"overall": 0.1},
                "gate_passed": True,
                "created_at": 7,
            },
        ),
    ):
        (tmp_path / "models" / v).mkdir(parents=True)
        reg.redis.hset(reg.meta_key, v, json.dumps({**meta, "version": v}))
    reg.set_production("v0001")
    rows = reg.summaries({"ds-0": {"by": "ds-0b", "reason": "erasure"}})
    assert rows == [
        {
            "version": "v0001",
            "status": "production",
            "production": True,
            "dataset_id": None,
            "base_model": None,
            "overall": 0.5,
            "delta": None,
            "gate_passed": None,
            "created_at": None,
            "tainted_by_erasure": False,
        },
        {
            "version": "v0002",
            "status": "candidate",
            "production": False,
            "dataset_id": "ds-0",
            "base_model": "v0001",
            "overall": 0.6,
            "delta": 0.1,
            "gate_passed": True,
            "created_at": 7,
            "tainted_by_erasure": True,
        },
    ]
    assert [r["tainted_by_erasure"] for r in reg.summaries({})] == [False, False]


def test_datasets_holding_finds_the_user_under_every_configured_key(tmp_path):
    store = DatasetStore(str(tmp_path / "store"))
    old, new = b"old key", b"new key"

    def seal(ds: str, start: int, users: list[str], key: bytes) -> None:
        publish(store, ds, start)
        with store.fs.open(f"{store.path(ds)}/users.txt", "wb") as f:
            f.write(users_txt(user_hash(u, key) for u in users))

    seal("ds-a", 0, ["alice", "bob"], old)  # sealed before the key's rotation
    seal("ds-b", WEEK, ["bob"], new)
    seal("ds-c", 2 * WEEK, ["alice"], new)
    settings = Settings(data_dir=str(tmp_path), pseudonym_key="new key,old key")
    rows = erasure.datasets_holding(settings, store, "alice")
    assert rows == [
        {"dataset_id": ds, "uri": store.uri(ds), "window_start": start}
        for ds, start in (("ds-a", 0), ("ds-c", 2 * WEEK))
    ]
    assert [r["dataset_id"] for r in erasure.datasets_holding(settings, store, "bob")] == ["ds-a", "ds-b"]
    only_new = Settings(data_dir=str(tmp_path), pseudonym_key="new key")
    assert [r["dataset_id"] for r in erasure.datasets_holding(only_new, store, "alice")] == ["ds-c"]
    assert erasure.datasets_holding(settings, store, "carol") == []


def test_an_invalid_erasure_request_is_refused_before_anything_is_sent(tmp_path):
    from schemas.records import InvalidEvent

    # no broker at this address: the request is refused by its schema before a producer is made
    settings = Settings(data_dir=str(tmp_path), kafka_bootstrap="127.0.0.1:1")
    with pytest.raises(InvalidEvent):
        erasure.send_request(settings, "")


def test_the_datasets_list_rows_are_each_windows_newest_version(tmp_path):
    from streams.datasets.catalog import rows

    store = DatasetStore(str(tmp_path / "store"))
    counts = {"records": 3, "split": {"train": 2, "eval": 1}}
    publish(store, "ds-a", 0, counts=counts, policy_version="p@1")
    publish(store, "ds-b", WEEK, counts=counts, policy_version="p@1")
    publish(store, "ds-c", 0, counts=counts, policy_version="p@2", supersedes="ds-a")  # an erasure's re-seal
    assert rows(store) == [
        {
            "dataset_id": "ds-c",
            "window_start": 0,
            "window_end": WEEK,
            "records": 3,
            "splits": {"train": 2, "eval": 1},
            "policy_version": "p@2",
            "uri": store.uri("ds-c"),
            "supersedes": "ds-a",
        },
        {
            "dataset_id": "ds-b",
            "window_start": WEEK,
            "window_end": 2 * WEEK,
            "records": 3,
            "splits": {"train": 2, "eval": 1},
            "policy_version": "p@1",
            "uri": store.uri("ds-b"),
        },
    ]
