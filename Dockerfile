# syntax=docker/dockerfile:1
# One image for the worker and the server: `docker run IMAGE serve` / `IMAGE worker`.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY imgclf ./imgclf
RUN pip install --no-cache-dir .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 imgclf \
    && useradd --system --no-log-init --uid 10001 --gid imgclf --home-dir /var/lib/imgclf --create-home imgclf \
    && mkdir -p /models /data \
    && chown imgclf:imgclf /models /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    IMGCLF_MODEL_DIR=/models \
    IMGCLF_DATA_ROOTS=/data \
    IMGCLF_HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/imgclf
VOLUME ["/models", "/data"]
EXPOSE 8500 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["imgclf"]
CMD ["serve"]
