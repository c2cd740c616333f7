# The llmfleet engine image (for users; not built on the CI machine): vLLM's own image with the
# llmfleet launcher added to its Python, so engine pods run `llmfleet launch` -> `vllm serve`.
#   docker build -f images/engine.Dockerfile -t ghcr.io/llmfleet/engine:v0.1.0-vllm0.32.0 .
# BASE pins the vLLM release the launcher's flags are checked against (launcher/argv.py). The
# install is constrained to every distribution BASE already has (`pip list --format=freeze`), so
# it adds llmfleet's few missing dependencies (cel-python, ...) and fails rather than replace
# vllm, torch or anything else. A context with wheels/*.whl (as images/build.sh makes) installs
# from those alone; otherwise pip builds the repository. Runs as 65532:65532 with HOME=/tmp:
# with a read-only root filesystem, mount an emptyDir there for vLLM's and torch's caches.
ARG BASE=vllm/vllm-openai:v0.32.0
FROM ${BASE}
COPY . /tmp/llmfleet-src
RUN set -eu; src=/tmp/llmfleet-src; \
    python3 -m pip list --format=freeze --exclude-editable > /tmp/installed.txt; \
    from="$src"; \
    if ls "$src"/wheels/*.whl >/dev/null 2>&1; then \
        from="--no-index --find-links $src/wheels llmfleet"; fi; \
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir -c /tmp/installed.txt $from; \
    rm -rf "$src" /tmp/installed.txt; \
    llmfleet launch --help >/dev/null
ENV HOME=/tmp
USER 65532:65532
ENTRYPOINT ["llmfleet"]
CMD ["launch"]
