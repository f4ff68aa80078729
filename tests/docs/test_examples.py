"""Every example of README.md, the man pages and `--help` runs as written.

examples.py finds the examples; REGISTRY below says, for each one by its
exact text, how it runs: the world it takes for granted (softcards, keys,
a running `hsmsim serve`), the files it names (/run/secrets/pp, a digest, the
module's path), and what must hold afterwards (exit status, output, what
the stand-in application `myapp` did). sandbox.py runs the text itself with
`bash -e -o pipefail -c` on a terminal of its own, in a mount namespace
where the system paths it writes to are private. steps.py has the words of
the registry, checks.py its checks.

An example that cannot run here as written (systemctl, apt, minutes of
building) has a `Checked` entry instead: which test covers it, why it is
not run, and a check of what can be checked here.

The drift tests fail when an example has no entry (a new or edited example)
or an entry has no example any more, and say what to do.
"""

import os

import pytest

from checks import (check_app_unit, check_build_by_hand, check_fleet_commands,
                    check_fleet_config, check_fuzz, check_installing, check_maintenance,
                    check_quick_start, check_soak, check_systemd, check_tokens_file,
                    check_uninstalling, debug_log,
                    env_file_written, file_of, gone, live_json, objects_zero)
from examples import all_examples
from sandbox import Dir, Link, Sandbox, World, WorldSpec
from steps import App, Checked, End, Entrypoint, Run, Scenario, Start

MODULE_PATH = "/usr/lib/x86_64-linux-gnu/pkcs11/libpreloadrun-pkcs11.so"

# The world most examples take for granted: the softcards and card set they
# name, with the passphrases the docs give ("secret" for mycard), the key
# `signer` of mycard (id 01), and a module-protected key for applications
# that load no token.
STANDARD = WorldSpec(
    modules=3,
    softcards=(("mycard", "secret"), ("a", "passphrase of a"), ("b", "passphrase of b"),
               ("signing", "passphrase of signing")),
    cardsets=(("ops", "passphrase of ops"),),
    keys=(("signer", "01", "softcard:mycard"), ("modkey", "02", "module")))


# -- the registry: every example, by its exact text ---------------------------------

MAINTENANCE = """\
hsmfleet module list                # every member: state, generation, operations, latency
hsmfleet module drain 1             # no new work for module 1; what is under way finishes
hsmfleet module undrain 1           # back in service: its tokens are loaded again"""
FLEET_EXAMPLE = """\
[defaults]
library = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
timeout = "3s"

[member.left]
token = { label = "signing" }
env = { P11_KIT_SERVER_ADDRESS = "unix:path=/run/hsm-left.sock" }

[member.right]
token = { label = "signing" }
env = { P11_KIT_SERVER_ADDRESS = "unix:path=/run/hsm-right.sock" }

[set.signing]
members = ["left", "right"]"""

SERVICE_MODE = "preloadrun -s mycard -f /run/app/tokens.json > /run/app/env"
HELP_SERVICE_MODE = "preloadrun -s mycard -f /run/app/tokens.json"
README_SERVICE_CLIENTS = """\
sh -c '. /run/app/env && exec myapp'                 # an application pointed at the file
preloadrun --attach /run/app/tokens.json -- myapp    # the same, the file checked live first
preloadrun check /run/app/tokens.json                # 0 live, 1 not (says why), 3 cannot check
preloadrun status /run/app/tokens.json               # owner, modules, handles, reloads"""

README_HSM_SERVE = """\
mkdir -m 700 ~/hsm                         # private: not a shared directory such as /tmp
export NFAST_KMDATA=~/hsm/world HSMSIM_SOCKET=~/hsm/client.sock HSMSIM_ADMIN_SOCKET=~/hsm/admin.sock
hsmsim serve --modules 3                   # prints "hsmsim: ready: ..." when listening"""
MAN_HSM_SERVE = """\
mkdir -m 700 ~/hsm
export NFAST_KMDATA=~/hsm/world HSMSIM_SOCKET=~/hsm/client.sock HSMSIM_ADMIN_SOCKET=~/hsm/admin.sock
hsmsim serve --modules 3"""

