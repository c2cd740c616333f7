#!/bin/sh
# Makes the Debian root filesystem that the llmfleet images build FROM on a machine that can
# reach Debian's package archive but no container registry (a stand-in for python:3.11-slim).
#   sh images/base.sh SUITE OUT.tar        # as root; about 1.5 min; OUT.tar is a rootfs tarball
# Called by images/build.sh, which keys the tarball by SUITE and this file's hash and imports it
# with `docker import`. Debian 12 (bookworm) ships Python 3.11, the host Python the wheels are
# built with.
set -eu
suite="$1"
out="$2"
mirror="${LLMFLEET_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
root="$(mktemp -d "${out}.rootfs.XXXXXX")"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$root" "$mirror" >&2
# What a container never reads: package lists and caches, docs, man pages, translations.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/var/log/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root"/usr/share/info/* "$root"/usr/share/locale/*
tar -C "$root" --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out"
