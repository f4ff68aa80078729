#!/usr/bin/env bash
# The demo, end to end: a simulated fleet of 3 HSMs, a softcard and an EC key
# that it protects. A real PKCS#11 application (scripts/demo_client.py, with
# PyKCS11) runs under `preloadrun -s democard` and signs in a loop through
# libpreloadrun-pkcs11 while one HSM is cleared and a new one is enrolled.
# The summary shows, from the HSMs' own counters and from the logs, that the
# application never saw an error and that both HSMs served its signatures
# again, without a restart.
# Usage: scripts/demo.sh BUILD_DIR      exit status 0 only when all of that held
set -euo pipefail

usage="usage: demo.sh BUILD_DIR"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(cd "${1:?$usage}" && pwd)
hsmsim="$build/src/sim/hsmsim"
preloadrun="$build/src/supervisor/preloadrun"
module="$build/src/pkcs11/libpreloadrun-pkcs11.so"
client="$here/demo_client.py"
for program in "$hsmsim" "$preloadrun"; do
  [[ -x $program ]] || { echo "demo: $program not built" >&2; exit 1; }
done
[[ -f $module ]] || { echo "demo: $module not built" >&2; exit 1; }
python=
for candidate in /usr/bin/python3 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import PyKCS11' 2>/dev/null; then
    python=$(command -v "$candidate")
    break
  fi
done
[[ -n $python ]] || { echo "demo: needs python3 with PyKCS11 (Debian: python3-pykcs11)" >&2; exit 1; }

duration=10 # seconds of signing
clear_at=2500 # ms after the first signature: module 2 is cleared
add_at=5500   # ms after the first signature: a module is enrolled

if [[ -t 1 && -z ${NO_COLOR:-} ]]; then
  bold=$'\e[1m' reset=$'\e[0m' colour=1
else
  bold='' reset='' colour=0
fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
say() { printf 'demo:   %s\n' "$*"; }

