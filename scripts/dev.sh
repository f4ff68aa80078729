#!/usr/bin/env bash
# One entry point for setting up, building, demonstrating and testing.
#
#   scripts/dev.sh deps    install the Debian 12 packages the project needs (root)
#   scripts/dev.sh build   configure and build (preset "default")
#   scripts/dev.sh demo    deps + build + run the demo
#   scripts/dev.sh test    deps + build + the whole test suite (ctest)
#   scripts/dev.sh asan    deps + the suite under ASan+UBSan, warnings as errors
#   scripts/dev.sh tsan    deps + the multi-threaded parts under ThreadSanitizer
#   scripts/dev.sh fuzz    deps + build the libFuzzer targets and run each briefly
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

packages=(
  build-essential cmake ninja-build pkg-config git
  libcli11-dev libspdlog-dev doctest-dev libboost1.81-dev libssl-dev
  nlohmann-json3-dev libprotobuf-dev protobuf-compiler libp11-kit-dev
  clang-14 libclang-rt-14-dev clang-format scdoc mandoc groff-base
  python3 python3-pytest python3-pexpect python3-protobuf openssl procps tini dumb-init hyperfine
  opensc gnutls-bin libengine-pkcs11-openssl p11-kit softhsm2 python3-pykcs11 python3-cryptography
  bash-completion zsh fish util-linux man-db dpkg-dev systemd binutils
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
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build_preset() {
  cmake --preset "$1" >/dev/null
  cmake --build --preset "$1"
}

test_preset() {
  build_preset "$1"
  ctest --preset "$1"
}

case "${1:-}" in
  deps) deps ;;
  build) deps; build_preset default ;;
  demo) deps; build_preset default; "$here/scripts/demo.sh" "$here/build/default" ;;
  test) deps; test_preset ci ;;
  asan) deps; test_preset asan ;;
  tsan) deps; test_preset tsan ;;
  fuzz)
    deps
    cmake --preset fuzz >/dev/null
    cmake --build --preset fuzz --target fuzzers
    for target in "$here"/build/fuzz/fuzz/fuzz_*; do
      [[ -x $target ]] || continue
      name=$(basename "$target")
      seeds="$here/fuzz/corpus/$(sed -e 's/^fuzz_//' -e 's/_decode$//' <<<"$name")"
      corpus=$(mktemp -d)
      echo "dev.sh: fuzzing $name for ${FUZZ_SECONDS:-30} s" >&2
      # New inputs go to the scratch corpus; the seeds in the repository stay as they are.
      "$target" -max_total_time="${FUZZ_SECONDS:-30}" -print_final_stats=1 "$corpus" "$seeds" \
        >"$corpus.log" 2>&1 || { tail -n 40 "$corpus.log"; rm -rf "$corpus" "$corpus.log"; exit 1; }
      tail -n 3 "$corpus.log"
      rm -rf "$corpus" "$corpus.log"
    done
    ;;
  *)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
