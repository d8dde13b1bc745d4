# One image for every flywheel service (worker, and later review page and trainer).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
# the lock is complete and installed as is (--no-deps: see its header); torch's CPU build comes
# from PyTorch's index (a GPU image would take the CUDA build instead)
RUN pip install --no-cache-dir --no-deps --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock
COPY schemas schemas
COPY streams streams
COPY trainer trainer
COPY flywheel flywheel
RUN pip install --no-cache-dir --no-deps .
USER 65534
ENTRYPOINT ["flywheel"]
CMD ["worker"]
