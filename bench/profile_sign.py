#!/usr/bin/env python3
"""profile_sign: where the instructions of one signature go (target 1).

Runs one signing thread (bench_pkcs11_sign's own worker: C_SignInit +
C_Sign, CKM_ECDSA on a 32-byte digest, CKNFAST_LOADSHARING=1) through the
PKCS#11 module to `hsmsim serve --modules 1`, both under valgrind's
callgrind, and prints, per signature:

  module   the instructions inside C_SignInit and C_Sign (--toggle-collect:
           the worker's own loop and its software check of every 64th
           signature are not counted), the blocks allocated, and the
           functions that cost most;
  service  the same inside ServedConnection::process for the Sign requests:
           decoding, carrying out, encoding and sending (the receive around
           it is a system call, which callgrind does not see); the key
           generation of the set-up is zeroed away and the worker's own
           set-up requests (Hello, login, object search) are left out.
           OpenSSL's EVP_PKEY_sign is shown apart: what is outside it is the
           service's own work.

Instructions, not time: a change to the codec or the bookkeeping moves
them, and valgrind's slowness does not. Waiting for the answer costs the
module a few instructions here (the service under valgrind is slow, so the
client soon blocks). Run it on two builds (an older checkout's module and
hsmsim, the same worker) to compare them.

  bench/profile_sign.py --hsmsim B/src/sim/hsmsim
      --module B/src/pkcs11/libpreloadrun-pkcs11.so
      --worker B/bench/bench_pkcs11_sign [--seconds 20] [--top 12] [--keep DIR]

Last line: RESULT signatures=N module_ir=.. module_allocs=.. service_ir=..
service_outside_sign_ir=.. service_allocs=.. service_allocs_outside_openssl=..
Exit status: 0 when it measured, 1 when something broke, 2 on bad usage
(valgrind missing included).
"""

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

PIN = "secret"


class Broken(Exception):
    pass


def parse_callgrind(path):
    """Calls and inclusive Ir per callee, calls per arc, and the total Ir."""
    names = {}  # fn and cfn share one compressed name space
    inclusive = collections.Counter()
    calls = collections.Counter()
    arc_calls = collections.Counter()  # (caller, callee) -> calls
    fn = cfn = None
    pending_call = None
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.match(r"^(fn|cfn|cfni)=\((\d+)\)(?: (.*))?$", line)
            if m:
                if m.group(3) is not None:
                    names[m.group(2)] = m.group(3)
                name = names.get(m.group(2), m.group(2))
                if m.group(1) == "fn":
                    fn = name
                else:
                    cfn = name
                continue
            if line.startswith("calls="):
                pending_call = int(line.split("=", 1)[1].split()[0])
                continue
            if line.startswith("totals:") or line.startswith("summary:"):
                total = max(total, int(line.split()[1]))
                continue
            fields = line.split()
            if len(fields) < 2 or not (line[0].isdigit() or line[0] in "+-*"):
                continue
            cost = int(fields[-1])
            if pending_call is not None:
                calls[cfn] += pending_call
                inclusive[cfn] += cost
                arc_calls[(fn, cfn)] += pending_call
                pending_call = None
    return {"inclusive": inclusive, "calls": calls, "arc_calls": arc_calls, "total": total}


def named(data, pattern):
    """The one function whose name matches pattern (a regular expression)."""
    found = [k for k in data["calls"] if re.search(pattern, k)]
    if len(found) != 1:
        raise Broken(f"callgrind: {len(found)} functions match {pattern!r}: {found[:4]}")
    return found[0]


def short(name, width=90):
    """A function's name without its parameter list."""
    name = name.replace("(anonymous namespace)", "{anon}")
    name = name.split("(", 1)[0]
    return name if len(name) <= width else name[: width - 3] + "..."


# Blocks allocated: malloc and calloc (operator new calls malloc); OpenSSL's
# own go through CRYPTO_malloc and CRYPTO_zalloc.
ALLOC = re.compile(r"malloc|calloc")
OPENSSL_ALLOC = re.compile(r"CRYPTO_(malloc|zalloc|realloc|clear_realloc|memdup|strdup|strndup)")


