# consentd image: a build stage that runs the same scripts as the README
# (scripts/install-deps.sh, scripts/build.sh), and a runtime stage with the
# two binaries, their shared libraries from Debian and nothing else.
#
#   podman build --format docker --build-arg VERSION=0.1.0 \
#     --build-arg GIT_REVISION=$(git rev-parse --short=12 HEAD) -t consentd .
#
# (--format docker keeps the HEALTHCHECK, which the OCI format drops. The
# build stage's cache mount needs podman/buildah or Docker with BuildKit,
# the default since Docker 23.)
# scripts/container-test.sh builds it that way and runs it; docs/deploy.md
# describes the image.
ARG VERSION=0.1.0
ARG GIT_REVISION=unknown

FROM debian:bookworm AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh
COPY . .
ARG GIT_REVISION
# ccache's directory is a build cache mount: a rebuild after a small change
# recompiles only what changed.
ENV CCACHE_DIR=/root/.cache/ccache
RUN --mount=type=cache,target=/root/.cache/ccache \
    CONSENT_GIT_REVISION="$GIT_REVISION" scripts/build.sh --no-tests consentd consentctl \
    && strip build/server/consentd build/client/consentctl

FROM debian:bookworm-slim
ARG VERSION
ARG GIT_REVISION
LABEL org.opencontainers.image.title="consentd" \
      org.opencontainers.image.description="consent-registry: users' objections and consents to uses of their content, answered for training pipelines" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$GIT_REVISION" \
      org.opencontainers.image.base.name="debian:bookworm-slim"
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh --runtime-only \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
              /tmp/install-deps.sh /usr/share/doc/* /usr/share/man/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/consentd \
               --shell /usr/sbin/nologin consentd \
    && mkdir -p /var/lib/consentd /var/backups/consentd /etc/consentd/policy \
    && chown consentd:consentd /var/lib/consentd /var/backups/consentd
COPY --from=build /src/build/server/consentd /src/build/client/consentctl /usr/local/bin/
COPY deploy/policy/default.textproto /etc/consentd/policy/policy.textproto
USER 10001:10001
# The database lives in a subdirectory of the volume, so a fresh file
# system's lost+found (or anything else at its root) is no obstacle.
VOLUME /var/lib/consentd
WORKDIR /var/lib/consentd
# 50051 gRPC, 9464 metrics and the /healthz and /readyz probes. Without
# --auth_file (and TLS), gRPC stays on loopback: callers run in the same
# pod or network namespace. docs/deploy.md shows the flags for a network
# listener with TLS and tokens.
EXPOSE 50051 9464
STOPSIGNAL SIGTERM
# consentctl reads its target from CONSENT_TARGET: a container started with
# another --listen sets it too (-e CONSENT_TARGET=127.0.0.1:PORT).
ENV CONSENT_TARGET=127.0.0.1:50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/consentctl", "--timeout=3s", "health"]
# Flags given to `podman run IMAGE ...` (or a Kubernetes container's args)
# are appended; a later flag overrides an earlier one.
# Backups are off until --backup_dir names a mounted volume
# (/var/backups/consentd is there for it): a backup in the container's own
# layer would be lost with the container.
ENTRYPOINT ["/usr/local/bin/consentd", "--data_dir=/var/lib/consentd/data", \
            "--policy=/etc/consentd/policy/policy.textproto", "--metrics_listen=0.0.0.0:9464"]
