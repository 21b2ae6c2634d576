#!/bin/sh
# Installs what kiln's build, demo and tests need (Debian 12, as root).
# Idempotent: does nothing when every package is already present.
set -e
PKGS="build-essential pkg-config clang libzmq3-dev libczmq-dev libmsgpack-dev liblmdb-dev
 libssl-dev libarchive-dev libcurl4-openssl-dev libjansson-dev libcmocka-dev zlib1g-dev libzstd-dev
 skopeo umoci docker-registry qemu-user-static binfmt-support busybox-static
 apache2-utils curl jq perl zstd podman"
missing=""
for p in $PKGS; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: need root to install:$missing" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq $missing >/dev/null
fi
# arm64 packages are used by the fixtures (busybox-static:arm64).
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	dpkg --add-architecture arm64
	apt-get update -qq
fi
# QEMU user emulation needs binfmt_misc mounted.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
	mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
	update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi
exit 0
