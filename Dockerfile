# The Blauwe Knop gateway as a container image: slim, non-root, pinned, with a health check.
#
#   docker build -t blauweknop-gateway .
#   docker run --read-only --tmpfs /tmp -v state:/var/lib/blauweknop \
#     -v ./gateway.toml:/etc/blauweknop/gateway.toml:ro blauweknop-gateway
#
# The base image is pinned to an exact Python and Debian release; pin its digest in the build
# pipeline that mirrors images (the digest is not knowable from here). Dependencies are pinned in
# deploy/requirements.lock, generated from the tested venv (deploy/dev/lock.py).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/blauweknop
WORKDIR /src
COPY deploy/requirements.lock deploy/requirements.lock
RUN /opt/blauweknop/bin/pip install --requirement deploy/requirements.lock
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY connectors connectors
RUN /opt/blauweknop/bin/pip install --no-deps --constraint deploy/requirements.lock . \
    && /opt/blauweknop/bin/pip check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="Blauwe Knop gateway" \
      org.opencontainers.image.licenses="EUPL-1.2"
ENV PATH=/opt/blauweknop/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BLAUWEKNOP_CONFIG=/etc/blauweknop/gateway.toml \
    BLAUWEKNOP_STATE_DIR=/var/lib/blauweknop \
    BLAUWEKNOP_POLICIES_DIR=/etc/blauweknop/policies \
    BLAUWEKNOP_HOST=0.0.0.0 \
    BLAUWEKNOP_PORT=8080
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can check it without a passwd lookup.
RUN groupadd --system --gid 10001 blauweknop \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/blauweknop \
       --shell /usr/sbin/nologin blauweknop \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/blauweknop
COPY --from=build /opt/blauweknop /opt/blauweknop
COPY policies /etc/blauweknop/policies
USER 10001:10001
WORKDIR /var/lib/blauweknop
VOLUME ["/var/lib/blauweknop"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["blauweknop"]
CMD ["serve"]
