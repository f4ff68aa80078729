#!/usr/bin/env bash
# The demo: a simulated fleet of 3 HSMs, a softcard, a key protected by it,
# a module cleared mid-run, and the fleet shown before and after.
# Usage: scripts/demo.sh BUILD_DIR
set -euo pipefail

build=${1:?usage: demo.sh BUILD_DIR}
hsmsim="$build/src/sim/hsmsim"
[[ -x $hsmsim ]] || { echo "demo: $hsmsim not built" >&2; exit 1; }

work=$(mktemp -d /tmp/preloadrun-demo.XXXXXX)
export NFAST_KMDATA="$work/kmdata"
export HSMSIM_SOCKET="$work/client.sock"
export HSMSIM_ADMIN_SOCKET="$work/admin.sock"
server_pid=
cleanup() {
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
[[ -t 1 && -z ${NO_COLOR:-} ]] || step() { printf '\n== %s\n' "$*"; }

step "Starting hsmsim with 3 modules (world in $NFAST_KMDATA)"
mkfifo "$work/ready"
"$hsmsim" serve --modules 3 --init-delay-ms 500 >"$work/ready" 2>"$work/hsmsim.log" &
server_pid=$!
read -r -t 10 ready <"$work/ready" || { echo "demo: hsmsim did not start:" >&2; cat "$work/hsmsim.log" >&2; exit 1; }
echo "$ready"

step "Creating softcard 'democard'"
printf 'correct horse battery staple\n' >"$work/pass"
chmod 600 "$work/pass"
"$hsmsim" softcard create democard --passphrase-file "$work/pass"

step "Generating an EC P-256 key protected by the softcard, and a module-protected AES key"
"$hsmsim" key generate --type ec-p256 --label demo-ec --id 01 --protect softcard:democard --passphrase-file "$work/pass"
"$hsmsim" key generate --type aes-256 --label demo-aes --protect module
"$hsmsim" key list

step "The fleet"
"$hsmsim" module list

step "Clearing module 2 (an HSM reset)"
"$hsmsim" module clear 2
"$hsmsim" module list
sleep 0.8
step "Module 2 after its initialisation delay: usable again, new generation"
"$hsmsim" module list

step "A wrong passphrase is refused, and nothing changes"
printf 'wrong\n' >"$work/wrong"
if "$hsmsim" key generate --type ec-p256 --label never --protect softcard:democard --passphrase-file "$work/wrong"; then
  echo "demo: a wrong passphrase was accepted" >&2; exit 1
fi

step "Summary"
summary() {
  python3 -c '
import json, sys
kind = sys.argv[1]
data = json.load(sys.stdin)
if kind == "modules":
    print("fleet:     " + ", ".join("module %d %s (generation %d)" % (m["number"], m["state"], m["generation"]) for m in data))
elif kind == "softcards":
    print("softcards: " + ", ".join(t["name"] for t in data))
else:
    print("keys:      " + ", ".join("%s (%s, %s)" % (k["label"], k["type"], k["protection"]) for k in data))
' "$1"
}
"$hsmsim" module list --json | summary modules
"$hsmsim" softcard list --json | summary softcards
"$hsmsim" key list --json | summary keys
echo "demo: done"
