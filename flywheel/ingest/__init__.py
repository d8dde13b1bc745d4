"""Ways in for apps and logs that are not the Kafka SDK: HTTP ingest (`flywheel ingest`) and imports
(`flywheel import openai-jsonl`)."""
