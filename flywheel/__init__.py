"""The flywheel's command line, settings, producer SDK and embedded stack."""
