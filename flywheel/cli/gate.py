"""`flywheel gate explain`: candidates through the policy, each decision printed (streams/gate/explain.py)."""

from __future__ import annotations

import json
import sys

from flywheel.cli.base import LINES, Command, CommandError, positive_float, positive_int


class GateExplain(Command):
    name = "explain"
    help = "run candidates through the policy and print each decision with its scores and reasons"
    output = LINES
    json_help = "each decision, then the funnel summary, as without --json"
    progress = True

    def add_arguments(self, parser):
        src = parser.add_mutually_exclusive_group()
        src.add_argument(
            "--file", default=None, help="a JSONL file of candidates ('-' for stdin); default: the candidates topic"
        )
        src.add_argument("--topic", default=None, help="a topic of candidates (default: candidates)")
        parser.add_argument(
            "--policy", default=None, help="a policy file (default: FLYWHEEL_GATE_POLICY, or the defaults)"
        )
        parser.add_argument("--max", type=positive_int, default=None, help="stop after this many candidates")
        parser.add_argument(
            "--idle-timeout",
            type=positive_float,
            default=5.0,
            help="stop reading a topic after this many idle seconds",
        )
        parser.add_argument("--show-text", action="store_true", help="include the redacted texts")
        parser.add_argument("--summary-only", action="store_true", help="print only the funnel summary")

    def run(self, args, settings) -> int:
        import itertools
        import logging

        from flywheel.policy import GatePolicy, PolicyError
        from streams.gate.explain import CandidateLineError, Funnel, explain, parse_candidate, read_jsonl
        from streams.gate.pipeline import TokenizerError, build_gate

        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        bad = 0
        try:
            policy = GatePolicy.load(args.policy or settings.gate_policy)
            if args.file:
                handle = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
            gate = build_gate(policy)
        except (PolicyError, TokenizerError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"{args.file}: {exc.strerror}") from None

        def candidates():
            nonlocal bad
            if args.file:
                for n, got in read_jsonl(handle):
                    if isinstance(got, CandidateLineError):
                        bad += 1
                        self.warn(f"{args.file}:{n}: skipped: {got}")
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
                        self.warn(f"{topic}:{rec['partition']}@{rec['offset']}: skipped: {exc}")

        funnel = Funnel()
        decisions = explain(itertools.islice(candidates(), args.max), gate, show_text=args.show_text, funnel=funnel)
        with self.bar(args, total=args.max, desc="explain", unit="cand") as progress:
            for line in decisions:
                progress.update(1)
                if not args.summary_only:
                    print(json.dumps(line, ensure_ascii=False))
        print(json.dumps(funnel.summary(gate)))
        return 1 if bad else 0


class Gate(Command):
    name = "gate"
    help = "the quality gate"
    dest = "gate_command"
    subcommands = (GateExplain,)
