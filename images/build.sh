#!/usr/bin/env bash
# Builds llmfleet's container images on this machine (no container registry needed).
#
#   bash images/build.sh [--save DIR] [NAME...]
#
# NAME: pause, operator, gateway, engine-sim (default: all four, in that order).
# stdout: one image reference per NAME, in the order given, one per line, and nothing else:
#   pause       llmfleet/pause:VERSION
#   operator    ghcr.io/llmfleet/operator:VERSION
#   gateway     ghcr.io/llmfleet/gateway:VERSION
#   engine-sim  ghcr.io/llmfleet/engine-sim:VERSION
# where VERSION is pyproject.toml's project version (= the chart's appVersion).
# --save DIR: also writes DIR/NAME.tar (`docker save` of that reference; rewritten only when the
#   image changed, its image id kept in DIR/NAME.tar.id), for a node's own containerd:
#   `ctr -n k8s.io images import DIR/NAME.tar`.
# stderr: progress. Exit status: 0 when every image is there, else non-zero.
#
# Each step is skipped when its cached result is there, so a warm run takes seconds:
# 1. installs Debian's docker.io and debootstrap when missing, and starts dockerd in the
#    background when no daemon answers (log: $LLMFLEET_CACHE/docker/dockerd.log; under flock,
#    so concurrent callers start one). dockerd is left running for the next call.
# 2. the base: images/base.sh (debootstrap bookworm with python3) -> a rootfs tarball
#    $LLMFLEET_CACHE/images/base-bookworm-HASH.tar, imported as llmfleet/base:bookworm-HASH.
# 3. wheels, built with the host's Python 3.11 (Debian 12's): the dependencies keyed by
#    pyproject.toml, llmfleet's own wheel by pyproject.toml, README.md and the sources.
# 4. `docker build` (the legacy builder) of each image whose label io.llmfleet.inputs differs
#    from the hash of its inputs, from a context of images/ plus wheels/.
# Users with a registry build the Dockerfiles directly, e.g.
#   docker build -f images/operator.Dockerfile -t ghcr.io/llmfleet/operator:0.1.0 .
# Env: LLMFLEET_CACHE (default ~/.cache/llmfleet), PYTHON (default python3; 3.11 needed).
set -euo pipefail
exec 3>&1 1>&2 # stdout carries only the references (fd 3)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
python="${PYTHON:-python3}"
suite=bookworm
export DOCKER_BUILDKIT=0 # Debian's docker.io has no buildx; the Dockerfiles need none

save_dir=""
names=()
while [ $# -gt 0 ]; do
    case "$1" in
    --save) save_dir="$2"; shift 2 ;;
    --save=*) save_dir="${1#--save=}"; shift ;;
    pause | operator | gateway | engine-sim) names+=("$1"); shift ;;
    *) echo "usage: images/build.sh [--save DIR] [pause|operator|gateway|engine-sim ...]"; exit 2 ;;
    esac