DEMO_EXPORTS = """\
export PATH=$PWD/build/default/src/sim:$PWD/build/default/src/supervisor:$PATH
export NFAST_KMDATA=~/demo/world HSMSIM_SOCKET=~/demo/client.sock HSMSIM_ADMIN_SOCKET=~/demo/admin.sock
"""
DEMO_FLEET = "mkdir -m 700 ~/demo\n" + DEMO_EXPORTS + "hsmsim serve --modules 3 --op-latency-ms 1"
DEMO_CLIENT = DEMO_EXPORTS + """\
hsmsim softcard create democard            # asks for a passphrase twice
hsmsim key generate --type ec-p256 --label demo-ec --id 01 --protect softcard:democard
PRELOADRUN_PKCS11_LOG=stderr preloadrun -s democard -- scripts/demo_client.py \\
  --module build/default/src/pkcs11/libpreloadrun-pkcs11.so --token democard --label demo-ec --seconds 20"""
DEMO_FAULTS = DEMO_EXPORTS + """\
hsmsim module clear 2      # preloadrun loads democard onto it again, the module reloads demo-ec
hsmsim module add          # module 4: the same
hsmsim module list         # every module's operations grow; the client sees no error"""
DEMO_END = "hsmsim module list         # OBJECTS 0 on every module: nothing is left loaded"

HSM_ENV = {"NFAST_KMDATA": "{home}/hsm/world", "HSMSIM_SOCKET": "{home}/hsm/client.sock",
           "HSMSIM_ADMIN_SOCKET": "{home}/hsm/admin.sock"}
OWN_WORLD_ENV = {"NFAST_KMDATA": "{home}/world", "HSMSIM_SOCKET": "{home}/client.sock",
                 "HSMSIM_ADMIN_SOCKET": "{home}/admin.sock"}
MYCARD = App(tokens=("mycard",), key="signer@mycard")

