# The demo app and its consumer (one image, two commands); see compose.yaml.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY aioproducer ./aioproducer
RUN pip install ".[mongo,demo]"
# The wheel holds the library only: the demo app runs from /app.
COPY demo_app /app/demo_app
ENV PYTHONPATH=/app

# Run unprivileged; /data holds the SQLite store (when MONGO_URL is unset), the file a
# failed store leaves at shutdown, and the consumer's id list.
RUN useradd --create-home --uid 10001 demo && mkdir /data && chown demo /data
USER demo
WORKDIR /data
ENV HOST=0.0.0.0 \
    PORT=8000 \
    SPILL_PATH=/data/demo-spill.db \
    FALLBACK_DIR=/data

EXPOSE 8000
# SIGTERM (docker stop) makes Hypercorn stop accepting and the producer drain.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "demo_app"]
