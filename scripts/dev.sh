#!/usr/bin/env bash
# One entry point for setting up, building, demonstrating and testing.
#
#   scripts/dev.sh deps    install the Debian 12 packages the project needs (root)
#   scripts/dev.sh build   configure and build (preset "default")
#   scripts/dev.sh demo    deps + build + run the demo
#   scripts/dev.sh member-demo   deps + build + the demo over real PKCS#11
#                          tokens (SoftHSM2, each behind its own p11-kit server)
#   scripts/dev.sh test    deps + build + the whole test suite (ctest)
#   scripts/dev.sh asan    deps + the suite under ASan+UBSan, warnings as errors
#   scripts/dev.sh tsan    deps + the multi-threaded parts under ThreadSanitizer
#   scripts/dev.sh fuzz    deps + build the libFuzzer targets and run each briefly
#                          (FUZZ_SECONDS each, FUZZ_JOBS at a time, FUZZ_DIR: keep
#                          the scratch corpora and logs there; see fuzz/CMakeLists.txt)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

packages=(
  build-essential cmake ninja-build pkg-config git
  libcli11-dev libspdlog-dev doctest-dev libboost1.81-dev libssl-dev
  nlohmann-json3-dev libprotobuf-dev protobuf-compiler libp11-kit-dev libtomlplusplus-dev
  clang-14 libclang-rt-14-dev clang-format scdoc mandoc groff-base
  python3 python3-pytest python3-pexpect python3-protobuf openssl procps tini dumb-init hyperfine
  opensc gnutls-bin libengine-pkcs11-openssl p11-kit softhsm2 python3-pykcs11 python3-cryptography
  bash-completion zsh fish util-linux man-db dpkg-dev systemd binutils openssh-client
  openssh-server openjdk-17-jdk-headless valgrind
)

deps() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    return
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "dev.sh: missing packages: ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "dev.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The tests start their own sshd on a free port: a newly installed
  # openssh-server must not start (or later boot) the system's ssh service.
  local sshd_new=0 policy_made=0
  [[ " ${missing[*]} " == *" openssh-server "* ]] && sshd_new=1
  if ((sshd_new)) && [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_made=1
  fi
  local status=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  ((policy_made)) && rm -f /usr/sbin/policy-rc.d
  if ((sshd_new)); then
    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
    echo "dev.sh: openssh-server is installed for the tests; its ssh service is left disabled" >&2
  fi
  return "$status"
}

# Configures and builds preset $1 quietly: one progress line (updated in
# place on a terminal, every quarter otherwise), the compiler's output only
# when the build fails, and the time taken.
build_preset() {
  local log start=$SECONDS status=0
  log=$(mktemp)
  if ! cmake --preset "$1" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  echo "dev.sh: building preset $1 (the compiler's output: only on failure)" >&2
  cmake --build --preset "$1" 2>&1 | progress "$log" || status=$?
  if ((status != 0)); then
    grep -E -A12 'error:|Error [0-9]|FAILED:' "$log" | head -n 80 >&2 || tail -n 60 "$log" >&2
    echo "dev.sh: the build of preset $1 failed; its whole output: $log" >&2
    return "$status"
  fi
  rm -f "$log"
  echo "dev.sh: built preset $1 in $((SECONDS - start)) s" >&2
}

# Copies the build's output to $1 and shows ninja's [done/total] as progress.
progress() {
  local line finished total shown=0 tty=0
  [[ -t 2 ]] && tty=1
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"$1"
    [[ $line =~ ^\[([0-9]+)/([0-9]+)\] ]] || continue
    finished=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]}
    if ((tty)); then
      printf '\rdev.sh: %d/%d' "$finished" "$total" >&2
    elif ((finished * 4 >= (shown + 1) * total)); then
      shown=$((finished * 4 / total))
      echo "dev.sh: $finished/$total" >&2
    fi
  done
  ((tty)) && printf '\n' >&2
  return 0
}

test_preset() {
  build_preset "$1"
  ctest --preset "$1"
}

# Runs one fuzz target for $seconds: new inputs go to a scratch corpus in
# $work, the seeds in the repository stay as they are; a failing input is
# saved in $work as crash-*, leak-* or timeout-*.
fuzz_one() {
  local target=$1 name seeds log
  name=$(basename "$target")
  seeds="$here/fuzz/corpus/$(sed -e 's/^fuzz_//' -e 's/_decode$//' <<<"$name")"
  log="$work/$name.log"
  mkdir -p "$work/$name"
  if ! "$target" -max_total_time="$seconds" -print_final_stats=1 -timeout=60 -rss_limit_mb=2048 \
    -artifact_prefix="$work/$name-" "$work/$name" "$seeds" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "dev.sh: $name failed; its log and input are in $work" >&2
    return 1
  fi
  # The last status line ("#N ... cov: C ft: F corp: K/...") and the totals.
  awk -v name="$name" '
    /^#[0-9]+/ && / cov: / { for (i = 1; i < NF; i++) last[$i] = $(i + 1) }
    /stat::number_of_executed_units:/ { runs = $2 }
    /stat::average_exec_per_sec:/ { rate = $2 }
    END { printf "dev.sh: %s: %s runs, %s exec/s, cov %s, ft %s, corpus %s\n",
                 name, runs, rate, last["cov:"], last["ft:"], last["corp:"] }' "$log" >&2
}

# Every fuzz target for FUZZ_SECONDS (30) each, FUZZ_JOBS of them at a time
# (1; "all": every one at once). The scratch corpora and logs go to FUZZ_DIR
# when it is set (and are kept), else to a temporary directory removed after
# a run without failures.
fuzz() {
  cmake --preset fuzz >/dev/null
  cmake --build --preset fuzz --target fuzzers
  local targets=() target jobs running=0 failed=0
  for target in "$here"/build/fuzz/fuzz/fuzz_*; do
    [[ -x $target ]] && targets+=("$target")
  done
  seconds=${FUZZ_SECONDS:-30}
  jobs=${FUZZ_JOBS:-1}
  [[ $jobs == all ]] && jobs=${#targets[@]}
  if [[ -n ${FUZZ_DIR:-} ]]; then
    work=$FUZZ_DIR
    mkdir -p "$work"
  else
    work=$(mktemp -d)
  fi
  echo "dev.sh: fuzzing ${#targets[@]} targets for $seconds s each, $jobs at a time, in $work" >&2
  for target in "${targets[@]}"; do
    if ((running >= jobs)); then
      wait -n || failed=1
      running=$((running - 1))
    fi
    fuzz_one "$target" &
    running=$((running + 1))
  done
  while ((running > 0)); do
    wait -n || failed=1
    running=$((running - 1))
  done
  if ((failed)); then
    exit 1
  fi
  [[ -n ${FUZZ_DIR:-} ]] || rm -rf "$work"
}

case "${1:-}" in
  deps) deps ;;
  build) deps; build_preset default ;;
  demo) deps; build_preset default; "$here/scripts/demo.sh" "$here/build/default" ;;
  member-demo) deps; build_preset default; /usr/bin/python3 "$here/scripts/member_demo.py" "$here/build/default" ;;
  test) deps; test_preset ci ;;
  asan) deps; test_preset asan ;;
  tsan) deps; test_preset tsan ;;
  fuzz) deps; fuzz ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
