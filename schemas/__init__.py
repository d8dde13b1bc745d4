"""Avro schemas of every flywheel event, the codec that reads and writes them, and typed records."""

from schemas.codec import Codec, DecodeError, EncodeError, headers_dict
from schemas.records import (
    ACTIONS,
    DeadLetter,
    Interaction,
    InvalidEvent,
    ReviewVerdict,
    TrainingCandidate,
    UserAction,
)

__all__ = [
    "ACTIONS",
    "Codec",
    "DeadLetter",
    "DecodeError",
    "EncodeError",
    "Interaction",
    "InvalidEvent",
    "ReviewVerdict",
    "TrainingCandidate",
    "UserAction",
    "headers_dict",
]
