# initium service image: `initium serve` (API, embedded worker by default) or `initium worker` (Celery).
# The CUDA build of torch comes from PyPI's default wheels; CPU-only hosts run it on the CPU.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    INITIUM_DATA_DIR=/data

WORKDIR /app
COPY schemas/ schemas/
COPY client/ client/
COPY service/ service/
RUN pip install ./schemas "./client[torch]" ./service

# Never run as root: the store volume is owned by the service user.
RUN useradd --create-home --uid 10001 initium && mkdir -p /data && chown initium /data
USER initium
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=3)"

CMD ["initium", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