REGISTRY = [
    # -- preloadrun supervising an application -------------------------------------
    Scenario("preloadrun: an application with its softcard", world=STANDARD, steps=[
        Run("preloadrun -s mycard -- myapp",
            apps=[App(tokens=("mycard",), key="signer@mycard", parent="preloadrun")]),
        Run("preloadrun -s mycard -- myapp --serve",
            apps=[App(argv=("--serve",), tokens=("mycard",), key="signer@mycard",
                      parent="preloadrun")]),
    ]),
    Scenario("preloadrun: passphrases from a descriptor and from files", world=STANDARD,
             files={"/run/secrets/pp": "passphrase of signing\npassphrase of ops\n",
                    "/run/secrets/a": "passphrase of a\n", "/run/secrets/b": "passphrase of b\n",
                    "pass.txt": "passphrase of a\npassphrase of b\n"},
             steps=[
        Run("preloadrun -s signing -c ops --passphrase-fd 3 -- myapp 3< /run/secrets/pp",
            apps=[App(tokens=("signing", "ops"), key="modkey@accelerator")]),
        Run("preloadrun -s a -s b --passphrase-file a=/run/secrets/a "
            "--passphrase-file b=/run/secrets/b -- myapp",
            apps=[App(tokens=("a", "b"), key="modkey@accelerator")]),
        Run("preloadrun -s a -s b --passphrase-fd 3 -- myapp 3<pass.txt",
            apps=[App(tokens=("a", "b"), key="modkey@accelerator")]),
        Run("preloadrun -- myapp", apps=[App(key="modkey@accelerator", parent="preloadrun")]),
    ]),
    Scenario("preloadrun: a container's entrypoint", world=STANDARD,
             files={"/run/secrets/mycard": "secret\n", "/run/secrets/pp": "secret\n"},
             steps=[
        Entrypoint('ENTRYPOINT ["preloadrun", "-s", "mycard", "--passphrase-file", '
                   '"/run/secrets/mycard", "--"]\nCMD ["myapp", "--serve"]',
                   apps=[App(argv=("--serve",), tokens=("mycard",), parent="preloadrun",
                             ppid=1)]),
        Entrypoint('ENTRYPOINT ["preloadrun", "-s", "mycard", "--passphrase-file", '
                   '"/run/secrets/pp", "--"]',
                   apps=[App(tokens=("mycard",), parent="preloadrun", ppid=1)]),
    ]),
    # -- service mode: tokens kept loaded for applications started elsewhere ---------
    Scenario("preloadrun: service mode (README, preloadrun(1))", world=STANDARD,
             files={"/run/app": Dir(0o700), MODULE_PATH: Link("{module}")},
             steps=[
        Start(SERVICE_MODE, ready=env_file_written),
        Run("sh -c '. /run/app/env && exec myapp'", apps=[MYCARD]),
        Run(README_SERVICE_CLIENTS, apps=[MYCARD, App(tokens=("mycard",), parent="preloadrun")],
            output=(r"live", r"mycard")),
        Run("preloadrun --attach /run/app/tokens.json -- pkcs11-tool --module "
            f"{MODULE_PATH} -L", output=(r"token label\s*:\s*mycard",)),
        Run("preloadrun check /run/app/tokens.json && echo live", output=(r"^live\s*$",)),
        End(SERVICE_MODE, status=0, check=gone("/run/app/tokens.json")),
    ]),
    Scenario("preloadrun --help: service mode", world=STANDARD, files={"/run/app": Dir(0o700)},
             steps=[
        Start(HELP_SERVICE_MODE, ready=r"echo preloadrun pid \d+"),
        Run("preloadrun --attach /run/app/tokens.json -- tool",
            apps=[App(name="tool", tokens=("mycard",), parent="preloadrun")]),
        Run("preloadrun check /run/app/tokens.json", output=(r"live",)),
        Run("preloadrun status --json", under=("preloadrun", "--attach", "/run/app/tokens.json",
                                               "--"), check=live_json),
        End(HELP_SERVICE_MODE, status=0, output=(r"NFAST_NFKM_TOKENSFILE='/run/app/tokens.json'",),
            check=gone("/run/app/tokens.json")),
    ]),
    Scenario("preloadrun-tokens(5): in an application's environment", world=STANDARD, steps=[
        Run('preloadrun check "$NFAST_NFKM_TOKENSFILE"\npreloadrun status --json',
            under=("preloadrun", "-s", "mycard", "--"), check=live_json),
    ]),
    # -- the PKCS#11 module with real clients ----------------------------------------
    Scenario("README: PKCS#11 clients", world=STANDARD, files={"pp": "secret\n"}, steps=[
        Run("""\
M=$PWD/build/default/src/pkcs11/libpreloadrun-pkcs11.so
openssl dgst -sha256 -binary -out digest README.md            # something to sign
pkcs11-tool --module $M -L                                    # the slots
preloadrun -s mycard --passphrase-file pp -- \\
  pkcs11-tool --module $M --token-label mycard --login --pin x \\
    --sign -m ECDSA --id 01 -i digest -o sig                  # any PIN: preloadrun logged in
GNUTLS_PIN=secret p11tool --provider $M --login --list-all 'pkcs11:token=mycard'
PKCS11_MODULE_PATH=$M openssl pkeyutl -engine pkcs11 -keyform engine \\
  -inkey 'pkcs11:token=mycard;object=signer;type=private;pin-value=secret' -sign -in digest -out sig""",
            output=(r"token label\s*:\s*mycard", r"Label: signer"), check=file_of("sig")),
    ]),
    Scenario("README: registering the module with p11-kit", world=STANDARD, private=("/etc",),
             steps=[
        Run("""\
mkdir -p /etc/pkcs11/modules
echo "module: $PWD/build/default/src/pkcs11/libpreloadrun-pkcs11.so" > /etc/pkcs11/modules/preloadrun.module
p11-kit list-modules                                          # now lists preloadrun""",
            output=(r"^preloadrun: ", r"token: mycard")),
    ]),
    Scenario("libpreloadrun-pkcs11(7)", world=STANDARD, env={"M": MODULE_PATH},
             files={MODULE_PATH: Link("{module}"), "digest": os.urandom(32)},
             private=("/var/log",), steps=[
        Run(f"M={MODULE_PATH}"),
        Run('pkcs11-tool --module "$M" -L', output=(r"token label\s*:\s*mycard",)),
        Run('preloadrun -s mycard -- pkcs11-tool --module "$M" --token-label mycard --login '
            '--pin x --sign -m ECDSA --id 01 -i digest -o sig', check=file_of("sig")),
        Run("""GNUTLS_PIN=secret p11tool --provider "$M" --login --list-all """
            """'pkcs11:token=mycard'""", output=(r"Label: signer",)),
        Run('PKCS11_MODULE_PATH="$M" preloadrun -s mycard -- openssl pkeyutl -engine pkcs11 '
            "-keyform engine -inkey 'pkcs11:token=mycard;object=signer;type=private;pin-value=x' "
            "-sign -in digest -out sig", check=file_of("sig")),
        Run("PRELOADRUN_PKCS11_LOG=/var/log/app-pkcs11.log PRELOADRUN_PKCS11_LOG_LEVEL=debug "
            "preloadrun -s mycard -- myapp", apps=[MYCARD], check=debug_log),
    ]),
    # -- hsmsim ----------------------------------------------------------------------
    Scenario("README: hsmsim in two terminals", passphrases={"mycard": "secret"}, steps=[
        Start(README_HSM_SERVE, ready=r"^hsmsim: ready: 3 modules"),
        Run("""\
export NFAST_KMDATA=~/hsm/world HSMSIM_SOCKET=~/hsm/client.sock HSMSIM_ADMIN_SOCKET=~/hsm/admin.sock
hsmsim softcard create mycard              # asks for the passphrase twice
hsmsim key generate --type ec-p256 --label signer --id 01 --protect softcard:mycard
hsmsim module list                         # state, generation, operation counters
hsmsim module clear 2                      # an HSM reset: objects gone, generation + 1
hsmsim module fail 3; hsmsim module restore 3
hsmsim module add                          # enrol a new HSM
hsmsim module latency 1 2                  # 2 ms per operation on module 1
hsmsim module fail-next 1 5                # the next 5 operations on module 1 fail""",
            output=(r"created softcard mycard", r"generated ec-p256 key 'signer'",
                    r"^4\s*$")),
        End(README_HSM_SERVE, status=0),
    ]),
    Scenario("hsmsim(1)", env=HSM_ENV, passphrases={"mycard": "secret"}, steps=[
        Start(MAN_HSM_SERVE, ready=r"^hsmsim: ready: 3 modules"),
        Run("""\
hsmsim softcard create mycard
hsmsim key generate --type ec-p256 --label signer --id 01 --protect softcard:mycard
hsmsim module clear 2
hsmsim module list""", output=(r"created softcard mycard", r"generated ec-p256 key 'signer'")),
        Run("hsmsim module latency 1 2\nhsmsim module fail-next 3 5"),
        Run("hsmsim softcard delete mycard --with-keys",
            output=(r"deleted softcard 'mycard' \(hash [0-9a-f]+\) and the 1 key\(s\) it "
                    r"protected: .*signer",)),
        End(MAN_HSM_SERVE, status=0),
    ]),
    Scenario("hsmsim --help: serve in the background", env=OWN_WORLD_ENV, steps=[
        Start("hsmsim serve --modules 3 &", ready=r"^hsmsim: ready: 3 modules", interactive=True),
        End("hsmsim serve --modules 3 &", interrupt=False),
    ]),
    Scenario("hsmsim --help: a softcard", world=WorldSpec(modules=1, shared=False),
             passphrases={"mycard": "secret"},
             steps=[Run("hsmsim softcard create mycard", output=(r"created softcard mycard",))]),
    Scenario("hsmsim --help: a key", world=WorldSpec(modules=1, softcards=(("mycard", "secret"),),
                                                     shared=False), steps=[
        Run("hsmsim key generate --type ec-p256 --label signer --protect softcard:mycard",
            output=(r"generated ec-p256 key 'signer'",)),
    ]),
    Scenario("hsmsim --help: the fleet", world=WorldSpec(modules=2, shared=False), steps=[
        Run("hsmsim module clear 2"),
    ]),
    Scenario("hsmsim --help: module list", world=STANDARD, steps=[
        Run("hsmsim module list", output=(r"^\s*3\s",)),
    ]),
    Scenario("hsmfleet --help: simulated HSMs in the background", env=OWN_WORLD_ENV, steps=[
        Start("hsmfleet serve --simulate --modules 3 &", ready=r"^hsmfleet: ready: 3 modules",
              interactive=True),
        End("hsmfleet serve --simulate --modules 3 &", interrupt=False),
    ]),
    Scenario("hsmfleet --help: the fleet", world=STANDARD, steps=[
        Run("hsmfleet module list", output=(r"^\s*3\s",)),
        Run("hsmfleet softcard list", output=(r"signing",)),
    ]),
    Scenario("hsmfleet --help: maintenance", world=WorldSpec(modules=2, shared=False), steps=[
        Run("hsmfleet module drain 2"),
    ]),
    # -- the demo by hand ------------------------------------------------------------
    Scenario("README: the demo by hand", passphrases={"democard": "correct horse"}, steps=[
        Start(DEMO_FLEET, ready=r"^hsmsim: ready: 3 modules"),
        Start(DEMO_CLIENT, ready=r"client: +1\.\d s"),
        Run(DEMO_FAULTS, output=(r"^4\s*$",)),
        End(DEMO_CLIENT, interrupt=False, timeout=60,
            output=(r"client: done: \d+ signatures verified in 20\.\d s, 0 errors",
                    r"module 2: 1 token\(s\) loaded", r"module 4: 1 token\(s\) loaded",
                    r"reloaded 1 key\(s\) onto module 2", r"reloaded 1 key\(s\) onto module 4")),
        Run(DEMO_END, env={"NFAST_KMDATA": "{home}/demo/world",
                           "HSMSIM_SOCKET": "{home}/demo/client.sock",
                           "HSMSIM_ADMIN_SOCKET": "{home}/demo/admin.sock"}, check=objects_zero),
        End(DEMO_FLEET, status=0),
    ]),
    # -- not run here: checked against what they name --------------------------------
    Checked("README: quick start",
            "scripts/dev.sh demo\nscripts/dev.sh test",
            by="tests/e2e/test_demo.py runs scripts/demo.sh, which `dev.sh demo` runs once built; "
               "`dev.sh test` is this suite",
            why="installs Debian packages and builds a tree of its own (minutes); `test` would "
                "run this test inside itself",
            check=check_quick_start),
    Checked("README: building by hand",
            """\
cmake --preset default          # or: ci (warnings as errors), asan, tsan, fuzz
cmake --build --preset default
ctest --preset default""",
            by="this build tree: made with `cmake --preset` (scripts/dev.sh test: preset ci)",
            why="a second full build takes minutes on these machines",
            check=check_build_by_hand),
    Checked("README: fuzzing",
            """\
scripts/dev.sh fuzz        # every target for 30 s (FUZZ_SECONDS), as CI does
FUZZ_SECONDS=3600 FUZZ_JOBS=all FUZZ_DIR=/tmp/fuzz nice -n 19 scripts/dev.sh fuzz""",
            by=".ci/run, which runs `scripts/dev.sh fuzz`",
            why="30 s per target, and the second an hour",
            check=check_fuzz),
    Checked("README: installing",
            """\
cmake --install build/default --prefix /usr/local    # or DESTDIR=... for staging
(cd build/default && cpack)                          # preloadrun_0.1.0_amd64.deb
apt install ./build/default/preloadrun_0.1.0_amd64.deb""",
            by="tests/install/test_install.py: cmake --install (prefixes /usr and /usr/local, "
               "DESTDIR), cpack, dpkg --root installing and purging the package",
            why="installs into the host's /usr/local and dpkg database",
            check=check_installing),
    Checked("README: uninstalling",
            """\
apt purge preloadrun
rm -r /var/lib/hsmsim        # destroys the world key and every key of the world
userdel hsmfleet
userdel hsmsim""",
            by="tests/install/test_install.py: dpkg --root removes and purges the package, "
               "whose postrm names what it keeps",
            why="removes the host's package, world and user",
            check=check_uninstalling),
    Checked("README: systemd",
            """\
systemd-sysusers                                      # the hsmsim user (the package made it)
systemctl enable --now hsmsim.service
usermod -aG hsmsim myapp                              # may use the client socket
mkdir -p -m 700 /etc/credstore.encrypted              # not there on a fresh system
systemd-ask-password -n "mycard passphrase:" |
  systemd-creds encrypt --name=passphrase - /etc/credstore.encrypted/preloadrun-mycard.cred
systemctl edit preloadrun@mycard                      # [Service] User=myapp Group=myapp
systemctl enable --now preloadrun@mycard.service""",
            by="tests/e2e/test_deploy.py: the units pass systemd-analyze verify, and their "
               "ExecStart= run as systemd runs them; the credential's lines run here as "
               "written",
            why="systemctl needs systemd as PID 1, which this machine does not run",
            check=check_systemd),
    Checked("README: an application's unit",
            """\
[Unit]
Requires=preloadrun@mycard.service
After=preloadrun@mycard.service
[Service]
User=myapp
Environment=NFAST_NFKM_TOKENSFILE=/run/preloadrun/mycard/tokens.json
Environment=CKNFAST_LOADSHARING=1 CKNFAST_RELOAD_KEYS=1 HSMSIM_SOCKET=/run/hsmsim/client.sock""",
            by="tests/e2e/test_deploy.py: an application pointed at preloadrun@mycard's tokens "
               "file; here: every name and path is the shipped units'",
            why="a unit file, for a running systemd",
            check=check_app_unit),
    Checked("README: chaos soak",
            "bench/soak/soak.py --build-dir build/default --events 10000 --report soak.json",
            by="ctest bench.soak_short: soak.py with 400 events",
            why="10000 events take tens of minutes",
            check=check_soak),
    Checked("preloadrun-tokens(5): the file",
            """\
{
  "format": "preloadrun-tokens",
  "version": 2,
  "generation": 3,
  "owner": { "pid": 4242, "start_time": 81234, "hostname": "app1",
             "boot_id": "6f1c2a4e-0d5b-4a4e-9d1e-2b7f1d6c9a10",
             "instance": "9b2f7c1d4e5a60718293a4b5c6d7e8f9" },
  "world": "0f3a9c2e1b7d4f6a8c0e2b4d6f8a1c3e5b7d9f0a",
  "service_instance": "3d0c5e7a9b1f2e4d6c8a0b2d4f6e8a1c",
  "high_availability": true,
  "modules": [
    { "number": 1, "esn": "5A1C-83F2-0B17", "state": "usable",
      "generation": 2, "reloads": 2, "last_reload_ms": 1795723200123,
      "given_up": false },
    { "number": 2, "esn": "77D0-1E9B-C4A2", "state": "usable",
      "generation": 0, "reloads": 1, "last_reload_ms": 1795723100456,
      "given_up": false }
  ],
  "tokens": [
    { "type": "softcard", "name": "mycard",
      "hash": "ffeeddccbbaa99887766554433221100ffeeddcc",
      "loaded": [
        { "module": 1, "esn": "5A1C-83F2-0B17", "module_generation": 2, "handle": 17 },
        { "module": 2, "esn": "77D0-1E9B-C4A2", "module_generation": 0, "handle": 3 } ] }
  ]
}""",
            by="preloadrun itself, which reads it here",
            why="a file, not a command",
            check=check_tokens_file),
    Checked("preloadrun-fleet(5): a fleet of two network HSMs",
            FLEET_EXAMPLE,
            by="tests/e2e/members/test_members.py: SoftHSM2 tokens behind p11-kit servers as the "
               "members of such a file, under preloadrun and a real client",
            why="its members are network HSMs at /run/hsm-*.sock, which this machine has not",
            check=check_fleet_config),
    Checked("preloadrun-fleet(5): serving the members",
            "hsmfleet serve --fleet /etc/preloadrun/fleet.toml &\npreloadrun -s signing -- myapp",
            by="tests/e2e/members/test_members.py (the same two commands over a farm of members)",
            why="the file names network HSMs this machine has not",
            check=check_fleet_commands),
    Checked("hsmfleet --help: serving the members",
            "hsmfleet serve --fleet /etc/hsmfleet/fleet.toml &",
            by="tests/e2e/members/test_members.py (hsmfleet serve --fleet over a farm of members)",
            why="the file names HSMs this machine has not",
            check=check_fleet_commands),
    Checked("README: maintenance of a member",
            MAINTENANCE,
            by="tests/e2e/members/test_members.py drains and undrains a member under a client",
            why="not a scenario of its own: it is run here as written, against a simulated "
                "fleet of two modules",
            check=check_maintenance),
]