done
[ ${#names[@]} -gt 0 ] || names=(pause operator gateway engine-sim)

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n1)"
mkdir -p "$cache/images" "$cache/docker"
digest() { sha256sum "$@" | sha256sum | cut -c1-16; }
log() { echo "images/build.sh: $*" >&2; }

docker_up() {
    sh "$repo/tests/tools/install-deb.sh" dockerd docker.io >/dev/null
    docker info >/dev/null 2>&1 && return 0
    (
        flock 9
        docker info >/dev/null 2>&1 && exit 0
        pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
        if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
            log "starting dockerd (log: $cache/docker/dockerd.log)"
            setsid dockerd >>"$cache/docker/dockerd.log" 2>&1 </dev/null 3>&- 9>&- &
        fi
        for _ in $(seq 120); do
            docker info >/dev/null 2>&1 && exit 0
            sleep 0.5
        done
        log "dockerd did not answer in 60 s; the end of its log:"
        tail -n 20 "$cache/docker/dockerd.log" >&2
        exit 1
    ) 9>"$cache/docker/dockerd.lock"
}

has_image() { docker image inspect "$1" >/dev/null 2>&1; }

base_image() { # prints the base image reference, making it when missing
    local key tarball ref
    key="$suite-$(cd "$repo/images" && digest base.sh)"
    tarball="$cache/images/base-$key.tar"
    ref="llmfleet/base:$key"
    if ! has_image "$ref"; then
        if [ ! -s "$tarball" ]; then
            sh "$repo/tests/tools/install-deb.sh" debootstrap >/dev/null
            log "debootstrap $suite -> $tarball"
            sh "$repo/images/base.sh" "$suite" "$tarball"
        fi
        log "docker import $ref"
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
            "$tarball" "$ref" >/dev/null
    fi
    echo "$ref"
}

source_files() { # what llmfleet's wheel is built from, relative to the repository
    (cd "$repo" && find contract runtime operator gateway fleetsim cli -type f \
        \( -name '*.py' -o -name py.typed \) -not -path '*/__pycache__/*' | LC_ALL=C sort)
}

stage_source() { # copies the wheel's inputs to a fresh folder (the build writes into it)
    local dir
    dir="$(mktemp -d "$cache/images/src.XXXXXX")"
    (cd "$repo" && { echo pyproject.toml; echo README.md; source_files; } | tar -cf - -T -) |
        tar -C "$dir" -xf -
    echo "$dir"
}

check_python() {
    "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
        log "$python is not Python 3.11 (the Debian 12 base's): set PYTHON"
        exit 1
    }
}

wheels() { # sets deps_dir and project_dir, building what is missing
    local deps_key src_key
    deps_key="$(cd "$repo" && digest pyproject.toml)-${base##*:}"
    # shellcheck disable=SC2046 # the names have no spaces: split them
    src_key="$(cd "$repo" && digest pyproject.toml README.md $(source_files))"
    deps_dir="$cache/images/wheels-deps-$deps_key"
    project_dir="$cache/images/wheels-llmfleet-$src_key"
    local old # wheels of other sources or dependency sets are not used again
    for old in "$cache"/images/wheels-deps-* "$cache"/images/wheels-llmfleet-*; do
        [ "$old" = "$deps_dir" ] || [ "$old" = "$project_dir" ] || rm -rf "$old"
    done
    [ -d "$deps_dir" ] && [ -d "$project_dir" ] && return 0
    check_python
    src="$(stage_source)"
    if [ ! -d "$deps_dir" ]; then
        log "pip wheel llmfleet's dependencies -> $deps_dir"
        tmp="$(mktemp -d "$deps_dir.XXXXXX")"
        "$python" -m pip wheel -q --wheel-dir "$tmp" "${src}[operator,gateway,sim]"
        mkdir "$tmp/project"
        mv "$tmp"/llmfleet-*.whl "$tmp/project/"
        top_up "$tmp" "$tmp/project"
        rm -rf "$tmp/project"
        mv "$tmp" "$deps_dir"
    fi
    if [ ! -d "$project_dir" ]; then
        log "pip wheel llmfleet -> $project_dir"
        tmp="$(mktemp -d "$project_dir.XXXXXX")"
        "$python" -m pip wheel -q --no-deps --wheel-dir "$tmp" "$src"
        mv "$tmp" "$project_dir"
    fi
    rm -rf "$src"
}

