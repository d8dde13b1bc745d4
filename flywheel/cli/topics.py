"""`flywheel topics create`: every flywheel topic (flywheel/topics.py), idempotently."""

from __future__ import annotations

from flywheel.cli.base import DOCUMENT, Command


class TopicsCreate(Command):
    name = "create"
    help = "create every flywheel topic (idempotent)"
    output = DOCUMENT

    def run(self, args, settings) -> int:
        from flywheel import logs
        from flywheel.topics import create_topics

        logs.configure(settings.log_level)
        self.print_json(create_topics(settings), sort_keys=True)
        return 0


class Topics(Command):
    name = "topics"
    help = "topic administration"
    dest = "topics_command"
    subcommands = (TopicsCreate,)
