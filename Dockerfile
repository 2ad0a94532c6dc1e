# syntax=docker/dockerfile:1
# Gatehouse as a small, non-root image. The build stage runs the same scripts as CI
# (.ci/run): scripts/build-release.sh builds the binary and scripts/smoke-release.sh proves
# that it starts, answers the health check below and stops on SIGTERM.
#
#   docker build -t gatehouse .
#   docker run -p 50051:50051 -p 50052:50052 -e GATEHOUSE_SECRET=... gatehouse
#
# Production needs TLS on the gRPC port (GATEHOUSE_TLS_CERT / _KEY, mounted) or a sidecar on
# loopback; see README "Configuration" and compose.yaml.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-release.sh /out && scripts/smoke-release.sh /out/gatehouse && mkdir -p /out/data

# glibc, libgcc and libssl (webauthn-rs links OpenSSL) only: no shell, no package manager; uid
# 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gatehouse /usr/local/bin/gatehouse
COPY --from=build --chown=65532:65532 /out/data /data
ENV GATEHOUSE_LISTEN=0.0.0.0:50051 \
    GATEHOUSE_HTTP_LISTEN=0.0.0.0:50052 \
    GATEHOUSE_DATA_DIR=/data
VOLUME ["/data"]
USER 65532:65532
EXPOSE 50051 50052
# The gRPC health protocol (grpc.health.v1.Health/Check), asked by the binary itself.
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/gatehouse", "health"]
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["serve"]