def report(title, data, per, top, roots, exclude=(), above=None):
    """Prints the per-signature figures; returns (instructions, allocations,
    allocations outside OpenSSL) per signature."""
    left_out = sum(data["inclusive"][k] for k in exclude)
    ir = (sum(data["inclusive"][named(data, r)] for r in roots) - left_out) / per
    allocs = sum(v for (caller, callee), v in data["arc_calls"].items()
                 if ALLOC.fullmatch(callee) and caller not in exclude)
    ours = sum(v for (caller, callee), v in data["arc_calls"].items()
               if ALLOC.fullmatch(callee) and not OPENSSL_ALLOC.fullmatch(caller))
    print(f"\n{title}")
    print(f"  instructions per signature: {ir:,.0f}")
    print(f"  blocks allocated per signature: {allocs / per:.1f} "
          f"({ours / per:.1f} outside OpenSSL)")
    print("  most costly functions called for each signature (inclusive instructions per "
          "signature; calls per signature):")
    # Functions called for every signature or more; `above` and its callers
    # (they also called the left-out set-up requests) are shown without them.
    ceiling = data["inclusive"][above] if above else None
    rows = []
    for k, v in data["inclusive"].items():
        if k in exclude or data["calls"][k] < per / 2:
            continue
        rows.append((v - left_out if ceiling is not None and v >= ceiling else v, k))
    for v, k in sorted(rows, reverse=True)[:top]:
        print(f"    {v / per:>10,.0f} {data['calls'][k] / per:>6.2f}  {short(k)}")
    return ir, allocs / per, ours / per


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hsmsim", required=True)
    ap.add_argument("--module", required=True)
    ap.add_argument("--worker", required=True, help="bench_pkcs11_sign")
    ap.add_argument("--seconds", type=float, default=20, help="signing time after 1 s of warm-up")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--keep", help="keep the callgrind files in this directory")
    a = ap.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            print(f"profile_sign: {tool} is not installed", file=sys.stderr)
            return 2
    for path in (a.hsmsim, a.module, a.worker):
        if not os.path.exists(path):
            print(f"profile_sign: {path}: no such file", file=sys.stderr)
            return 2
    work = tempfile.mkdtemp(prefix="profile_sign.")
    try:
        return measure(a, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(a, work):
    out = a.keep or work
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, NFAST_KMDATA=os.path.join(work, "km"),
               HSMSIM_SOCKET=os.path.join(work, "c.sock"),
               HSMSIM_ADMIN_SOCKET=os.path.join(work, "a.sock"), LC_ALL="C",
               CKNFAST_LOADSHARING="1")
    for name in ("CKNFAST_RELOAD_KEYS", "NFAST_NFKM_TOKENSFILE", "PRELOADRUN_PKCS11_LOG"):
        env.pop(name, None)
    os.mkdir(env["NFAST_KMDATA"], 0o700)
    server_out = os.path.join(out, "callgrind.service")
    client_out = os.path.join(out, "callgrind.module")
    serve = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + server_out,
         "--toggle-collect=*ServedConnection::process(*", a.hsmsim, "serve", "--modules", "1",
         "--op-latency-ms", "0", "--init-delay-ms", "0"],
        env=env, stdout=subprocess.PIPE, stderr=open(os.path.join(work, "serve.log"), "w"),
        text=True)
    try:
        line = serve.stdout.readline()
        if not line.startswith("hsmsim: ready: "):
            raise Broken("hsmsim serve printed no ready line: " + line)
        pass_file = os.path.join(work, "pass")
        with open(pass_file, "w") as f:
            f.write(PIN)
        for args in (["softcard", "create", "card1", "--passphrase-file", pass_file],
                     ["key", "generate", "--type", "ec-p256", "--label", "eck", "--id", "01",
                      "--protect", "softcard:card1", "--passphrase-file", pass_file]):
            r = subprocess.run([a.hsmsim] + args, env=env, capture_output=True, text=True,
                               timeout=300)
            if r.returncode != 0:
                raise Broken(" ".join(args[:2]) + ": " + r.stderr.strip())
        # What the set-up cost the service (key generation) is not counted.
        subprocess.run(["callgrind_control", "--zero", str(serve.pid)], check=True,
                       capture_output=True, timeout=60)
        r = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + client_out,
             "--toggle-collect=*pkcs11::entry::SignInit(*",
             "--toggle-collect=*pkcs11::entry::Sign(*", a.worker, "worker",
             "--kind", "pkcs11", "--module", a.module, "--token", "card1", "--pin", PIN,
             "--threads", "1", "--seconds", str(a.seconds), "--warmup", "1"],
            env=env, capture_output=True, text=True, timeout=a.seconds * 10 + 300)
        if r.returncode != 0:
            raise Broken("the signing worker failed: " + r.stderr.strip()[-2000:])
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(120)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
    client = parse_callgrind(client_out)
    server = parse_callgrind(server_out)
    signatures = client["calls"][named(client, r"pkcs11::entry::Sign\(")]
    sign_handler = named(server, r"^preloadrun::sim::\(anonymous namespace\)::sign\(")
    served = server["calls"][sign_handler]
    if signatures == 0 or served != signatures:
        raise Broken(f"the module made {signatures} signatures, the service {served}")
    # The worker's set-up requests (Hello, login, object search): left out.
    dispatch = named(server, r"sim::Handler::dispatch\(")
    setup = [callee for (caller, callee) in server["arc_calls"]
             if caller == dispatch and callee != sign_handler]
    print(f"profile_sign: {signatures:,} signatures under callgrind")
    mod = report("module (C_SignInit + C_Sign)", client, signatures, a.top,
                 [r"pkcs11::entry::SignInit\(", r"pkcs11::entry::Sign\("])
    srv = report("service (ServedConnection::process, the Sign requests)", server, signatures,
                 a.top, [r"sim::ServedConnection::process\("], exclude=setup, above=dispatch)
    evp = server["inclusive"].get("EVP_PKEY_sign", 0) / signatures
    print(f"  of which EVP_PKEY_sign: {evp:,.0f}; outside it: {srv[0] - evp:,.0f}")
    print(f"\nRESULT signatures={signatures} module_ir={mod[0]:.0f} module_allocs={mod[1]:.1f} "
          f"service_ir={srv[0]:.0f} service_outside_sign_ir={srv[0] - evp:.0f} "
          f"service_allocs={srv[1]:.1f} service_allocs_outside_openssl={srv[2]:.1f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Broken as e:
        print(f"profile_sign: {e}", file=sys.stderr)
        sys.exit(1)
