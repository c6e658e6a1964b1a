#!/usr/bin/env bash
# Builds the agent and collector container images from static musl binaries built here, with
# the local dockerd (no registry is reached: both images are FROM scratch).
#   scripts/build-images.sh [--debug] [--tag TAG]
# Default: release binaries, tag = the workspace version. --debug reuses the debug build the
# test script makes (stripped of debug info in the image).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
tag=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
while (($#)); do
  case "$1" in
    --debug) profile=debug; shift ;;
    --tag) tag="$2"; shift 2 ;;
    *) echo "usage: $0 [--debug] [--tag TAG]" >&2; exit 64 ;;
  esac
done

musl=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$musl" || rustup target add "$musl"
command -v musl-gcc >/dev/null 2>&1 || {
  echo "musl-gcc is missing: apt-get install musl-tools" >&2; exit 1; }
flags=()
[ "$profile" = release ] && flags=(--release)
cargo build "${flags[@]}" -p mcpwatch-agent -p mcpwatch-collector --bins --target "$musl"

ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "$ca is missing: apt-get install ca-certificates" >&2; exit 1; }
for part in agent collector; do
  ctx="target/images/$part"
  rm -rf "$ctx"
  mkdir -p "$ctx/var"
  cp "$ca" "$ctx/ca-certificates.crt"
  bin="target/$musl/$profile/mcpwatch-$part"
  if command -v strip >/dev/null 2>&1; then
    strip -o "$ctx/mcpwatch-$part" "$bin"
  else
    cp "$bin" "$ctx/mcpwatch-$part"
  fi
  docker build -q -f "deploy/container/Containerfile.$part" -t "mcpwatch-$part:$tag" "$ctx" >/dev/null
  echo "mcpwatch-$part:$tag ($(du -h "$ctx/mcpwatch-$part" | cut -f1) binary)"
done
