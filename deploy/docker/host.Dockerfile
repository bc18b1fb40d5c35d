# syntax=docker/dockerfile:1
# The detection host (`routewatch run`) with the shipped detector components.
# Build from the repository root: docker build -f deploy/docker/host.Dockerfile -t routewatch-host .

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
# The same build as on a developer's machine: `cargo xtask build` adds the wasm32-wasip2
# target, builds the detector components, then the host. The caches keep rebuilds incremental;
# the results are copied out of the cache mount before the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo xtask build \
    && mkdir -p /out/detectors /out/default /out/classifier \
    && cp target/release/routewatch /out/ \
    && find target/wasm32-wasip2/plugin -maxdepth 1 -name 'routewatch_*.wasm' ! -name 'routewatch_test_*' \
         ! -name 'routewatch_classifier_*' -exec cp {} /out/detectors/ \; \
    && cp target/wasm32-wasip2/plugin/routewatch_classifier_forest.wasm /out/classifier/ \
    && while read -r stem; do \
         case "$stem" in ''|'#'*) ;; *) cp "/out/detectors/${stem}.wasm" /out/default/ ;; esac; \
       done < deploy/default-detectors.txt

FROM debian:${DEBIAN_RELEASE}-slim
# curl serves the health check; the host itself needs only libc and zlib, both in the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 routewatch \
    && useradd --system --uid 10001 --gid routewatch --home-dir /var/lib/routewatch --shell /usr/sbin/nologin routewatch
COPY --from=builder /out/routewatch /usr/local/bin/routewatch
COPY --from=builder /out/detectors/ /opt/routewatch/detectors/
COPY --from=builder /out/default/ /opt/routewatch/default-detectors/
# The cause classifier that names each incident's probable cause (plugins/classifier-forest).
COPY --from=builder /out/classifier/ /opt/routewatch/classifier/
# The watched plugin directory starts with the default set (deploy/default-detectors.txt);
# enable another detector by copying it from /opt/routewatch/detectors (or uploading it
# through the API).
RUN install -d -o routewatch -g routewatch /var/lib/routewatch/plugins /var/cache/routewatch \
    && install -o routewatch -g routewatch -m 0644 /opt/routewatch/default-detectors/*.wasm /var/lib/routewatch/plugins/
COPY deploy/host/routewatch.toml /etc/routewatch/routewatch.toml
ENV ROUTEWATCH_CONFIG=/etc/routewatch/routewatch.toml \
    ROUTEWATCH_CLASSIFIER=/opt/routewatch/classifier/routewatch_classifier_forest.wasm \
    ROUTEWATCH_PLUGIN_DIR=/var/lib/routewatch/plugins \
    ROUTEWATCH_CACHE_DIR=/var/cache/routewatch \
    ROUTEWATCH_LISTEN=0.0.0.0:9400
USER 10001:10001
WORKDIR /var/lib/routewatch
EXPOSE 9400
# Compiling the components on first start takes a while (the cache makes restarts quick).
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9400/readyz"]
ENTRYPOINT ["routewatch"]
CMD ["run"]
