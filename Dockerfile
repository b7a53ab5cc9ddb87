# syntax=docker/dockerfile:1
# The dagrid image: the `dagrid` binary for every role (coordinator, worker, start-all, and
# the client verbs) and beside it `dagrid-worker`, the worker alone, which `dagrid worker`
# execs (a third of the memory) and which every worker runs as its step supervisor. Build and run: docs/deploy.md, "Docker".
#
#   docker build -t dagrid:0.1.0 .
#   docker run --rm -e DAGRID_REDIS_URL=redis://redis:6379 -e DAGRID_ADMIN_TOKEN=... -p 8080:8080 dagrid:0.1.0 coordinator

# The toolchain the repository is built and tested with (Cargo.lock may need more than
# the workspace's rust-version).
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The workspace's manifests and sources; target/ and .git are left out by .dockerignore.
COPY . .
RUN cargo build --release --locked -p dagrid --bin dagrid --bin dagrid-worker \
    && install -m 0755 target/release/dagrid target/release/dagrid-worker /usr/local/bin/

FROM debian:${DEBIAN_RELEASE}-slim
# tini as PID 1: it forwards SIGTERM to dagrid (which drains) and reaps the orphans that
# steps leave behind. ca-certificates: rediss:// against public CAs. Unpinned on purpose:
# Debian's security updates land in the same suite and pinned versions vanish from it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 dagrid \
    && useradd --system --uid 10001 --gid dagrid --home-dir /home/dagrid --create-home --shell /usr/sbin/nologin dagrid \
    && install -d -o dagrid -g dagrid /var/log/dagrid
COPY --from=build /usr/local/bin/dagrid /usr/local/bin/dagrid-worker /usr/local/bin/

# Beyond loopback the coordinator needs API tokens (DAGRID_ADMIN_TOKEN / DAGRID_READ_TOKEN or
# --token-file). Step logs go to /var/log/dagrid (mount a volume or an emptyDir there).
ENV DAGRID_LISTEN=0.0.0.0:8080 \
    DAGRID_LOG_DIR=/var/log/dagrid \
    DAGRID_LOG_FORMAT=json
USER 10001:10001
WORKDIR /home/dagrid
EXPOSE 8080 9091

# `dagrid health` GETs $DAGRID_SERVER/health/ready (default http://127.0.0.1:8080, the
# coordinator) and exits 1 when it is not ready. For a worker, run it with
# --health-addr 0.0.0.0:9091 and DAGRID_SERVER=http://127.0.0.1:9091.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["dagrid", "health", "--timeout", "2s"]

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/dagrid"]
CMD ["coordinator"]
