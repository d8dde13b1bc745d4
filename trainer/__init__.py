"""Trainer service: fine-tune, evaluate, gate and register models (see issue 6)."""
