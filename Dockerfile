# servectl image: serves a spec given at run time.
#   docker build -t servectl:0.1.0 .
#   docker run -p 8000:8000 -v "$PWD/configs:/specs:ro" servectl:0.1.0 /specs/quickstart.yaml server.host=0.0.0.0
# Build arguments:
#   EXTRAS       extras of pyproject.toml to install, e.g. pytorch or onnx-cpu (default: none)
#   TORCH_INDEX  where torch comes from: the CPU build by default (PyPI's Linux wheels are CUDA builds)
#   BASE         the base image: any with Python >= 3.10 (or an Ubuntu/Debian one: Python is installed)
# CUDA variant (onnxruntime-gpu and the CUDA torch build, on NVIDIA's runtime image; run with --gpus all):
#   docker build -t servectl:0.1.0-cuda \
#     --build-arg BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#     --build-arg EXTRAS=pytorch,onnx \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
ARG BASE=python:3.11-slim

# The interpreter and the user, shared by both stages: the virtualenv built in one runs in the other.
FROM ${BASE} AS python
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Distribution packages cannot be pinned across bases; only a base without Python installs any.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --gid 10001 servectl \
    && useradd --no-log-init --create-home --uid 10001 --gid servectl servectl

FROM python AS build
ARG EXTRAS=""
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY servectl ./servectl
# Compiled here: the read-only root filesystem of the pods cannot take .pyc files later.
RUN python3 -m venv /opt/servectl \
    && /opt/servectl/bin/pip install --no-cache-dir pip==24.3.1 \
    && /opt/servectl/bin/pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" "/src/.${EXTRAS:+[$EXTRAS]}"

FROM python AS runtime
ENV PATH=/opt/servectl/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1
COPY --from=build /opt/servectl /opt/servectl
WORKDIR /app
COPY handlers ./handlers
COPY configs ./configs
USER 10001:10001
EXPOSE 8000
# Probes the port the running server really uses: it resolves that process's spec, overrides and env.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-m", "servectl.cli.healthcheck"]
ENTRYPOINT ["servectl", "serve"]
CMD ["configs/quickstart.yaml", "server.host=0.0.0.0"]
