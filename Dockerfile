# bedrock-relay: a static binary on distroless, non-root.
#   docker build -t bedrock-relay .
#   docker run --rm -p 127.0.0.1:8790:8790 -e AWS_REGION=us-east-1 bedrock-relay
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev cmake make perl clang
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin bedrock-relay \
 && strip target/release/bedrock-relay

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/bedrock-relay /usr/local/bin/bedrock-relay
COPY config/bedrock-relay.toml /etc/bedrock-relay/bedrock-relay.toml
USER nonroot:nonroot
EXPOSE 8790 8791
# Inside a container the relay must listen on all interfaces to be reachable from the pod /
# task network; bind the published port to loopback on the host (as above) or keep the
# relay as a sidecar that only its application can reach.
ENV BEDROCK_RELAY_LISTEN=0.0.0.0:8790 \
    BEDROCK_RELAY_ADMIN_LISTEN=0.0.0.0:8791 \
    BEDROCK_RELAY_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/bedrock-relay"]
CMD ["serve", "--config", "/etc/bedrock-relay/bedrock-relay.toml"]
