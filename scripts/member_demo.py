#!/usr/bin/python3
"""The demo over real PKCS#11 tokens: three SoftHSM2 tokens holding the same
keys, each behind its own `p11-kit server` (a separate "network HSM"), are
the members of `hsmfleet serve --fleet`. A real PKCS#11 application
(scripts/demo_client.py) runs under `preloadrun -s signing` and signs in a
loop through libpreloadrun-pkcs11 while one HSM's server is killed, then
brought back, and a third HSM joins the fleet when it is added to the
configuration file. The summary shows, from the members' own counters and
from the client, that the application never saw an error and that every HSM
served its signatures, without a restart.

Usage: scripts/member_demo.py BUILD_DIR   exit status 0 only when all of that held
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "support"))
from p11kit_members import CLIENT_MODULE, MemberFarm  # noqa: E402  (the tests' farm)

DURATION = 14.0  # seconds of signing
KILL_AT, BACK_AT, JOIN_AT = 3.0, 6.0, 9.0  # seconds after the first signature


def step(text):
    print(f"\n== {text}", flush=True)


def say(text):
    print(f"demo:   {text}", flush=True)


def config_text(members):
    lines = ["[defaults]", f'library = "{CLIENT_MODULE}"', 'timeout = "2s"',
             'probe-interval = "250ms"', ""]
    for m in members:
        lines += [f"[member.{m.name}]", f'token = {{ label = "{m.label}" }}',
                  f'env = {{ P11_KIT_SERVER_ADDRESS = "{m.address}" }}', ""]
    lines += ["[set.signing]", "members = [" + ", ".join(f'"{m.name}"' for m in members) + "]"]
    return "\n".join(lines) + "\n"


def write_config(path, members):
    with open(path + ".tmp", "w") as f:
        f.write(config_text(members))
    os.chmod(path + ".tmp", 0o600)
    os.rename(path + ".tmp", path)


class Demo:
    def __init__(self, build, work):
        self.hsmfleet = os.path.join(build, "src", "sim", "hsmfleet")
        self.preloadrun = os.path.join(build, "src", "supervisor", "preloadrun")
        self.module = os.path.join(build, "src", "pkcs11", "libpreloadrun-pkcs11.so")
        for path in (self.hsmfleet, self.preloadrun, self.module):
            if not os.path.exists(path):
                sys.exit(f"member_demo: {path} is not built")
        self.work = work
        self.config = os.path.join(work, "fleet.toml")
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("NFAST_KMDATA", "NFAST_NFKM_TOKENSFILE", "CKNFAST_LOADSHARING",
                                 "CKNFAST_RELOAD_KEYS", "NOTIFY_SOCKET")}
        self.env.update(HSMSIM_SOCKET=os.path.join(work, "c.sock"),
                        HSMSIM_ADMIN_SOCKET=os.path.join(work, "a.sock"),
                        XDG_RUNTIME_DIR=os.path.join(work, "run"))
        os.mkdir(self.env["XDG_RUNTIME_DIR"], 0o700)
        self.t0 = None

    def modules(self):
        out = subprocess.run([self.hsmfleet, "module", "list", "--json"], env=self.env,
                             capture_output=True, text=True, check=True).stdout
        return {m["esn"]: m for m in json.loads(out)}

    def elapsed(self):
        return time.monotonic() - self.t0

    def wait(self, what, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = predicate(self.modules())
            if m:
                return m
            time.sleep(0.05)
        raise SystemExit(f"member_demo: {what} did not happen within {timeout:g} s")

    def sleep_until(self, at):
        while self.elapsed() < at:
            time.sleep(0.05)


def run(demo, farm):
    step("Three SoftHSM2 tokens with the same keys, each behind its own p11-kit server")
    for m in farm.members:
        say(f"{m.name}: token '{m.label}' (serial {m.serial}) at {m.address}")
    step("hsmfleet serve --fleet fleet.toml: members hsm-a and hsm-b, token set 'signing'")
    write_config(demo.config, farm.members[:2])
    serve = subprocess.Popen([demo.hsmfleet, "serve", "--fleet", demo.config,
                              "--init-delay-ms", "100"], env=demo.env, stdout=subprocess.PIPE,
                             stderr=open(os.path.join(demo.work, "hsmfleet.log"), "w"), text=True)
    try:
        print(serve.stdout.readline().rstrip())
        subprocess.run([demo.hsmfleet, "module", "list"], env=demo.env, check=True)
        return signing(demo, farm)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(15)


def signing(demo, farm):
    pin = os.path.join(demo.work, "pin")
    with open(pin, "w") as f:
        f.write(farm.pin + "\n")
    os.chmod(pin, 0o600)
    ready, result = os.path.join(demo.work, "ready"), os.path.join(demo.work, "result.json")
    step(f"preloadrun runs a PKCS#11 client that signs for {DURATION:g} s, while HSMs change")
    print("$ preloadrun -s signing --passphrase-file pin -- demo_client.py --token signing "
          "--label ec-key")
    say(f"hsm-b's server is killed at {KILL_AT:g} s and started again at {BACK_AT:g} s; "
        f"hsm-c joins at {JOIN_AT:g} s")
    app = subprocess.Popen(
        [demo.preloadrun, "-s", "signing", "--passphrase-file", pin, "--", sys.executable,
         os.path.join(HERE, "demo_client.py"), "--module", demo.module, "--token", "signing",
         "--label", "ec-key", "--seconds", str(DURATION), "--ready-file", ready,
         "--result-file", result], env=demo.env)
    deadline = time.monotonic() + 30
    while not os.path.exists(ready):
        if app.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("member_demo: the client did not start")
        time.sleep(0.05)
    demo.t0 = time.monotonic()
    served = events(demo, farm)
    app.wait(DURATION + 30)
    return summary(demo, app.returncode, result, served)


def events(demo, farm):
    served = {}
    demo.sleep_until(KILL_AT)
    farm.member("hsm-b").kill()
    say(f"{demo.elapsed():5.1f} s  hsm-b's server killed")
    gen = demo.wait("hsm-b failing", lambda ms: ms["hsm-b"]["state"] == "failed" and
                    ms["hsm-b"])["generation"]
    say(f"{demo.elapsed():5.1f} s  hsm-b is failed; the client's work goes to hsm-a")
    demo.sleep_until(BACK_AT)
    farm.member("hsm-b").start()
    say(f"{demo.elapsed():5.1f} s  hsm-b's server started again")
    back = time.monotonic()
    m = demo.wait("hsm-b back", lambda ms: ms["hsm-b"]["state"] == "usable" and
                  ms["hsm-b"]["generation"] > gen and ms["hsm-b"])
    demo.wait("hsm-b serving", lambda ms: ms["hsm-b"]["ops"] > m["ops"])
    served["hsm-b"] = time.monotonic() - back
    say(f"{demo.elapsed():5.1f} s  hsm-b serves again ({served['hsm-b']:.2f} s after its "
        f"server came back: reset, logged in again, key reloaded)")
    demo.sleep_until(JOIN_AT)
    write_config(demo.config, farm.members)
    say(f"{demo.elapsed():5.1f} s  hsm-c added to fleet.toml")
    joined = time.monotonic()
    demo.wait("hsm-c serving", lambda ms: "hsm-c" in ms and ms["hsm-c"]["ops"] > 0)
    served["hsm-c"] = time.monotonic() - joined
    say(f"{demo.elapsed():5.1f} s  hsm-c joined and serves ({served['hsm-c']:.2f} s after "
        f"the file changed)")
    return served


def summary(demo, status, result, served):
    step("Summary")
    subprocess.run([demo.hsmfleet, "module", "list"], env=demo.env, check=True)
    with open(result) as f:
        counts = json.load(f)
    ok = status == 0 and counts["errors"] == 0 and counts["signatures"] > 0
    ms = demo.modules()
    ok = ok and all(ms[name]["ops"] > 0 for name in ("hsm-a", "hsm-b", "hsm-c"))
    say(f"the client made and verified {counts['signatures']} signatures in "
        f"{counts['seconds']:g} s with {counts['errors']} errors, and was never restarted")
    say("every HSM served its signatures: " +
        ", ".join(f"{n} {ms[n]['ops']}" for n in ("hsm-a", "hsm-b", "hsm-c")))
    print(f"\ndemo: {'PASSED' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: member_demo.py BUILD_DIR")
    build = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="preloadrun-member-demo.")
    try:
        demo = Demo(build, work)
        with MemberFarm(os.path.join(work, "farm")) as farm:
            return run(demo, farm)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
