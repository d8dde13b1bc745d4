"""`flywheel golden ...`: the versioned golden test set (trainer/golden.py)."""

from __future__ import annotations

from flywheel.cli.base import DOCUMENT, LINES, Command, CommandError


def _store(settings):
    from trainer.golden import GoldenStore

    return GoldenStore(settings.golden_path)


class GoldenAdd(Command):
    name = "add"
    help = "add the items of a JSONL or CSV file (prompt, expected[, task_type, id, scorer]) as a new version"
    output = DOCUMENT
    json_help = "the new version, as without --json"

    def add_arguments(self, parser):
        parser.add_argument("file")

    def run(self, args, settings) -> int:
        from trainer.files import RecordFileError
        from trainer.golden import load_items

        store = _store(settings)
        try:
            items = load_items(args.file)
            version = store.add(items)
        except (RecordFileError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self.print_json({"version": version, "items": len(store.load(version)), "added": len(items)}, sort_keys=True)
        return 0


class GoldenList(Command):
    name = "list"
    help = "the golden set's versions (items, task types, sha256)"
    output = LINES
    json_help = "as it prints without --json"

    def run(self, args, settings) -> int:
        for v in _store(settings).versions():
            self.print_json(v, sort_keys=True)
        return 0


class Golden(Command):
    name = "golden"
    help = "the versioned golden test set"
    dest = "golden_command"
    subcommands = (GoldenAdd, GoldenList)
