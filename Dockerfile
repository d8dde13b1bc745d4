# One image for every flywheel service (worker, and later review page and trainer).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.lock
COPY schemas schemas
COPY streams streams
COPY trainer trainer
COPY flywheel flywheel
RUN pip install --no-cache-dir --no-deps .
USER 65534
ENTRYPOINT ["flywheel"]
CMD ["worker"]
