# livekit-server in a scratch image, for the end-to-end suite's in-cluster LiveKit (tests/e2e),
# built from the same pinned build module as the local toolchain. From the repository root:
#   docker build -f localcluster/livekit.Dockerfile -t haven-livekit .
# The local cluster makes the same image from the toolchain's binary with buildah
# (localcluster/haven_localcluster/images.py), without this file.
ARG GO_IMAGE=golang:1.26-bookworm
FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY localcluster/gobuild/livekit/ ./
RUN CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags="-s -w" \
      -o /livekit-server github.com/livekit/livekit-server/cmd/server

FROM scratch
COPY --from=build /livekit-server /livekit-server
USER 65532:65532
EXPOSE 7880 7881 7882/udp
ENTRYPOINT ["/livekit-server"]
