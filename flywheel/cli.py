"""The `flywheel` command. Every subcommand has --help; a wrong argument gives one line and exit 2."""

from __future__ import annotations

import argparse
import json
import sys

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


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="flywheel", description="A streaming data flywheel for LLM applications.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = sub.add_parser("up", help="start the embedded broker (and Redis if none answers), create topics, run the worker")
    up.add_argument("--port", type=int, default=None, help="embedded broker port (default: a free one)")
    up.add_argument("--data-dir", default=None, help="where the embedded broker keeps its data")
    up.add_argument("--no-worker", action="store_true", help="start the stack and wait, without a worker")

    sub.add_parser("worker", help="run a stream worker against FLYWHEEL_KAFKA_BOOTSTRAP")

    topics = sub.add_parser("topics", help="topic administration")
    tsub = topics.add_subparsers(dest="topics_command", required=True, parser_class=_Parser)
    tsub.add_parser("create", help="create every flywheel topic (idempotent)")

    sim = sub.add_parser("simulate", help="produce realistic traffic through the SDK")
    sim.add_argument("--requests", type=_positive_int, default=1000, help="requests to simulate")
    sim.add_argument("--rate", type=_positive_float, default=None, help="events per second of wall clock (default: as fast as possible)")
    sim.add_argument("--event-rate", type=_positive_float, default=5.0, help="requests per second of event time")
    sim.add_argument("--seed", type=int, default=0, help="random seed: same seed, same traffic")
    sim.add_argument("--mix", type=_mix, default=None, help="primary behaviour shares, e.g. accepted=0.4,copied=0.1,corrected=0.1,regenerated=0.15,abandoned=0.05,none=0.2")
    sim.add_argument("--pii-rate", type=float, default=None, help="share of requests carrying personal data (default 0.03)")
    sim.add_argument("--toxic-rate", type=float, default=None, help="share of requests with an abusive response (default 0.01)")
    sim.add_argument("--no-tail-ticks", action="store_true", help="do not advance event time past the last settle window at the end")

    policy = sub.add_parser("policy", help="the quality gate's policy")
    psub = policy.add_subparsers(dest="policy_command", required=True, parser_class=_Parser)
    show = psub.add_parser("show", help="print the effective policy as JSON (FLYWHEEL_GATE_POLICY, or the defaults)")
    show.add_argument("--file", default=None, help="a policy file instead of FLYWHEEL_GATE_POLICY")
    check = psub.add_parser("check", help="validate a policy file: exit 0 and its stamp, or one line saying what is wrong")
    check.add_argument("file", help="the policy TOML file")

    gate = sub.add_parser("gate", help="the quality gate")
    gsub = gate.add_subparsers(dest="gate_command", required=True, parser_class=_Parser)
    ex = gsub.add_parser("explain", help="run candidates through the policy and print each decision with its scores and reasons")
    src = ex.add_mutually_exclusive_group()
    src.add_argument("--file", default=None, help="a JSONL file of candidates ('-' for stdin); default: the candidates topic")
    src.add_argument("--topic", default=None, help="a topic of candidates (default: candidates)")
    ex.add_argument("--policy", default=None, help="a policy file (default: FLYWHEEL_GATE_POLICY, or the defaults)")
    ex.add_argument("--max", type=_positive_int, default=None, help="stop after this many candidates")
    ex.add_argument("--idle-timeout", type=_positive_float, default=5.0, help="stop reading a topic after this many idle seconds")
    ex.add_argument("--show-text", action="store_true", help="include the redacted texts")
    ex.add_argument("--summary-only", action="store_true", help="print only the funnel summary")

    tail = sub.add_parser("tail", help="print decoded events of a topic as JSON lines")
    tail.add_argument("topic", help="interactions | actions | candidates | passed | rejected | deadletter, or a full topic name")
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
        from flywheel.stack import embedded_stack

        logs.configure(settings.log_level)
        overrides = {k: v for k, v in (("broker_port", args.port), ("data_dir", args.data_dir)) if v is not None}
        with embedded_stack(settings.replace(**overrides)) as live:
            print(json.dumps({"kafka_bootstrap": live.kafka_bootstrap, "redis_url": live.redis_url,
                              "metrics": f"http://127.0.0.1:{live.metrics_port}/metrics" if live.metrics_port else None}),
                  flush=True)
            if args.no_worker:
                import signal

                signal.sigwait({signal.SIGINT, signal.SIGTERM})
            else:
                _worker(live)
        return 0
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
            counts = send(traffic, producer, rate=args.rate, tail_ticks=not args.no_tail_ticks,
                          settle_window_ms=settings.settle_window_ms)
        print(json.dumps(counts, sort_keys=True, default=str))
        return 0
    if args.command == "policy":
        return _policy(args, settings)
    if args.command == "gate":
        return _gate_explain(args, settings)
    if args.command == "tail":
        from flywheel.tail import tail

        tail(settings, args.topic, sys.stdout, from_beginning=not args.new, max_events=args.max, idle_timeout=args.idle_timeout)
        return 0
    raise AssertionError(args.command)


def _policy(args, settings: Settings) -> int:
    from streams.gate.policy import GatePolicy, PolicyError

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
    from streams.gate.policy import GatePolicy, PolicyError

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


def _worker(settings: Settings) -> None:
    from streams.app import run_worker

    run_worker(settings)


if __name__ == "__main__":
    sys.exit(main())
