"""`flywheel datasets ...`: the dataset builder, and the sealed datasets in the store
(streams/datasets/ and flywheel/datastore.py do the work)."""

from __future__ import annotations

import sys

from flywheel.cli.base import DOCUMENT, LINES, Command, CommandError, key_message, positive_int


class _Stored(Command):
    """A subcommand that reads the dataset store: an unknown dataset id is the one-line error."""

    def run(self, args, settings) -> int:
        from flywheel.datastore import DatasetStore

        try:
            return self.act(DatasetStore(settings.datasets_url), args, settings)
        except KeyError as exc:
            raise CommandError(key_message(exc)) from None

    def act(self, store, args, settings) -> int:
        raise NotImplementedError

    @staticmethod
    def newest(store, dataset_id: str, verb: str) -> None:
        """Refuse a version an erasure replaced: it holds what was erased."""
        newest = store.newest_version(dataset_id)
        if newest is not None and newest != dataset_id:
            raise CommandError(
                f"{dataset_id} was replaced by {newest} (an erasure re-sealed its window): {verb} {newest}"
            )


class DatasetsRun(Command):
    name = "run"
    help = "the dataset builder: seal windows as the watermark passes them (blocks)"

    def run(self, args, settings) -> int:
        from streams.datasets.service import run_datasets

        return self.serve(settings, run_datasets)


class DatasetsList(_Stored):
    name = "list"
    help = "every sealed dataset, one JSON line each (id, window, records, URI)"
    output = LINES
    json_help = "as it prints without --json"

    def act(self, store, args, settings) -> int:
        from streams.datasets.catalog import rows

        for row in rows(store):
            self.print_json(row)
        return 0


class DatasetsShow(_Stored):
    name = "show"
    help = "a dataset's manifest"
    output = DOCUMENT
    json_help = "as it prints without --json"

    def add_arguments(self, parser):
        parser.add_argument("dataset_id")

    def act(self, store, args, settings) -> int:
        self.print_json(store.manifest(args.dataset_id), indent=2)
        return 0


class DatasetsExport(_Stored):
    name = "export"
    help = "write a dataset's records to stdout or a file"
    progress = True

    def add_arguments(self, parser):
        parser.add_argument("dataset_id")
        parser.add_argument(
            "--format", choices=("jsonl", "avro"), default="jsonl", help="chat JSONL (default) or Avro container files"
        )
        parser.add_argument(
            "--kind", choices=("sft", "preference"), default="sft", help="SFT records (default) or preference pairs"
        )
        parser.add_argument("--out", default="-", help="a file ('-': stdout, JSONL only)")

    def act(self, store, args, settings) -> int:
        from pathlib import Path

        from streams.datasets.builder import iter_records

        self.newest(store, args.dataset_id, "export")
        manifest = store.manifest(args.dataset_id)  # KeyError: no such dataset
        if args.format == "avro" and args.out == "-":
            raise CommandError("--format avro needs --out DIR (Avro container files are binary)")
        shards = [s for s in manifest["shards"] if s["kind"] == args.kind and s["path"].endswith("." + args.format)]
        total = sum(int(s.get("records", 0)) for s in shards)
        progress = self.bar(args, total=total, desc=f"export {args.kind}", unit="rec")
        if args.format == "avro":
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            n = 0
            with progress:
                for shard in shards:
                    with store.open(f"{args.dataset_id}/{shard['path']}") as f:
                        (out / Path(shard["path"]).name).write_bytes(f.read())
                    n += 1
                    progress.update(int(shard.get("records", 0)))
            self.print_json({"files": n, "dir": str(out)})
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


class DatasetsPush(_Stored):
    name = "push"
    help = (
        "copy a sealed dataset (card, shards, manifest) to a directory or fsspec URL, e.g. a Hub "
        "dataset repository (hf://datasets/ORG/NAME), where datasets.load_dataset opens it"
    )
    output = DOCUMENT
    json_help = "what was copied, as without --json"
    progress = True

    def add_arguments(self, parser):
        parser.add_argument("dataset_id")
        parser.add_argument("dest", metavar="URL", help="a directory or an fsspec URL")

    def act(self, store, args, settings) -> int:
        from streams.datasets.card import push

        self.newest(store, args.dataset_id, "push")  # as export: never what an erasure replaced
        total = len(store.manifest(args.dataset_id).get("shards", []))
        try:
            with self.bar(args, total=total, desc="push", unit="file") as progress:
                self.print_json(push(store, args.dataset_id, args.dest, progress), sort_keys=True)
        except (FileExistsError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        return 0


class DatasetsAffected(_Stored):
    name = "affected"
    help = "sealed datasets that hold a user's records (after an erasure request)"
    output = LINES
    json_help = "as it prints without --json"

    def add_arguments(self, parser):
        parser.add_argument("user_id")

    def act(self, store, args, settings) -> int:
        from streams.datasets.erasure import datasets_holding

        for row in datasets_holding(settings, store, args.user_id):
            self.print_json(row)
        return 0


class DatasetsVerify(Command):
    name = "verify"
    help = (
        "seal a dataset's window again from the log into a scratch directory and compare "
        "byte for byte (exit 0 identical, 1 different, 2 error)"
    )
    output = DOCUMENT
    json_help = "the comparison instead of a summary"

    def add_arguments(self, parser):
        parser.add_argument("dataset_id")
        parser.add_argument(
            "--policy",
            default=None,
            metavar="FILE",
            help="the gate policy it was sealed under (default: FLYWHEEL_GATE_POLICY)",
        )
        parser.add_argument(
            "--scratch",
            default=None,
            metavar="DIR",
            help="where the rebuild is written and removed (default: the system's temporary directory)",
        )
        parser.add_argument(
            "--workers",
            type=positive_int,
            default=1,
            help="processes the rebuild uses (the bytes do not depend on it)",
        )

    def run(self, args, settings) -> int:
        from streams.datasets.verify import VerifyError, summary, verify_stored

        try:
            report = verify_stored(
                settings, args.dataset_id, policy_path=args.policy, scratch=args.scratch, workers=args.workers
            )
        except VerifyError as exc:
            raise CommandError(str(exc)) from None
        if args.json:
            self.print_json(report.to_dict(), sort_keys=True)
        else:
            print("\n".join(summary(report)))
        return 0 if report.identical else 1


class DatasetsErase(Command):
    name = "erase"
    help = "send an erasure request for a user id to the erasure topic"
    output = DOCUMENT
    json_help = "as it prints without --json"

    def add_arguments(self, parser):
        parser.add_argument("user_id")
        parser.add_argument("--reason", default="", help="why (kept with the request)")

    def run(self, args, settings) -> int:
        from schemas.records import InvalidEvent
        from streams.datasets.erasure import RequestNotSent, send_request

        try:
            send_request(settings, args.user_id, args.reason)
        except InvalidEvent as exc:
            raise CommandError(str(exc)) from None
        except RequestNotSent as exc:
            raise CommandError(str(exc), code=1) from None
        self.print_json({"erasure_requested": True, "topic": settings.topic_erasure})
        return 0


class Datasets(Command):
    name = "datasets"
    help = "sealed, 2-week-lagged training datasets"
    dest = "datasets_command"
    subcommands = (
        DatasetsRun,
        DatasetsList,
        DatasetsShow,
        DatasetsExport,
        DatasetsPush,
        DatasetsAffected,
        DatasetsVerify,
        DatasetsErase,
    )