# Everything lives in one temporary directory, removed at the end; every
# process started here is stopped, also on Ctrl-C and on failure.
work='' hsmsim_pid='' prun_pid='' tee_pid=''
alive() { # running (not a zombie)?
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}
stop() { # TERM, then KILL after 5 s; then reap
  local i
  [[ -n $1 ]] || return 0
  kill -TERM "$1" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$1" || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local status=$? pid i
  trap - EXIT INT TERM HUP
  set +e
  [[ -n $work ]] || exit "$status"
  stop "$prun_pid"
  # The client is preloadrun's child and stops with it; should preloadrun
  # have died without stopping it, stop it here.
  pid=$(cat "$work/client.ready" 2>/dev/null)
  if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && grep -qaF "$work" "/proc/$pid/cmdline"; then
    kill -TERM "$pid"
    for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  fi
  stop "$tee_pid"
  stop "$hsmsim_pid"
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
work=$(mktemp -d "${TMPDIR:-/tmp}/preloadrun-demo.XXXXXX")

unset CKNFAST_LOADSHARING CKNFAST_RELOAD_KEYS NFAST_NFKM_TOKENSFILE \
  PRELOADRUN_PKCS11_LOG PRELOADRUN_PKCS11_LOG_LEVEL PRELOADRUN_PKCS11_RETRY_WINDOW
export NFAST_KMDATA="$work/kmdata"
export HSMSIM_SOCKET="$work/client.sock"
export HSMSIM_ADMIN_SOCKET="$work/admin.sock"
export XDG_RUNTIME_DIR="$work/run" # where preloadrun puts the tokens file
mkdir -m 700 "$XDG_RUNTIME_DIR"

now_ms() { local t=${EPOCHREALTIME//[!0-9]/}; now=$((t / 1000 - t0)); }
seconds() { local tenths=$((($1 + 50) / 100)); printf '%d.%d' $((tenths / 10)) $((tenths % 10)); }
snapshot() { "$hsmsim" module list --json >"$work/modules-$1.json"; }
module_ops() { # ops of module $1 now, or in snapshot $2; -1 if it has none
  if [[ -n ${2:-} ]]; then cat "$work/modules-$2.json"; else "$hsmsim" module list --json; fi |
    "$python" -c '
import json, sys
print(next((m["ops"] for m in json.load(sys.stdin) if m["number"] == int(sys.argv[1])), -1))' "$1"
}
# Wait until module $1 serves (its ops grow past $2), at the latest until
# $3 ms; served_at says when. False when it did not, or the client ended.
wait_serving() {
  local ops
  while now_ms && ((now < $3)) && alive "$prun_pid"; do
    ops=$(module_ops "$1") || ops=-1
    if ((ops > $2)); then
      now_ms
      served_at=$now
      return 0
    fi
    sleep 0.1
  done
  return 1
}
sleep_until() { # $1 ms after the first signature; false if the client ended
  while now_ms && ((now < $1)); do
    alive "$prun_pid" || return 1
    sleep 0.05
  done
}

t0=0
step "hsmsim: a fleet of 3 simulated HSMs"
"$hsmsim" serve --kmdata "$NFAST_KMDATA" --modules 3 --init-delay-ms 300 --op-latency-ms 1 \
  >"$work/hsmsim.out" 2>"$work/hsmsim.log" &
hsmsim_pid=$!
for ((i = 0; ; i++)); do
  grep -q ready "$work/hsmsim.out" && break
  if ! alive "$hsmsim_pid" || ((i > 100)); then
    echo "demo: hsmsim did not start:" >&2
    cat "$work/hsmsim.log" >&2
    exit 1
  fi
  sleep 0.1
done
cat "$work/hsmsim.out"

step "A softcard, democard, and an EC P-256 key, demo-ec, that it protects"
printf 'correct horse battery staple\n' >"$work/pass"
chmod 600 "$work/pass"
"$hsmsim" softcard create democard --passphrase-file "$work/pass"
"$hsmsim" key generate --type ec-p256 --label demo-ec --id 01 --protect softcard:democard \
  --passphrase-file "$work/pass"

step "preloadrun runs a PKCS#11 client that signs for ${duration} s, while HSMs change"
echo "\$ preloadrun -s democard --passphrase-file pass -- demo_client.py --token democard --label demo-ec"
say "module 2 will be cleared at $(seconds $clear_at) s and a new module enrolled at $(seconds $add_at) s"
# preloadrun's log and the PKCS#11 module's (both on stderr) are shown as
# they come, and kept for the summary.
mkfifo "$work/log.fifo"
tee "$work/run.log" <"$work/log.fifo" >&2 &
tee_pid=$!
PRELOADRUN_PKCS11_LOG=stderr PRELOADRUN_PKCS11_LOG_LEVEL=info \
  "$preloadrun" -s democard --passphrase-file "$work/pass" -- \
  "$python" "$client" --module "$module" --token democard --label demo-ec \
  --pin "not the passphrase" --seconds "$duration" \
  --ready-file "$work/client.ready" --result-file "$work/client.json" 2>"$work/log.fifo" &
prun_pid=$!

clear_ms='' back_ms='' new='' add_ms='' new_ms=''
for ((i = 0; i < 300; i++)); do
  [[ -e $work/client.ready ]] && break
  alive "$prun_pid" || break
  sleep 0.05
done
if [[ -e $work/client.ready ]]; then
  t0=0 && now_ms && t0=$now
  snapshot start
  if sleep_until "$clear_at"; then
    "$hsmsim" module clear 2 >/dev/null
    now_ms && clear_ms=$now
    say "$(seconds "$clear_ms") s: hsmsim module clear 2 (an HSM reset: its objects are gone)"
    snapshot clear
    if wait_serving 2 "$(module_ops 2 clear)" "$((add_at - 100))"; then
      back_ms=$((served_at - clear_ms))
      say "$(seconds "$served_at") s: module 2 signs again, $(seconds "$back_ms") s after its clear"
    fi
  fi
  if sleep_until "$add_at"; then
    new=$("$hsmsim" module add)
    now_ms && add_ms=$now
    say "$(seconds "$add_ms") s: hsmsim module add: module $new enrolled"
    snapshot add
    if wait_serving "$new" 0 "$((duration * 1000 + 1000))"; then
      new_ms=$((served_at - add_ms))
      say "$(seconds "$served_at") s: module $new signs, $(seconds "$new_ms") s after its enrolment"
    fi
  fi
fi
status=0
wait "$prun_pid" || status=$?
prun_pid=
wait "$tee_pid" || true
tee_pid=
if ((status == 130 || status == 143)); then # Ctrl-C reached the client, which has the terminal
  echo "demo: interrupted" >&2
  exit "$status"
fi
snapshot end

step "The fleet at the end (hsmsim module list)"
say "the client has exited; preloadrun unloaded democard (and the key loaded under it), then"
say "exited with the client's status: no objects are left on any HSM (OBJECTS)"
"$hsmsim" module list

step "preloadrun refuses a wrong passphrase"
printf 'wrong\n' >"$work/wrong"
chmod 600 "$work/wrong"
refused=0
"$preloadrun" -s democard --passphrase-file "$work/wrong" -- true 2>"$work/wrong.log" || refused=$?
sed 's/^/  /' "$work/wrong.log"
say "exit status $refused (125: preloadrun failed; the command did not run)"

step "Summary"
"$python" - "$work" "$status" "$colour" "$refused" "$clear_ms" "$back_ms" "$new" "$add_ms" \
  "$new_ms" <<'PY'
import json, os, re, sys

work, status, colour, refused = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
clear_ms, back_ms, new, add_ms, new_ms = (int(a) if a else None for a in sys.argv[5:10])
ok = []


def load(name):
    try:
        with open(os.path.join(work, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def modules(name):
    return {m["number"]: m for m in load(f"modules-{name}.json") or []}


def sec(ms):
    tenths = (ms + 50) // 100  # as the lines printed during the run
    return f"{tenths // 10}.{tenths % 10} s"


def line(what, text):
    print(f"  {what:<11} {text}")


start, at_clear, at_add, end = (modules(s) for s in ("start", "clear", "add", "end"))
client = load("client.json") or {}
made, errors = client.get("signatures", 0), client.get("errors", -1)
if client:
    line("client", f"{made} signatures made and verified in {client['seconds']} s, "
         f"{errors} errors, exit status {status}")
else:
    line("client", f"did not run to its end (exit status {status}): see its output above")
ok.append(made > 0 and errors == 0 and status == 0)

for n in sorted(end):
    m = end[n]
    if n == new:
        before, when = at_add.get(n, {}).get("ops", 0), "at enrolment"
    else:
        before, when = at_clear.get(n, {}).get("ops", 0), "at the clear"
    text = f"ops {before:5d} {when:<12} -> {m['ops']:5d} at the end (+{m['ops'] - before})"
    if n == 2:
        served = clear_ms is not None and m["ops"] > before
        ok.append(served)
        text += (f"   cleared at {sec(clear_ms) if clear_ms is not None else '-'}, serving again: "
                 + ("yes" if served else "NO")
                 + (f" (after {sec(back_ms)})" if served and back_ms is not None else ""))
    elif n == new:
        served = m["ops"] > before
        ok.append(served)
        text += (f"   enrolled at {sec(add_ms)}, serving: " + ("yes" if served else "NO")
                 + (f" (after {sec(new_ms)})" if served and new_ms is not None else ""))
    line(f"module {n}", text)
if new is None:
    line("module ?", "not enrolled")
    ok.append(False)

failed = {n: m["ops_failed"] - start.get(n, {}).get("ops_failed", 0) for n, m in end.items()}
failed = {n: c for n, c in failed.items() if c}
if failed:
    where = ", ".join(f"module {n}: {c}" for n, c in sorted(failed.items()))
    line("HSM errors", f"{where} (failed inside the HSM; the PKCS#11 module retried on "
         "another HSM, the client saw none)" if errors == 0 else where)

try:
    with open(os.path.join(work, "run.log")) as f:
        log = f.read()
except OSError:
    log = ""
after = log.split(" published: ", 1)[1] if " published: " in log else ""
loads = re.findall(r"preloadrun\[\d+\]: \w+: module (\d+): \d+ token\(s\) loaded .*"
                   r"\(generation (\d+)\)", after)
reloads = sorted({int(k) for k in re.findall(r"reloaded [1-9]\d* key\(s\) onto module (\d+)",
                                               after)})
line("preloadrun", "reloaded democard onto " + (", ".join(
    f"module {n} (generation {g})" for n, g in loads) or "no module"))
ok.append({2, new} <= {int(n) for n, _ in loads})
line("pkcs11", "reloaded the key onto " + (", ".join(f"module {n}" for n in reloads)
                                            or "no module"))
ok.append({2, new} <= set(reloads))
left = {n: m["objects"] for n, m in end.items() if m["objects"]}
line("unloaded", "nothing left loaded once preloadrun exited" if end and not left else
     "objects left loaded: " + (", ".join(f"module {n}: {c}" for n, c in sorted(left.items()))
                                or "no module list"))
ok.append(bool(end) and not left)
line("passphrase", "a wrong one refused (exit status 125)" if refused == 125
     else f"a wrong one NOT refused (exit status {refused})")
ok.append(refused == 125)

passed = all(ok)
word = "PASS" if passed else "FAIL"
if colour:
    word = ("\033[1;32m" if passed else "\033[1;31m") + word + "\033[0m"
line("result", word)
sys.exit(0 if passed else 1)
PY
