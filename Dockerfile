# consentd image. The build stage runs the same scripts as the README
# (scripts/install-deps.sh, scripts/build.sh), so the image builds exactly
# what the quick start builds.
FROM debian:bookworm AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh
COPY . .
RUN scripts/build.sh --no-tests consentd consentctl

FROM debian:bookworm-slim
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh --runtime-only \
    && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh \
    && useradd --system --uid 10001 --home-dir /var/lib/consentd --shell /usr/sbin/nologin consentd \
    && mkdir -p /var/lib/consentd /etc/consentd \
    && chown consentd:consentd /var/lib/consentd
COPY --from=build /src/build/server/consentd /src/build/client/consentctl /usr/local/bin/
COPY deploy/policy/default.textproto /etc/consentd/policy.textproto
USER consentd
VOLUME /var/lib/consentd
# gRPC stays on loopback until TLS and authentication are configured (see
# README, Security): callers run in the same pod or network namespace.
# Metrics carry no personal data and are exposed for Prometheus.
EXPOSE 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/consentd", "--data_dir=/var/lib/consentd", \
            "--policy=/etc/consentd/policy.textproto", "--metrics_listen=0.0.0.0:9464"]
