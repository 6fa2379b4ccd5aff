# quiesce's two images, x86_64 (linux/amd64) only for now:
#
#   docker build -t quiesce:0.1.0 .                          the drainer (the Helm chart's image)
#   docker build --target init -t quiesce-init:0.1.0 .       quiesce-init, to COPY --from= it
#
# `podman build` / `buildah build` read this file too. Pass --build-arg GIT_COMMIT=$(git rev-parse
# HEAD) for the revision label and `quiesce --version` (.git is not sent to the builder).
#
# Without a Docker daemon or registry access, scripts/image builds the same final stages with
# buildah from a build stage made on the host by the same build/stage.sh (see build/README.md).

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG VERSION=0.1.0
ARG GIT_COMMIT=unknown
ARG SOURCE=https://github.com/quiesce/quiesce

# Static glibc binaries (glibc >= 2.34 resolves names without NSS modules on disk), the CA
# bundle and the user database, laid out as /out/drainer and /out/init.
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
ARG GIT_COMMIT
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    QUIESCE_GIT_COMMIT=${GIT_COMMIT} build/stage.sh /out

# What both images share: nothing but what the build stage made, the chart's user
# (podSecurityContext 65532:65532), and the OCI labels.
FROM scratch AS base
ARG VERSION
ARG GIT_COMMIT
ARG SOURCE
USER 65532:65532
LABEL org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"

# quiesce-init alone, for `COPY --from=ghcr.io/quiesce/quiesce-init:0.1.0 /quiesce-init /quiesce-init`
# in an application's image. Its entrypoint only makes `docker run IMAGE --version` work.
FROM base AS init
COPY --from=build /out/init/ /
ENTRYPOINT ["/quiesce-init"]
LABEL org.opencontainers.image.title="quiesce-init" \
      org.opencontainers.image.description="PID-1 supervisor that drains before the app stops; copy /quiesce-init into your image"

# The drainer: the quiesce binary on scratch with Mozilla's CA roots. The default target.
FROM base AS drainer
COPY --from=build /out/drainer/ /
ENTRYPOINT ["/quiesce"]
LABEL org.opencontainers.image.title="quiesce" \
      org.opencontainers.image.description="quiesce: lifecycle-hook drainer and node-drain toolkit for Kubernetes"
