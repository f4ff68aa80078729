"""The module next to SoftHSM2, through the test programs that PKCS#11
clients in Debian carry: pkcs11-tool's --test and --test-fork, and
p11tool --test-sign, run the same way against a SoftHSM2
token and a softcard of the fleet, each with the same keys made by
pkcs11-tool. Whatever passes on SoftHSM2 passes on the module; and each of
them passes on the module, whatever SoftHSM2 does (SoftHSM2 2.6 fails some:
its OAEP decryption refuses pkcs11-tool's parameters, and a forked child
cannot initialise it again). pkcs11-tool --test-ec is left out: it makes a
token key pair in a read-only session, which both refuse
(CKR_SESSION_READ_ONLY), as PKCS#11 says; so is --test-threads, whose
threads report CKR_GENERAL_ERROR on both, now and then, whatever the module.
"""

import os
import subprocess

import pytest

from conftest import PIN, client_env, run, skip_under_asan

# pkcs11-tool and p11tool are not instrumented: they cannot load the
# ASan-built module (the default build runs this test).
pytestmark = skip_under_asan

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
SOFTHSM_PIN = "123456"


@pytest.fixture
def softhsm(tmp_path):
    conf = tmp_path / "softhsm2.conf"
    (tmp_path / "tokens").mkdir()
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n")
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    run(["softhsm2-util", "--init-token", "--free", "--label", "t1", "--so-pin", "1234", "--pin",
         SOFTHSM_PIN], env)
    return env


def make_keys(module, token, pin, env):
    tool = ["pkcs11-tool", "--module", module, "--token-label", token, "--login", "--pin", pin]
    run(tool + ["--keypairgen", "--key-type", "rsa:2048", "--id", "51", "--label", "sbs-rsa"], env)
    run(tool + ["--keypairgen", "--key-type", "EC:prime256v1", "--id", "52", "--label",
                "sbs-ec"], env)
    run(tool + ["--keygen", "--key-type", "AES:32", "--id", "53", "--label", "sbs-aes"], env)


def programs(module, token, pin):
    tool = ["pkcs11-tool", "--module", module]
    login = ["--token-label", token, "--login", "--pin", pin]
    sign = ["p11tool", "--provider", module, "--login", "--test-sign"]
    return {
        "pkcs11-tool --test": tool + login + ["--test"],
        "pkcs11-tool --test-fork": tool + ["--test-fork"],
        "pkcs11-tool --list-mechanisms": tool + ["--list-mechanisms"],
        "pkcs11-tool --list-objects": tool + login + ["--list-objects"],
        "p11tool --test-sign RSA": sign + [f"pkcs11:token={token};object=sbs-rsa;type=private"],
        "p11tool --test-sign EC": sign + [f"pkcs11:token={token};object=sbs-ec;type=private"],
    }


def outcomes(module, token, pin, env):
    env = dict(env, GNUTLS_PIN=pin)
    out = {}
    for name, argv in programs(module, token, pin).items():
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        out[name] = (r.returncode == 0, (r.stdout + r.stderr)[-600:])
    return out


def test_what_passes_on_softhsm2_passes_on_the_module(world, module_path, softhsm):
    make_keys(SOFTHSM_MODULE, "t1", SOFTHSM_PIN, softhsm)
    env = client_env(world)
    make_keys(module_path, "card1", PIN, env)
    theirs = outcomes(SOFTHSM_MODULE, "t1", SOFTHSM_PIN, softhsm)
    ours = outcomes(module_path, "card1", PIN, env)
    print({name: ok for name, (ok, _) in theirs.items()})
    failing = {name: f"(SoftHSM2 {'passes' if theirs[name][0] else 'fails'} it) {tail}"
               for name, (ok, tail) in ours.items() if not ok}
    assert not failing, failing
