#!/usr/bin/env bash
# The SealRPC demo: a secret-store daemon with per-method access rules.
#   examples/demo.sh [BUILD_DIR]      (default: build/release)
# Needs root to show other users being refused (it runs clients as uids 65534 and
# 65533 with setpriv).
set -euo pipefail
BUILD=${1:-build/release}
SERVER=$BUILD/examples/vault/vault_server
CLIENT=$BUILD/examples/vault/vault_client
WORK=$(mktemp -d /tmp/sealrpc-demo-XXXXXX)   # mode 0700
AUDIT=$WORK/audit.jsonl
POLICY=$WORK/vault.policy
: > "$POLICY"
chmod 0600 "$POLICY"
as_user() { local uid=$1; shift; setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@" || true; }

# 65534 (nobody) is admitted (socket ACL + connection allow-list) but holds no grant
# beyond the open methods; 65533 gets through the file permissions (ACL) only.
"$SERVER" --audit-file "$AUDIT" --policy "$POLICY" --grant-uid 65534 --acl-uid 65533 > "$WORK/server.out" 2> "$WORK/server.err" &
SERVER_PID=$!
cleanup() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
for _ in $(seq 100); do [ -s "$WORK/server.out" ] && break; sleep 0.05; done
SOCK=$(head -n1 "$WORK/server.out")
step "server listening on a private endpoint: $SOCK"
ls -ld "$(dirname "$SOCK")" "$SOCK" | sed 's/^/   /'

step "as the owner ($(id -un), uid $(id -u)): calls succeed"
run "$CLIENT" "$SOCK" whoami
run "$CLIENT" "$SOCK" put db-password 's3cr3t!'
run "$CLIENT" "$SOCK" get db-password
run "$CLIENT" "$SOCK" list

step "as uid 65534 (admitted, not granted): open methods work, the secret is refused"
run as_user 65534 "$CLIENT" "$SOCK" whoami
run as_user 65534 "$CLIENT" "$SOCK" list
run as_user 65534 "$CLIENT" "$SOCK" get db-password
run as_user 65534 "$CLIENT" "$SOCK" wipe-all

step "as uid 65533 (file permissions let it in, the connection allow-list does not)"
run as_user 65533 "$CLIENT" "$SOCK" list

step "operator grants uid 65534 read access in the policy file and sends SIGHUP"
echo 'method Vault.get same-user uids=65534' | tee "$POLICY"
kill -HUP "$SERVER_PID"; sleep 0.3
run as_user 65534 "$CLIENT" "$SOCK" get db-password
run as_user 65534 "$CLIENT" "$SOCK" put db-password overwritten

step "audit log (JSON lines; also sent to syslog AUTHPRIV)"
sed 's/^/   /' "$AUDIT"
