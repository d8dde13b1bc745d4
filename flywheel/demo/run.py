"""`flywheel demo`: the whole loop on one machine, weeks of event time in minutes.

The embedded broker and Redis, then every service of the loop as its own process (the worker with
join, gate, review sampler, rollout and guards; the dataset builder; the trainer; the review page
and its verdict relay), then a cold start (model v1 from synthetic data), then day after day of
simulated production traffic: the app answers with the model the A/B assignment gives each user,
users act on whether the answer is right, a few reviewers give verdicts. The demo paces itself on
the pipeline (it waits for each day's requests to be joined, and for the trainer's verdict on each
sealed dataset) but decides nothing: the quality figures are the trainer's own golden-set
evaluation of models trained on datasets the real pipeline built.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

from flywheel.demo.loop import EPOCH_MS, MAX_LOADED, WEEK_MS, App, DemoLoop, Topics, end_offsets, review, wait
from flywheel.demo.printer import DemoPrinter
from flywheel.demo.traffic import DemoSpec
from flywheel.settings import Settings

# the names this module held before the loop became a class (flywheel/demo/loop.py), and its own
__all__ = [
    "EPOCH_MS",
    "MAX_LOADED",
    "WEEK_MS",
    "App",
    "DemoLoop",
    "Topics",
    "demo_policy",
    "end_offsets",
    "review",
    "run",
    "wait",
]


def demo_policy(spec: DemoSpec):
    """The policy the demo runs under; every change from the defaults says why."""
    from flywheel.policy import GatePolicy

    return GatePolicy().with_version(
        f"demo-{spec.seed}",
        length={"min_words": 1},  # answers are a few words (a capital, a SQL line), not chat paragraphs
        quality={"rewrite_weight": 0.0},  # a correction replaces a short wrong answer whole: no sign of a bad one
        grounding={"enabled": False},  # the app retrieves no context to check answers against
        duplicates={
            "enabled": False
        },  # a small question space over weeks in minutes: each week's dataset stands alone
        keep_rate={"enabled": False},  # every good answer counts; the band is for large, varied traffic
        rollout={
            "ramp": (0.25, 0.5),
            "stage_min_requests": 100,
            "min_requests": 100,
            "max_requests": 4000,
            "decide_interval_s": 1.0,
            "watch_requests": 300,
            "guard_min_requests": 100,
        },
        # improving models move the action mix and the pass rate on purpose: those monitors alert, not act
        guards={"actions": {"action_mix_shift": (), "pass_rate_shift": ()}},
        # one golden item of 16 per task type is noise, not a regression; a week of demo traffic is a few
        # hundred answers, most of them what production already knew: each cycle learns from every earlier week too
        trainer={
            "max_task_regression": 0.07,
            "replay_datasets": 8,
            # a week of demo traffic is a few hundred answers: small batches give the small model steps
            # enough to learn from them (measured on a week of the short demo: batch 32, 39 steps, +0.0;
            # batch 8, 153 steps, +10.3 points)
            "batch_size": 8,
        },
    )


def run(
    settings: Settings,
    spec: DemoSpec,
    out: TextIO = sys.stdout,
    as_json: bool = False,
    report_path: str | None = None,
    quiet_progress: bool = False,
):
    """Run the demo; returns the velocity report (the same figures it printed). The loop's steps are
    flywheel/demo/loop.py's `DemoLoop`, what it prints flywheel/demo/printer.py's `DemoPrinter`."""
    spec.check()
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    policy = demo_policy(spec)
    policy_path = data / "demo-policy.toml"
    policy_path.write_text(policy.to_toml())
    settings = settings.replace(gate_policy=str(policy_path))
    printer = DemoPrinter(out, as_json=as_json, quiet_progress=quiet_progress)
    with ExitStack() as stack:
        loop = DemoLoop.start(settings, spec, policy, printer, stack)
        for day in range(spec.weeks * 7):
            loop.day(day)
        return loop.finish(report_path)
