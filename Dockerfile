# limner as a container image: `limner serve` on 0.0.0.0:8000, the embedded model inside,
# DATA_DIR a volume at /data, run as uid 10001. README.md, section "Container".
#
# CPU (the default): docker build -t limner:cpu .
# CUDA: docker build -t limner:cuda \
#         --build-arg BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#         --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#
# Build arguments:
#   BASE           the image both stages start from; one with python3 (3.11+), or a Debian or
#                  Ubuntu one whose apt-get can install it (the CUDA bases).
#   TORCH_VERSION  torch is installed first and pinned, as scripts/setup.sh does.
#   TORCH_INDEX    the wheel index torch comes from: .../whl/cpu (default) or .../whl/cu128.
#                  Empty: PyPI, after the wheels in wheels/ (a local torch wheel there wins).
#   EXTRAS         limner's extras: diffusers,openvino (default); empty for the embedded
#                  model alone; add ray for KubeRay (docs/ray/rayservice.yaml).
#   APT_PACKAGES   more Debian/Ubuntu packages in the final image (none by default).
# wheels/ (wheels pip takes before any index) and certs/ (extra CA certificates, *.crt,
# for pip behind a TLS-inspecting proxy) are read by the build stage only; neither reaches
# the final image.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=diffusers,openvino
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY certs/ /tmp/certs/
COPY wheels/ /tmp/wheels/
RUN set -eu; \
    if ls /tmp/certs/*.crt >/dev/null 2>&1; then \
        cat /etc/ssl/certs/ca-certificates.crt /tmp/certs/*.crt > /tmp/ca-bundle.crt \
            2>/dev/null || cat /tmp/certs/*.crt > /tmp/ca-bundle.crt; \
        printf '[global]\ncert = /tmp/ca-bundle.crt\n' > /etc/pip.conf; \
    fi; \
    python3 -m venv /opt/limner; \
    if [ -n "$TORCH_INDEX" ]; then index="--index-url $TORCH_INDEX"; else index=""; fi; \
    /opt/limner/bin/pip install --find-links /tmp/wheels $index "torch==$TORCH_VERSION"; \
    echo "torch==$TORCH_VERSION" > /tmp/constraints.txt
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
RUN set -eu; \
    spec=/src; if [ -n "$EXTRAS" ]; then spec="/src[$EXTRAS]"; fi; \
    /opt/limner/bin/pip install --find-links /tmp/wheels --constraint /tmp/constraints.txt \
        "$spec"; \
    /opt/limner/bin/python -c 'import limner, torch; print("limner in the image; torch", torch.__version__)'

FROM ${BASE}
# Debian or Ubuntu packages for the final image (e.g. wget, which KubeRay's default probes
# run inside Ray's containers).
ARG APT_PACKAGES=""
ENV DEBIAN_FRONTEND=noninteractive
# tini is PID 1: it hands SIGTERM to limner, and a SIGTERM that comes before limner has set
# its handler (while torch imports) still ends it, where PID 1 itself would ignore it.
RUN set -eu; \
    packages="$APT_PACKAGES"; \
    command -v python3 >/dev/null || packages="$packages python3 ca-certificates"; \
    command -v tini >/dev/null || packages="$packages tini"; \
    if [ -n "${packages# }" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends $packages \
        && rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --gid 10001 limner; \
    useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin limner; \
    mkdir -p /data; chown 10001:10001 /data
COPY --from=build /opt/limner /opt/limner
# HOME and HF_HOME in the volume: models pulled from the hub, caches and the signing key
# outlive the container.
ENV PATH=/opt/limner/bin:$PATH LIMNER_DATA_DIR=/data HOME=/data HF_HOME=/data/huggingface \
    PYTHONUNBUFFERED=1
VOLUME /data
WORKDIR /data
USER 10001:10001
EXPOSE 8000
# /healthz needs no API key. Python's urllib: no curl in the image.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=8)"]
# SIGTERM drains: requests in flight finish within shutdown_grace_s (30 s), then exit 0.
# Give the runtime more than that before it kills (docker/podman stop -t 40).
STOPSIGNAL SIGTERM
# Exec form, no shell between: tini passes the signal straight to limner.
ENTRYPOINT ["tini", "--"]
CMD ["limner", "serve", "--host", "0.0.0.0", "--port", "8000"]
