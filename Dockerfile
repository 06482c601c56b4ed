# syntax=docker/dockerfile:1
# Static (musl) build of navigator-token-operator on a distroless, non-root base.
#   docker build -t ghcr.io/navigator-dev/navigator-token-operator:0.1.0 .
# x86_64 only; deploy/ pins pods to kubernetes.io/arch=amd64 accordingly.

FROM rust:1.95-bookworm AS build
# musl-gcc for crates that compile C (ring, mimalloc). Debian's version is whatever bookworm ships.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# Cache mounts (BuildKit) only speed up rebuilds; the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin navigator-token-operator \
 && cp target/x86_64-unknown-linux-musl/release/navigator-token-operator /navigator-token-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /navigator-token-operator /navigator-token-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/navigator-token-operator", "run"]
