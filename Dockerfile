# syntax=docker/dockerfile:1
# bedrock-relay: a static (musl) binary on distroless/static, running as a numeric non-root user.
#
#   docker build -t bedrock-relay .
#   docker run --rm -p 127.0.0.1:8790:8790 -p 127.0.0.1:8791:8791 \
#     -e BEDROCK_RELAY_LISTEN=0.0.0.0:8790 -e BEDROCK_RELAY_ALLOW_UNAUTHENTICATED_NON_LOOPBACK=true \
#     -e AWS_REGION=us-east-1 -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_SESSION_TOKEN \
#     bedrock-relay
#   docker run --rm bedrock-relay sim --listen 0.0.0.0:8799    # the simulator, same image
#
# Deployment examples (Kubernetes sidecar, compose, ECS, systemd): deploy/.

# ---- build: Alpine's Rust targets x86_64/aarch64-unknown-linux-musl and links statically.
FROM rust:1.95-alpine AS build
# aws-lc-sys (TLS crypto) builds C code: a C toolchain, cmake and perl.
RUN apk add --no-cache build-base cmake perl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY crates ./crates
# Cache mounts keep the registry and target dir across builds (BuildKit); the binary is
# copied out of the cached target dir because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin bedrock-relay \
 && cp target/release/bedrock-relay /bedrock-relay \
 && /bedrock-relay --version

# ---- run: no shell, no package manager; CA roots are compiled into the binary (webpki-roots).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /bedrock-relay /usr/local/bin/bedrock-relay
COPY config/bedrock-relay.toml /etc/bedrock-relay/bedrock-relay.toml
# Numeric, so that Kubernetes can verify runAsNonRoot (65532 = distroless "nonroot").
USER 65532:65532
EXPOSE 8790 8791
# Safe by default: the relay listens on the container's loopback, which is what a sidecar
# needs (Kubernetes pods and ECS awsvpc tasks share one network namespace; deploy/). To reach
# it through a published port instead, listen on all interfaces AND either configure inbound
# auth ([inbound] in the config file) or opt in loudly — the relay refuses to start otherwise:
#   docker run -p 127.0.0.1:8790:8790 -e BEDROCK_RELAY_LISTEN=0.0.0.0:8790 \
#     -e BEDROCK_RELAY_ALLOW_UNAUTHENTICATED_NON_LOOPBACK=true ... bedrock-relay
# The admin listener (/metrics, /healthz, /readyz; no secrets, no forwarding) is open for probes.
ENV BEDROCK_RELAY_LISTEN=127.0.0.1:8790 \
    BEDROCK_RELAY_ADMIN_LISTEN=0.0.0.0:8791 \
    BEDROCK_RELAY_LOG_FORMAT=json
# No curl in distroless: the binary probes its own /readyz (200, or 503 while draining).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/bedrock-relay", "health"]
# SIGTERM starts the drain (drain_timeout, 30s): give `docker stop` more than that (-t 40).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/bedrock-relay"]
CMD ["serve", "--config", "/etc/bedrock-relay/bedrock-relay.toml"]
