# The pod sandbox ("pause") image for a kubelet node with no registry to pull from: a static
# C program (images/pause.c) that sleeps until SIGTERM, on an empty image, as 65532:65532.
#   docker build -f images/pause.Dockerfile -t llmfleet/pause:0.1.0 .
# BUILDER: any Debian-like image; gcc and libc6-dev are apt-installed when it lacks them
# (images/build.sh passes its debootstrap base). No RUN --mount or heredocs: the legacy builder
# of Debian's docker.io builds it.
ARG BUILDER=debian:bookworm-slim
FROM ${BUILDER} AS build
RUN (command -v gcc >/dev/null && test -e "$(gcc -print-file-name=libc.a)") \
    || (apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends gcc libc6-dev >/dev/null)
COPY images/pause.c /pause.c
RUN gcc -Os -static -s -Wall -Werror -o /pause /pause.c

FROM scratch
COPY --from=build /pause /pause
USER 65532:65532
ENTRYPOINT ["/pause"]
