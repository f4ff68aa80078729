#!/usr/bin/env bash
# The demo: a simulated fleet of 3 HSMs, a softcard and a key it protects;
# preloadrun keeps the softcard loaded for an application while one HSM is
# cleared and a new one is enrolled mid-run.
# Usage: scripts/demo.sh BUILD_DIR
set -euo pipefail

build=${1:?usage: demo.sh BUILD_DIR}
hsmsim="$build/src/sim/hsmsim"
preloadrun="$build/src/supervisor/preloadrun"
for program in "$hsmsim" "$preloadrun"; do
  [[ -x $program ]] || { echo "demo: $program not built" >&2; exit 1; }
done

work=$(mktemp -d /tmp/preloadrun-demo.XXXXXX)
export NFAST_KMDATA="$work/kmdata"
export HSMSIM_SOCKET="$work/client.sock"
export HSMSIM_ADMIN_SOCKET="$work/admin.sock"
export XDG_RUNTIME_DIR="$work/run"
mkdir -m 700 "$XDG_RUNTIME_DIR"
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

step "preloadrun keeps democard loaded for an application; module 2 is cleared and module 4 enrolled mid-run"
# The application: shows where its tokens are each time the tokens file changes.
cat >"$work/app.sh" <<'APP'
#!/bin/sh
echo "app: NFAST_NFKM_TOKENSFILE=$NFAST_NFKM_TOKENSFILE CKNFAST_RELOAD_KEYS=$CKNFAST_RELOAD_KEYS"
last=
end=$(($(date +%s) + 4))
while [ "$(date +%s)" -lt "$end" ]; do
  now=$("$PRELOADRUN" status --json | python3 -c '
import json, sys
f = json.load(sys.stdin)["file"]
t = f["tokens"][0]
print("generation %d: %s on %s" % (f["generation"], t["name"], ", ".join(
    "module %d (handle %d)" % (l["module"], l["handle"]) for l in t["loaded"])))')
  if [ "$now" != "$last" ]; then echo "app: tokens file $now"; last=$now; fi
  sleep 0.05
done
echo "app: done, exiting 0"
APP
chmod +x "$work/app.sh"
PRELOADRUN="$preloadrun" "$preloadrun" -s democard --passphrase-file "$work/pass" -- "$work/app.sh" &
app_pid=$!
sleep 1
"$hsmsim" module clear 2
sleep 1
echo "enrolled module $("$hsmsim" module add)"
wait "$app_pid"
echo "preloadrun exited with status $? (the application's)"

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
