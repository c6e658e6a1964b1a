#!/usr/bin/env bash
# Builds the demo MCP server image the quickstart runs when it finds it
# (`mcpwatch-demo:latest`): the test fixture MCP server (tools echo, add, time over stdio or
# HTTP) as a static binary on `scratch`, built from local files with the local dockerd (no
# registry). Idempotent: a second run only retags.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${1:-mcpwatch-demo:latest}
docker info >/dev/null 2>&1 || { echo "demo-image: Docker does not answer; start dockerd first" >&2; exit 1; }
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --profile fixture -p mcpwatch-mcp-fixture --target x86_64-unknown-linux-gnu
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp target/x86_64-unknown-linux-gnu/fixture/mcp-fixture "$ctx/mcp-fixture"
printf 'FROM scratch\nLABEL org.opencontainers.image.title="mcpwatch demo MCP server"\nCOPY mcp-fixture /mcp-fixture\nUSER 65534:65534\nENTRYPOINT ["/mcp-fixture"]\n' >"$ctx/Dockerfile"
docker build -q -t "$image" "$ctx" >/dev/null
echo "built $image"
