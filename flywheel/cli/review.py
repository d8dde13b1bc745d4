"""`flywheel review` (the review page, streams/review/web.py) and `flywheel reviewers` (its accounts)."""

from __future__ import annotations

from flywheel.cli.base import DOCUMENT, LINES, Command, CommandError
from flywheel.cli.services import review_redis


class Review(Command):
    name = "review"
    help = "serve the review web page (and its /metrics) on FLYWHEEL_REVIEW_HOST:PORT"
    output = DOCUMENT
    json_help = "with --status, the queue's figures, as without --json"

    def add_arguments(self, parser):
        parser.add_argument("--host", default=None, help="address to listen on (default: FLYWHEEL_REVIEW_HOST)")
        parser.add_argument("--port", type=int, default=None, help="port (default: FLYWHEEL_REVIEW_PORT)")
        parser.add_argument("--status", action="store_true", help="print the queue's figures as JSON and exit")

    def run(self, args, settings) -> int:
        overrides = {k: v for k, v in (("review_host", args.host), ("review_port", args.port)) if v is not None}
        settings = settings.replace(**overrides).validate()
        if args.status:
            from dataclasses import asdict

            from streams.review.queue import ReviewQueue, review_prefix

            stats = ReviewQueue(review_redis(settings), review_prefix(settings)).stats()
            self.print_json({**asdict(stats), "depth": stats.depth}, sort_keys=True)
            return 0
        from streams.review.web import run_review

        return self.serve(settings, run_review)  # verdicts go to Kafka: the broker is required


class _Accounts(Command):
    def run(self, args, settings) -> int:
        from streams.review.accounts import AccountError, Reviewers
        from streams.review.queue import review_prefix

        accounts = Reviewers(
            review_redis(settings), review_prefix(settings), session_s=settings.review_session_h * 3600
        )
        try:
            return self.act(accounts, args)
        except AccountError as exc:
            raise CommandError(str(exc)) from None

    def act(self, accounts, args) -> int:
        raise NotImplementedError


class ReviewersAdd(_Accounts):
    name = "add"
    help = "create a reviewer and print its sign-in token (shown once, stored hashed)"
    output = DOCUMENT
    json_help = "as it prints without --json"

    def add_arguments(self, parser):
        parser.add_argument("name", help="reviewer name: 1-64 letters, digits or _.@-")

    def act(self, accounts, args) -> int:
        self.print_json({"reviewer": args.name, "token": accounts.add(args.name)})
        return 0


class ReviewersRemove(_Accounts):
    name = "remove"
    help = "delete a reviewer; its token and sessions stop working"
    output = DOCUMENT
    json_help = "as it prints without --json"

    def add_arguments(self, parser):
        parser.add_argument("name")

    def act(self, accounts, args) -> int:
        accounts.remove(args.name)
        self.print_json({"removed": args.name})
        return 0


class ReviewersList(_Accounts):
    name = "list"
    help = "list reviewers (names and creation times, never tokens)"
    output = LINES
    json_help = "as it prints without --json"

    def act(self, accounts, args) -> int:
        for row in accounts.list():
            self.print_json(row)
        return 0


class Reviewers(Command):
    name = "reviewers"
    help = "reviewer accounts of the review page"
    dest = "reviewers_command"
    subcommands = (ReviewersAdd, ReviewersRemove, ReviewersList)
