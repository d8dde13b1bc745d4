# Two commands on a fresh machine: `make run` (the whole flywheel, demonstrated on the embedded default) and `make test`.
.PHONY: run up test unit bench setup test-setup
setup:
	@scripts/bootstrap.sh

test-setup:  # also the Debian packages only the tests drive (Chromium, Prometheus)
	@scripts/bootstrap.sh --test-tools

run: setup  # transformers' "Loading weights" bars would cut into the demo's table
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 .venv/bin/flywheel demo

up: setup
	.venv/bin/flywheel up

test: test-setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -p no:cacheprovider

unit: setup
	.venv/bin/python -m pytest -q tests/unit

bench: setup
	.venv/bin/python benchmarks/join_throughput.py
	HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gate_throughput.py
	.venv/bin/python benchmarks/review_throughput.py
	.venv/bin/python benchmarks/dataset_seal.py
	HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_throughput.py
	.venv/bin/python benchmarks/guard_throughput.py
	HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/pii_recall.py
	.venv/bin/python benchmarks/ingest_throughput.py
	.venv/bin/python benchmarks/conversation_cost.py
	.venv/bin/python benchmarks/dataset_reseal.py
	HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/same_datasets.py
