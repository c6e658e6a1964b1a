#!/usr/bin/env bash
# Installs the mcpwatch collector or agent as a systemd service, the way README's "Installing
# as services" describes: a fixed `mcpwatch` system user and group, the binaries, /etc/mcpwatch
# with modes the service user can read (and nothing more), the PKI, the config and the unit;
# then runs check-config AS THE SERVICE USER, so a unit that cannot read its files is caught
# here and not by systemd's restart loop. Idempotent: existing configs, CA and keys are kept.
#
#   scripts/install.sh collector [--name collector.example.net]
#   scripts/install.sh agent --name web-1 [--certs DIR]
#
# Options: --root DIR installs into a scratch root (tests; no systemctl), --bin-dir DIR takes
# the binaries from DIR (default target/release). The agent's certificates come from --certs
# (ca.crt, agent-NAME.crt, agent-NAME.key copied from the collector host) or, when the CA is
# already in this root's /etc/mcpwatch/pki (collector and agent on one host), are issued here.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 64; }
die() { echo "install.sh: $*" >&2; exit 1; }

role=${1:-}; shift || true
[[ $role == collector || $role == agent ]] || usage
root="" bin_dir="" name="" certs=""
while (($#)); do
  case $1 in
    --root) root=${2:?}; shift 2 ;;
    --bin-dir) bin_dir=${2:?}; shift 2 ;;
    --name) name=${2:?}; shift 2 ;;
    --certs) certs=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
src=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=${bin_dir:-$src/target/release}
root=${root%/}
[[ $role == collector ]] && name=${name:-collector.example.net}
[[ -n $name ]] || die "the agent needs --name (its identity, the certificate's DNS name)"
[[ $name =~ ^[A-Za-z0-9.-]+$ ]] || die "--name must be a DNS name"
binary=$bin_dir/mcpwatch-$role
[[ -x $binary ]] || die "$binary not found: run cargo build --release --workspace --bins"

# 1. The service user. A fixed system user (not DynamicUser): its files in /etc/mcpwatch need
#    an owner group that exists before the service first starts. ARCHITECTURE.md says why.
etc=$root/etc
if ! grep -q '^mcpwatch:' "$etc/passwd"; then
  useradd ${root:+--root "$root"} --system --user-group --no-create-home \
    --home-dir /var/lib/mcpwatch --shell /usr/sbin/nologin mcpwatch
fi
# The agent reaches the Docker socket through the docker group, when the host has one.
if [[ $role == agent ]] && grep -q '^docker:' "$etc/group"; then
  usermod ${root:+--root "$root"} --append --groups docker mcpwatch
fi

# Numeric ids: in a scratch root the host's name service does not know the user.
uid=$(awk -F: '$1 == "mcpwatch" { print $3 }' "$etc/passwd")
gid=$(awk -F: '$1 == "mcpwatch" { print $4 }' "$etc/passwd")

# 2. Binaries.
install -d -m 0755 "$root/usr/bin"
install -m 0755 "$binary" "$root/usr/bin/"

# 3. Configuration directory: root writes, the service group reads.
conf=$etc/mcpwatch
install -d -m 0750 -o 0 -g "$gid" "$conf" "$conf/pki"
# Secret files named by the config (receiver keys, tokens) go here, readable by the group.
install -d -m 0750 -o 0 -g "$gid" "$conf/secrets"

# 4. Certificates. Private keys the service needs: root:mcpwatch 0640. The CA key stays
#    root-only 0600: the service never signs anything with it.
pki=$conf/pki
if [[ $role == collector ]]; then
  [[ -f $pki/ca.crt ]] || "$binary" certs init --dir "$pki" --name "$name" >/dev/null
  key=$pki/collector.key
else
  if [[ -n $certs ]]; then
    install -m 0644 "$certs/ca.crt" "$certs/agent-$name.crt" "$pki/"
    install -m 0600 "$certs/agent-$name.key" "$pki/"
  elif [[ ! -f $pki/agent-$name.crt ]]; then
    [[ -f $pki/ca.key && -x $root/usr/bin/mcpwatch-collector ]] \
      || die "no certificates for $name: pass --certs DIR (from the collector host)"
    "$root/usr/bin/mcpwatch-collector" certs issue-agent --dir "$pki" --name "$name" >/dev/null
  fi
  key=$pki/agent-$name.key
fi
chown "0:$gid" "$key" && chmod 0640 "$key"
[[ ! -f $pki/ca.key ]] || { chown 0:0 "$pki/ca.key"; chmod 0600 "$pki/ca.key"; }

# 5. Config, kept if present (the operator's edits win).
config=$conf/$role.toml
if [[ ! -f $config ]]; then
  sed "s/agent-web-1/agent-$name/g" "$src/config/$role.toml" >"$config.tmp"
  [[ $role == agent ]] || sed -i "s/collector\.example\.net/$name/g" "$config.tmp"
  mv "$config.tmp" "$config"
fi
chown "0:$gid" "$config" && chmod 0640 "$config"

# 6. The unit.
install -d -m 0755 "$etc/systemd/system"
install -m 0644 "$src/systemd/mcpwatch-$role.service" "$etc/systemd/system/"

# 7. check-config as the service user, with the groups it will have under systemd.
groups=$(awk -F: -v g="$gid" '$4 ~ /(^|,)mcpwatch(,|$)/ { printf ",%s", $3 } END { printf ",%s", g }' \
  "$etc/group")
setpriv --reuid="$uid" --regid="$gid" --groups="${groups#,}" \
  "$root/usr/bin/mcpwatch-$role" check-config --config "$config"

if [[ -z $root ]]; then
  systemctl daemon-reload
  echo "installed; edit $config if needed, then: systemctl enable --now mcpwatch-$role"
fi