# -- fixtures ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def programs():
    found = {}
    for name, var in (("preloadrun", "PRELOADRUN"), ("hsmsim", "HSMSIM"), ("hsmfleet", "HSMFLEET"),
                      ("module", "PKCS11_MODULE"), ("build", "DOCS_BUILD_DIR")):
        path = os.environ.get(var)
        if not path or not os.path.exists(path):
            pytest.fail(f"{var} must name the build's {name} (run through ctest)")
        found[name] = path
    return found


@pytest.fixture(scope="module")
def examples(programs):
    return all_examples({name: programs[name] for name in ("preloadrun", "hsmsim", "hsmfleet")})


@pytest.fixture(scope="module")
def worlds(programs):
    """Shared worlds, served once for this module and stopped at its end."""
    served = {}

    def get(spec):
        if not spec.shared:
            return World(programs["hsmsim"], spec)
        if spec not in served:
            served[spec] = World(programs["hsmsim"], spec)
        return served[spec]

    yield get
    for world in served.values():
        world.close()


# -- the drift tests: docs and registry agree --------------------------------------

def registry_texts():
    texts = {}
    for entry in REGISTRY:
        for text in entry.texts():
            assert text not in texts, f"two entries for one example:\n{text}"
            texts[text] = entry
    return texts


def test_every_example_in_the_docs_has_an_entry(examples):
    known = registry_texts()
    missing = [e for text, e in examples.items() if text not in known]
    assert not missing, "\n\n".join(
        f"{', '.join(e.where)}: an example that no test runs:\n{e.text}\n"
        "Add it to REGISTRY in tests/docs/test_examples.py, by its exact text: a Run step "
        "in the Scenario it belongs to (its world, files, what must hold), or, if it cannot "
        "run here, a Checked entry saying which test covers it and why." for e in missing)


