"""Java's SunPKCS11 provider on the module, as people run it in production:
`keytool -genkeypair` makes an EC key pair and its self-signed certificate on
the softcard (a session key pair copied to the token with C_CopyObject, the
certificate made with C_CreateObject), `keytool -list` in another JVM finds
the entry, `jarsigner` signs a jar with the key on the HSMs (load-sharing over
the fleet) and `jarsigner -verify` accepts the signature."""

import os
import shutil
import zipfile

import pytest

from conftest import client_env, module_log, ops, run, skip_under_asan

pytestmark = [
    skip_under_asan,
    pytest.mark.skipif(shutil.which("keytool") is None or shutil.which("jarsigner") is None,
                       reason="no Java (scripts/dev.sh deps installs openjdk-17-jdk-headless)"),
]


def keystore_args(world, module_path):
    cfg = os.path.join(world.root, "sunpkcs11.cfg")
    with open(cfg, "w") as f:
        # Slot 0 is the accelerator, slot 1 the softcard card1.
        f.write(f"name = preloadrun\nlibrary = {module_path}\nslotListIndex = 1\n")
    return ["-keystore", "NONE", "-storetype", "PKCS11",
            "-providerClass", "sun.security.pkcs11.SunPKCS11", "-providerArg", cfg,
            "-storepass", "secret"]


def test_keytool_and_jarsigner_with_a_key_on_the_hsms(world, module_path):
    env = client_env(world)
    ks = keystore_args(world, module_path)
    r = run(["keytool", "-genkeypair", "-alias", "signer", "-keyalg", "EC", "-groupname",
             "secp256r1", "-dname", "CN=preloadrun signer", "-validity", "2"] + ks, env)
    listed = run(["keytool", "-list"] + ks, env).stdout
    assert "Your keystore contains 1 entry" in listed, listed
    assert "signer, PrivateKeyEntry" in listed, listed
    # The certificate and the key are token objects of the world.
    keys = world.ok("key", "list").stdout
    assert "object" in keys and "ec-p256" in keys, keys

    jar = os.path.join(world.root, "app.jar")
    with zipfile.ZipFile(jar, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
        z.writestr("hello.txt", "signed on an HSM\n")
    before = ops(world)
    r = run(["jarsigner"] + ks + [jar, "signer"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sum(ops(world).values()) > sum(before.values())  # the signature came from an HSM
    r = run(["jarsigner", "-verify", jar], env)
    assert "jar verified." in r.stdout, r.stdout + r.stderr
    with zipfile.ZipFile(jar) as z:
        names = z.namelist()
    assert "META-INF/SIGNER.SF" in names and "META-INF/SIGNER.EC" in names, names

    # Altered after signing: the verification fails.
    tampered = os.path.join(world.root, "tampered.jar")
    with zipfile.ZipFile(jar) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, b"altered\n" if name == "hello.txt" else data)
    r = run(["jarsigner", "-verify", "-strict", tampered], env, check=False)
    assert "jar verified." not in r.stdout, r.stdout


def test_keytool_with_a_wrong_pin_is_refused(world, module_path):
    env = client_env(world)
    ks = keystore_args(world, module_path)
    ks[ks.index("secret")] = "wrong"
    r = run(["keytool", "-list"] + ks, env, check=False)
    assert r.returncode != 0
    assert "load failed" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "C_Login -> CKR 0xa0" in module_log(world), module_log(world)[-2000:]  # PIN_INCORRECT
