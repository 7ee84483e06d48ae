# syntax=docker/dockerfile:1.7
# Images from one file, each installing the wheel built in the first stage (never the source tree):
#   docker build --target api    -t editaudit-api .                 # FastAPI + CLI, no torch
#   docker build --target worker -t editaudit-worker .              # Celery worker, torch with CUDA
#   docker build --target worker --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu \
#                -t editaudit-worker-cpu .                           # the same worker, CPU-only torch
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN pip install "build>=1.2"
# exactly what the sdist and the wheel are built from (setup.py discovers the packages under each root)
COPY pyproject.toml setup.py README.md LICENSE ./
COPY editaudit ./editaudit
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
RUN python -m build --wheel --outdir /dist .

FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 editaudit
WORKDIR /home/editaudit

FROM base AS api
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install "$(ls /dist/editaudit-*.whl)[api]"
USER editaudit
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')" || exit 1
# editaudit's server entry (uvicorn with header/body timeouts and connection caps: docs/operations.md)
CMD ["python", "-m", "editaudit.service.server", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]

FROM base AS worker
# torch first, from the chosen wheel index (CUDA by default; .../whl/cpu for machines without an NVIDIA GPU), so
# the resolver never swaps it for another build when the wheel's `worker` extra is installed
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install --index-url "${TORCH_INDEX}" "torch>=2.10,<2.15" "torchvision>=0.25,<0.30" \
 && pip install "$(ls /dist/editaudit-*.whl)[worker]"
USER editaudit
# one worker process per GPU, one job at a time (see worker/celery_app.py and editaudit/core/queue.py)
CMD ["celery", "-A", "editaudit.worker.celery_app", "worker", "--pool=solo", "--concurrency=1", "--loglevel=INFO"]
