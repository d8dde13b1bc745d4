"""`flywheel import ...`: existing LLM logs imported as interactions and actions (flywheel/importers.py).
(`import` is a keyword, hence the module's name.)"""

from __future__ import annotations

from flywheel.cli.base import DOCUMENT, Command, CommandError


class ImportOpenAIJsonl(Command):
    name = "openai-jsonl"
    help = (
        "chat-format JSONL (messages, or request/response pairs, with optional "
        "feedback fields; see flywheel/importers.py); '-' reads stdin, .gz is read as gzip"
    )
    output = DOCUMENT
    json_help = "the import's counts, as without --json"
    progress = True

    def add_arguments(self, parser):
        parser.add_argument("file", metavar="FILE")
        parser.add_argument("--user-id", default="imported", help="the user id of lines that name none")

    def run(self, args, settings) -> int:
        from flywheel import logs
        from flywheel.importers import import_openai_jsonl, read_lines
        from flywheel.sdk import FlywheelProducer

        logs.configure(settings.log_level)
        try:
            lines = read_lines(args.file)
            with FlywheelProducer(settings) as producer, self.bar(args, desc="import", unit="line") as progress:
                summary = import_openai_jsonl(_counted(lines, progress), producer, default_user=args.user_id)
        except OSError as exc:
            raise CommandError(str(exc)) from None
        self.print_json(summary.to_dict(), sort_keys=True)
        return 0 if summary.interactions or not summary.lines else 1


def _counted(lines, progress):
    for line in lines:
        progress.update(1)
        yield line


class Import(Command):
    name = "import"
    help = "import existing LLM logs as interactions and actions"
    dest = "import_command"
    subcommands = (ImportOpenAIJsonl,)
