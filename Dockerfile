# syntax=docker/dockerfile:1
# The skrfs image: one static binary (CGO_ENABLED=0) on distroless/static.
#
#   docker build -t skrfs:latest --build-arg VERSION=$(git describe --always --dirty) .
#
# skrfs mounts with mount(2) directly when it runs as root (go-fuse
# DirectMount), so the image needs no fusermount3 and no libfuse: the
# container runs as root and privileged (ACI: securityContext.privileged;
# Kubernetes: privileged, or CAP_SYS_ADMIN with /dev/fuse) so that it may
# open /dev/fuse, mount, and share the mount through the pod's volume.
# `skrfs run` starts the application in this container's mount namespace,
# so for that pattern build FROM your application's image instead (see
# examples/aks-kata-cc/run-wrapper.yaml).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/skrfs ./cmd/skrfs

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/skrfs /skrfs
# root: mount(2) needs CAP_SYS_ADMIN; distroless/static's default user.
USER 0:0
ENTRYPOINT ["/skrfs"]
CMD ["--help"]
