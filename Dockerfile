# syntax=docker/dockerfile:1
# One image, every role: the compose file picks the role with the command.
#
# Production build: the HubSpot simulator and the benchmarks are left out (cargo features).
# `--build-arg FEATURES=simulator` adds `hubkeeper sim` and the simulator `up` starts.
FROM rust:1-bookworm AS build
ARG FEATURES=""
WORKDIR /src
COPY . .
# The cargo registry and target directory live in build caches: a rebuild after a source change
# recompiles only what changed, not every dependency. --locked: exactly Cargo.lock's versions.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p hubkeeper --no-default-features ${FEATURES:+--features "$FEATURES"} \
 && install -m 0755 target/release/hubkeeper /usr/local/bin/hubkeeper

FROM debian:bookworm-slim
# pg_dump/pg_restore 17 from the PostgreSQL project's repository (Debian bookworm has only 15):
# pg_dump must be at least as new as the server, and 17 backs up every version Hubkeeper
# supports (13 to 17). postgresql-common ships that repository's key and set-up script.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-common \
 && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
 && apt-get install -y --no-install-recommends postgresql-client-17 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/hubkeeper hubkeeper \
 && mkdir -p /var/lib/hubkeeper/backups \
 && chown -R hubkeeper:hubkeeper /var/lib/hubkeeper
COPY --from=build /usr/local/bin/hubkeeper /usr/local/bin/hubkeeper
# State (backups, `up`'s data) on a volume owned by the image's user: a fresh named volume
# takes this ownership, so the daily backup can write.
WORKDIR /var/lib/hubkeeper
VOLUME /var/lib/hubkeeper
USER hubkeeper
ENV HK_BIND=0.0.0.0:8080 \
    HK_LOG_FORMAT=json \
    HK_DATA_DIR=/var/lib/hubkeeper \
    HK_BACKUP_DIR=/var/lib/hubkeeper/backups \
    HK_PG_BIN_DIR=/usr/lib/postgresql/17/bin
EXPOSE 8080
# Readiness of this container's process: the API on HK_BIND, a worker on HK_METRICS_BIND.
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s --retries=3 \
    CMD ["hubkeeper", "health"]
ENTRYPOINT ["hubkeeper"]
CMD ["api"]