def test_every_entry_is_still_in_the_docs(examples):
    stale = [text for text in registry_texts() if text not in examples]
    assert not stale, "\n\n".join(
        f"REGISTRY has an example that the docs no longer show:\n{text}\n"
        "Edit or remove its entry in tests/docs/test_examples.py (an edited example: put "
        "its new text in the entry, and check that the test still says what must hold)."
        for text in stale)


# -- running them ------------------------------------------------------------------

SCENARIOS = [e for e in REGISTRY if isinstance(e, Scenario)]
CHECKED = [e for e in REGISTRY if isinstance(e, Checked)]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_examples_run_as_written(scenario, programs, worlds):
    world = worlds(scenario.world) if scenario.world else None
    sb = Sandbox(programs, programs["module"], world=world, files=scenario.files,
                 private=scenario.private, env=scenario.env, passphrases=scenario.passphrases)
    started = {}
    try:
        for step in scenario.steps:
            step.step(sb, started)
        assert not started, f"started and never ended: {list(started)}"
    finally:
        sb.close()
        if world is not None and not scenario.world.shared:
            world.close()


@pytest.mark.parametrize("entry", CHECKED, ids=[c.name for c in CHECKED])
def test_examples_not_run_here_are_checked(entry, programs):
    assert entry.by and entry.why
    entry.check(entry.text, programs)
