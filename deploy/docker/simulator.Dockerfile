# syntax=docker/dockerfile:1
# The fleet simulator (`routewatch-sim`).
# Build from the repository root: docker build -f deploy/docker/simulator.Dockerfile -t routewatch-simulator .

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
# The simulator is a plain native binary: no wasm target or plugins needed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p routewatch-simulator \
    && mkdir -p /out \
    && cp target/release/routewatch-sim /out/

FROM debian:${DEBIAN_RELEASE}-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 routewatch \
    && useradd --system --uid 10001 --gid routewatch --no-create-home --shell /usr/sbin/nologin routewatch
COPY --from=builder /out/routewatch-sim /usr/local/bin/routewatch-sim
ENV ROUTEWATCH_SIM_LISTEN=0.0.0.0:8090
USER 10001:10001
EXPOSE 8090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8090/healthz"]
ENTRYPOINT ["routewatch-sim"]