# The host's Python 3.11 is not the base's to the patch level, and a marker such as redis's
# `async-timeout; python_full_version < "3.11.3"` is then true for the base only. So the base's
# own pip checks the set offline and, when something is missing, adds it from the index, the
# versions already there pinned (the host's CA bundle mounted: a TLS-inspecting proxy's CA is
# not in the base).
top_up() { # WHEELS PROJECT: the dependency and llmfleet wheel folders
    local pip="python3 -m venv /tmp/venv && /tmp/venv/bin/pip -q --disable-pip-version-check"
    local want cert="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
    # By file: an unrelated "llmfleet" on PyPI would otherwise do.
    want="/p/$(cd "$2" && echo llmfleet-*.whl)[operator,gateway,sim]"
    if docker run --rm -v "$1:/w" -v "$2:/p:ro" "$base" sh -c \
        "$pip install --dry-run --no-index --find-links /w --find-links /p '$want'" \
        >/dev/null 2>&1; then
        return 0
    fi
    log "adding the wheels the base's Python $suite needs beyond the host's"
    docker run --rm -v "$1:/w" -v "$2:/p:ro" -v "$cert:/etc/ssl/certs/ca-certificates.crt:ro" \
        -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$base" sh -c \
        "for w in /w/*.whl; do echo \"\$w\" | cut -d/ -f3 | cut -d- -f1-2 | sed 's/-/==/'
        done >/tmp/c &&
        $pip wheel -c /tmp/c --wheel-dir /w --find-links /w --find-links /p '$want' &&
        rm -f /w/llmfleet-*.whl"
}

reference() {
    case "$1" in
    pause) echo "llmfleet/pause:$version" ;;
    *) echo "ghcr.io/llmfleet/$1:$version" ;;
    esac
}

build() { # NAME: builds the image unless one with the same inputs exists
    local name="$1" ref inputs arg
    ref="$(reference "$name")"
    if [ "$name" = pause ]; then
        inputs="$(cd "$repo/images" && digest pause.Dockerfile pause.c)-$base"
        arg="BUILDER=$base"
    else
        wheels
        inputs="$(cd "$repo/images" && digest "$name.Dockerfile" install-venv.sh)"
        inputs="$inputs-$(basename "$deps_dir")-$(basename "$project_dir")-$base"
        arg="BASE=$base"
    fi
    inputs="$(echo "$inputs" | sha256sum | cut -c1-16)"
    if [ "$(docker image inspect -f '{{index .Config.Labels "io.llmfleet.inputs"}}' "$ref" \
        2>/dev/null)" = "$inputs" ]; then
        log "$ref is up to date"
        echo "$ref" >&3
        return 0
    fi
    ctx="$(mktemp -d "$cache/images/context.XXXXXX")"
    mkdir "$ctx/images"
    cp "$repo"/images/*.Dockerfile "$repo"/images/*.sh "$repo"/images/pause.c "$ctx/images/"
    if [ "$name" != pause ]; then
        mkdir "$ctx/wheels"
        cp -l "$deps_dir"/*.whl "$project_dir"/*.whl "$ctx/wheels/" 2>/dev/null ||
            cp "$deps_dir"/*.whl "$project_dir"/*.whl "$ctx/wheels/"
    fi
    log "docker build $ref"
    local start=$SECONDS
    docker build -q --force-rm -f "$ctx/images/$name.Dockerfile" --build-arg "$arg" \
        --label "io.llmfleet.inputs=$inputs" \
        --label "org.opencontainers.image.version=$version" \
        --label "org.opencontainers.image.source=https://github.com/llmfleet/llmfleet" \
        -t "$ref" "$ctx" >/dev/null
    rm -rf "$ctx"
    # The build stage and the image this one replaced, now untagged (only images of ours).
    docker image prune -f --filter label=io.llmfleet.stage=build >/dev/null
    docker image prune -f --filter label=io.llmfleet.inputs >/dev/null
    log "built $ref in $((SECONDS - start)) s"
    echo "$ref" >&3
}

save() { # NAME DIR: docker save, unless DIR/NAME.tar already holds this image
    local ref id out="$2/$1.tar"
    ref="$(reference "$1")"
    id="$(docker image inspect -f '{{.Id}}' "$ref")"
    if [ -s "$out" ] && [ "$(cat "$out.id" 2>/dev/null)" = "$id" ]; then
        return 0
    fi
    log "docker save $ref -> $out"
    docker save -o "$out.tmp" "$ref"
    mv "$out.tmp" "$out"
    echo "$id" >"$out.id"
}

ctx="" src="" tmp=""
trap 'rm -rf "$ctx" "$src" "$tmp"' EXIT # what a failed step leaves
docker_up
exec 8>"$cache/images/build.lock"
flock 8 # one build at a time: concurrent callers wait, then find the images built
base="$(base_image)"
for name in "${names[@]}"; do
    build "$name"
done
if [ -n "$save_dir" ]; then
    mkdir -p "$save_dir"
    for name in "${names[@]}"; do
        save "$name" "$save_dir"
    done
fi
