# syntax=docker/dockerfile:1
#
# Weft: one image holding the three services. The command picks the service:
#   docker run weft weft-gateway            (HTTP API + webhooks)
#   docker run weft weft-gateway migrate    (apply DB migrations and exit)
#   docker run weft weft-scheduler
#   docker run weft weft-worker
#
# Build from the repository root:  docker build -t weft:dev .

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- chef: toolchain + cargo-chef --------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
# cmake and clang: aws-lc-sys (rustls' crypto provider) builds C code.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang \
 && rm -rf /var/lib/apt/lists/*
ARG CARGO_CHEF_VERSION=^0.1.77
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# --- planner: reduce the workspace to a dependency recipe --------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- builder: dependencies first (cached layer), then the workspace ----------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Rebuilt only when Cargo.toml / Cargo.lock change.
RUN cargo chef cook --release --locked --bins --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir -p /out \
 && for bin in weft-gateway weft-scheduler weft-worker; do \
      install -m 0755 "target/release/${bin}" "/out/${bin}"; \
    done \
 && strip /out/*

# --- runtime: minimal, non-root ----------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: the worker calls external HTTPS APIs.
# tini: PID 1 that forwards SIGTERM so the services drain cleanly.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 weft \
 && useradd --system --uid 10001 --gid weft --home-dir /app --no-create-home --shell /usr/sbin/nologin weft \
 && mkdir -p /app \
 && chown weft:weft /app
# Migrations are embedded in the binaries at build time (refinery), nothing else to copy.
COPY --from=builder /out/ /usr/local/bin/
WORKDIR /app
# Numeric user so Kubernetes can verify runAsNonRoot.
USER 10001:10001
ENV WEFT_LOG_FORMAT=json \
    RUST_LOG=info
# 8080: gateway HTTP API; 9101-9103: /metrics, /healthz, /readyz of gateway, scheduler, worker.
EXPOSE 8080 9101 9102 9103
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["weft-gateway"]
