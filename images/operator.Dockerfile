# The llmfleet operator image: the LLMDeployment operator (`llmfleet operator`).
#   docker build -f images/operator.Dockerfile -t ghcr.io/llmfleet/operator:0.1.0 .
# Runs as 65532:65532 (numeric, so the kubelet's runAsNonRoot check passes) with ENTRYPOINT
# llmfleet. BASE: an image with python3 (3.11 or newer) and its venv module; the final stage is
# BASE plus the venv in /opt/llmfleet. With the repository as context, pip builds
# llmfleet[operator] and fetches its dependencies; images/build.sh instead passes a context with
# prebuilt wheels/ and its own Debian base (images/install-venv.sh says how the two differ, and
# what the venv is trimmed of). Builds with the legacy builder too (no RUN --mount, no heredocs).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE} AS build
LABEL io.llmfleet.stage=build
COPY . /src
RUN sh /src/images/install-venv.sh /opt/llmfleet operator /src llmfleet llmfleet_operator

FROM ${BASE}
COPY --from=build /opt/llmfleet /opt/llmfleet
ENV PATH=/opt/llmfleet/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LANG=C.UTF-8 HOME=/tmp
USER 65532:65532
ENTRYPOINT ["llmfleet"]
CMD ["operator"]
