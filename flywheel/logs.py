"""Structured logs: one JSON object per line, so that log pipelines can index them.

Never pass prompt, response, correction or user text to a log call: personal data stays out of logs.
"""

from __future__ import annotations

import json
import logging
import time

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def logging_config(level: str = "INFO") -> dict:
    """A dictConfig that sends every logger (Faust's, aiokafka's, ours) through the JSON formatter."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "aiokafka": {"level": "WARNING"},
            "faust": {"level": "WARNING" if level.upper() == "INFO" else level.upper()},
        },
    }


def configure(level: str = "INFO") -> None:
    import logging.config

    logging.config.dictConfig(logging_config(level))
