# allocd: build and run the gRPC service.
#   docker build -t allocd . && docker run -p 50051:50051 allocd
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/var/cache/allocd/numba \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos protos
COPY scripts scripts
COPY core core
COPY service service
COPY bench bench

# Generate the protobuf code from protos/, install, compile the order path's modules (mypyc,
# which needs a C compiler: the core's and the service's) and install them too, then drop
# the build tools.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && pip install 'grpcio-tools>=1.66' 'mypy-protobuf>=3.6' 'mypy>=1.11' \
 && python scripts/gen_protos.py \
 && pip install . \
 && python scripts/compile_core.py \
 && pip install --no-deps --force-reinstall . \
 && (cd / && python -c "import core, service; assert core.COMPILED and service.COMPILED, 'the build did not compile'") \
 && pip uninstall -y grpcio-tools mypy-protobuf mypy \
 && apt-get purge -y --auto-remove gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --system --uid 10001 --home-dir /var/lib/allocd allocd \
 && mkdir -p /var/cache/allocd/numba /var/lib/allocd \
 && chown -R allocd /var/cache/allocd /var/lib/allocd
USER allocd
WORKDIR /var/lib/allocd

# Compile the Numba kernels into the image's cache so start-up does not.
RUN python -c "from core.warmup import warm_kernels; warm_kernels()"

EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["allocd", "health", "--address", "127.0.0.1:50051"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["allocd"]
# Off loopback the server refuses plaintext: mount a certificate and set
# ALLOCD_TLS_CERT_FILE / ALLOCD_TLS_KEY_FILE (or ALLOCD_ALLOW_PLAINTEXT=true behind a
# trusted proxy).
CMD ["serve", "--host", "0.0.0.0", "--demo"]
