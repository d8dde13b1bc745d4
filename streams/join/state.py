"""Join state for one request id, kept decoded in memory and written to the changelog.

The join reads and changes these objects many times per batch; they are serialised once per
batch per changed key, so the changelog costs one write per key and batch, not one per event.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from schemas.codec import Codec
from schemas.records import Interaction, UserAction


@dataclass(slots=True)
class PendingAction:
    offset: int
    action: UserAction
    data: bytes  # encoded in the current schema version, kept for the changelog and dead letters


@dataclass(slots=True)
class JoinState:
    partition: int
    due: int
    interaction: Interaction | None = None
    interaction_data: bytes | None = None
    actions: list[PendingAction] = field(default_factory=list)
    seen: set[bytes] = field(default_factory=set)
    settled: bool = False
    deleted: bool = False

    def settle(self, due: int) -> None:
        """Keep only what recognises replays: the digests."""
        self.interaction = self.interaction_data = None
        self.actions = []
        self.settled = True
        self.due = due


# Changelog format, version 1 (little-endian):
#   u8 version | u8 flags (1 = settled, 2 = has interaction) | u32 partition | i64 due
#   | u16 n_seen | n_seen x 8-byte digests
#   | [u32 len | interaction bytes]                        if flags & 2
#   | u16 n_actions | n_actions x (i64 offset | u32 len | action bytes)
# Internal state, not an event: a fixed binary layout is ten times cheaper than Avro here, and
# the events inside stay in their own Avro single-object encoding.
_HEAD = struct.Struct("<BBIqH")
_LEN = struct.Struct("<I")
_ACTION = struct.Struct("<qI")
_COUNT = struct.Struct("<H")
VERSION = 1
SETTLED, HAS_INTERACTION = 1, 2


class StateFormatError(ValueError):
    pass


def encode_state(s: JoinState) -> bytes:
    flags = (SETTLED if s.settled else 0) | (HAS_INTERACTION if s.interaction_data is not None else 0)
    parts = [_HEAD.pack(VERSION, flags, s.partition, s.due, len(s.seen)), *sorted(s.seen)]
    if s.interaction_data is not None:
        parts += [_LEN.pack(len(s.interaction_data)), s.interaction_data]
    parts.append(_COUNT.pack(len(s.actions)))
    for a in s.actions:
        parts += [_ACTION.pack(a.offset, len(a.data)), a.data]
    return b"".join(parts)


def decode_state(codec: Codec, raw: bytes) -> JoinState:
    try:
        version, flags, partition, due, n_seen = _HEAD.unpack_from(raw, 0)
        if version != VERSION:
            raise StateFormatError(f"join state version {version} is not {VERSION}")
        pos = _HEAD.size
        seen = {raw[pos + 8 * i : pos + 8 * i + 8] for i in range(n_seen)}
        pos += 8 * n_seen
        interaction = interaction_data = None
        if flags & HAS_INTERACTION:
            (n,) = _LEN.unpack_from(raw, pos)
            interaction_data = raw[pos + 4 : pos + 4 + n]
            pos += 4 + n
            interaction = Interaction.from_dict(codec.decode_avro("interaction", interaction_data))
        (n_actions,) = _COUNT.unpack_from(raw, pos)
        pos += 2
        actions = []
        for _ in range(n_actions):
            offset, n = _ACTION.unpack_from(raw, pos)
            data = raw[pos + 12 : pos + 12 + n]
            pos += 12 + n
            actions.append(PendingAction(offset, UserAction.from_dict(codec.decode_avro("action", data)), data))
    except struct.error as exc:
        raise StateFormatError(f"truncated join state: {exc}") from None
    return JoinState(partition, due, interaction, interaction_data, actions, seen, bool(flags & SETTLED))
