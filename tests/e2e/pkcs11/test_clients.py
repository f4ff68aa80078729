"""Real clients use libpreloadrun-pkcs11.so unchanged: pkcs11-tool (with
--test), p11tool, the OpenSSL pkcs11 engine and p11-kit; signatures are checked
by plain OpenSSL against the exported public keys."""

import hashlib
import os
import subprocess

import pytest

from conftest import PIN, client_env, module_log, run

# The real clients are not built with AddressSanitizer, and an ASan-built
# module cannot be loaded into them. In the ASan build these tests are left to
# the regular build, where they run; the module is exercised under ASan by the
# instrumented driver (the driver tests below, test_loadsharing, test_reload).
external_client = pytest.mark.skipif(
    os.environ.get("PRELOADRUN_SANITIZE") == "1",
    reason="uninstrumented client cannot load the ASan-built module; runs in the regular build")


def p11(module_path, *args, token="card1", login=True):
    cmd = ["pkcs11-tool", "--module", module_path]
    if token:
        cmd += ["--token-label", token]
    if login:
        cmd += ["--login", "--pin", PIN]
    return cmd + list(args)


def test_only_the_entry_points_are_exported(module_path):
    out = subprocess.run(["nm", "-D", "--defined-only", module_path], capture_output=True,
                         text=True, check=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if line.strip()]
    assert sorted(names) == ["C_GetFunctionList", "C_GetInterface", "C_GetInterfaceList"], names
    ldd = subprocess.run(["ldd", module_path], capture_output=True, text=True).stdout
    assert "libp11-kit" not in ldd


@external_client
def test_slots_under_load_sharing_and_without(world, module_path):
    out = run(p11(module_path, "--list-slots", token=None, login=False), client_env(world)).stdout
    assert "token label        : loadshared accelerator" in out
    assert "token label        : card1" in out
    assert "login required" in out
    out = run(p11(module_path, "--list-slots", token=None, login=False),
              client_env(world, loadsharing=False)).stdout
    assert "token label        : accelerator" in out


@external_client
def test_objects_private_ones_need_login(world, module_path):
    env = client_env(world)
    out = run(p11(module_path, "--list-objects", login=False), env).stdout
    assert "Public Key Object; EC" in out and "Private Key Object" not in out
    out = run(p11(module_path, "--list-objects"), env).stdout
    assert "Private Key Object; EC" in out and "label:      eck" in out
    out = run(p11(module_path, "--list-objects", token="loadshared accelerator", login=False),
              env).stdout
    assert "label:      modrsa" in out and "Private Key Object; RSA" in out


@external_client
def test_wrong_pin_is_refused(world, module_path):
    cmd = ["pkcs11-tool", "--module", module_path, "--token-label", "card1", "--login",
           "--pin", "wrong", "--list-objects"]
    r = run(cmd, client_env(world), check=False)
    assert r.returncode != 0
    assert "CKR_PIN_INCORRECT" in r.stderr + r.stdout


@external_client
def test_ec_keypair_sign_verify_with_openssl(world, module_path, tmp_path):
    env = client_env(world)
    run(p11(module_path, "--keypairgen", "--key-type", "EC:prime256v1", "--label", "k1",
            "--id", "11"), env)
    digest = tmp_path / "digest"
    digest.write_bytes(hashlib.sha256(b"hello").digest())
    sig = tmp_path / "sig"
    run(p11(module_path, "--sign", "-m", "ECDSA", "--id", "11", "-i", digest, "-o", sig,
            "--signature-format", "openssl"), env)
    pub = tmp_path / "k1.der"
    run(p11(module_path, "--read-object", "--type", "pubkey", "--id", "11", "-o", pub), env)
    r = run(["openssl", "pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey", pub,
             "-in", digest, "-sigfile", sig], env)
    assert "Signature Verified Successfully" in r.stdout
    r = run(p11(module_path, "--verify", "-m", "ECDSA", "--id", "11", "-i", digest,
                "--signature-file", sig, "--signature-format", "openssl"), env)
    assert "Signature is valid" in r.stdout
    # Multi-part hashing mechanism.
    data = tmp_path / "data"
    data.write_bytes(b"x" * 5000)
    run(p11(module_path, "--sign", "-m", "ECDSA-SHA256", "--id", "11", "-i", data, "-o", sig,
            "--signature-format", "openssl"), env)
    r = run(["openssl", "dgst", "-sha256", "-verify", "/dev/stdin", "-signature", sig, data],
            env, input=subprocess.run(["openssl", "pkey", "-pubin", "-inform", "DER", "-in", pub],
                                      capture_output=True, text=True).stdout)
    assert "Verified OK" in r.stdout


@external_client
def test_rsa_pkcs_pss_and_oaep(world, module_path, tmp_path):
    env = client_env(world)
    run(p11(module_path, "--keypairgen", "--key-type", "rsa:2048", "--label", "r1",
            "--id", "22"), env)
    pub_der = tmp_path / "r1.der"
    run(p11(module_path, "--read-object", "--type", "pubkey", "--id", "22", "-o", pub_der), env)
    pub = tmp_path / "r1.pem"
    run(["openssl", "pkey", "-pubin", "-inform", "DER", "-in", pub_der, "-out", pub], env)
    data = tmp_path / "data"
    data.write_bytes(b"to be signed\n")
    sig = tmp_path / "sig"
    run(p11(module_path, "--sign", "-m", "SHA256-RSA-PKCS", "--id", "22", "-i", data, "-o", sig),
        env)
    r = run(["openssl", "dgst", "-sha256", "-verify", pub, "-signature", sig, data], env)
    assert "Verified OK" in r.stdout
    run(p11(module_path, "--sign", "-m", "SHA256-RSA-PKCS-PSS", "--id", "22", "-i", data,
            "-o", sig), env)
    r = run(["openssl", "dgst", "-sha256", "-verify", pub, "-sigopt", "rsa_padding_mode:pss",
             "-sigopt", "rsa_pss_saltlen:-1", "-signature", sig, data], env)
    assert "Verified OK" in r.stdout
    # OAEP: encrypted by OpenSSL, decrypted in the HSM.
    plain = tmp_path / "plain"
    plain.write_bytes(b"secret message")
    enc = tmp_path / "enc"
    run(["openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", pub, "-in", plain, "-out", enc,
         "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
         "-pkeyopt", "rsa_mgf1_md:sha256"], env)
    dec = tmp_path / "dec"
    run(p11(module_path, "--decrypt", "-m", "RSA-PKCS-OAEP", "--hash-algorithm", "SHA256",
            "--mgf", "MGF1-SHA256", "--id", "22", "-i", enc, "-o", dec), env)
    assert dec.read_bytes() == b"secret message"


@external_client
def test_pkcs11_tool_test_passes(world, module_path):
    env = client_env(world)
    run(p11(module_path, "--keypairgen", "--key-type", "rsa:2048", "--label", "rt",
            "--id", "33"), env)
    r = run(p11(module_path, "--test"), env)
    assert "No errors" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "all 4 signature functions seem to work" in r.stdout


@external_client
def test_p11tool(world, module_path):
    env = client_env(world, extra={"GNUTLS_PIN": PIN})
    base = ["p11tool", "--provider", module_path, "--login"]
    out = run(base + ["--list-all", "pkcs11:token=card1"], env).stdout
    assert "object=eck;type=private" in out
    run(base + ["--generate-privkey", "ECDSA", "--label", "gk1", "pkcs11:token=card1"], env)
    r = run(base + ["--test-sign", "pkcs11:token=card1;object=gk1;type=private"], env)
    assert "Verifying against public key in the token... ok" in r.stdout + r.stderr
    r = run(base + ["--test-sign", "pkcs11:token=card1;object=eck;type=private"], env)
    out = r.stdout + r.stderr
    assert "Verifying against public key in the token... ok" in out


@external_client
def test_openssl_engine(world, module_path, tmp_path):
    env = client_env(world, extra={"PKCS11_MODULE_PATH": module_path})
    digest = tmp_path / "digest"
    digest.write_bytes(hashlib.sha256(b"engine").digest())
    sig = tmp_path / "sig"
    run(["openssl", "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-inkey",
         f"pkcs11:token=card1;object=eck;type=private;pin-value={PIN}", "-sign", "-in", digest,
         "-out", sig], env)
    pub = tmp_path / "eck.der"
    run(p11(module_path, "--read-object", "--type", "pubkey", "--id", "01", "-o", pub),
        client_env(world))
    r = run(["openssl", "pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey", pub,
             "-in", digest, "-sigfile", sig], env)
    assert "Signature Verified Successfully" in r.stdout


@external_client
def test_p11_kit_serves_the_module(world, module_path, tmp_path):
    sock = str(tmp_path / "p11kit.sock")
    env = client_env(world)
    server = subprocess.Popen(["p11-kit", "server", "-f", "-s", "--provider", module_path,
                               "-n", sock, "pkcs11:token=card1"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        from conftest import wait_for
        wait_for(lambda: os.path.exists(sock), what="p11-kit server socket")
        cenv = dict(env, P11_KIT_SERVER_ADDRESS=f"unix:path={sock}")
        client = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
        out = run(["pkcs11-tool", "--module", client, "--token-label", "card1", "--login",
                   "--pin", PIN, "--list-objects"], cenv).stdout
        assert "label:      eck" in out
    finally:
        server.terminate()
        server.wait(10)


def test_c_initialize_forms_and_lifecycle(world, module_path, driver_bin):
    r = run([driver_bin, "initargs", module_path], client_env(world))
    assert "initargs ok" in r.stdout


def test_attribute_conventions(world, module_path, driver_bin):
    r = run([driver_bin, "attrs", module_path, "card1", PIN, "01"], client_env(world))
    assert "attrs ok" in r.stdout


def test_aes_gcm_round_trip(world, module_path, driver_bin):
    """pkcs11-tool 0.23 cannot pass GCM parameters; the driver application does."""
    r = run([driver_bin, "gcm", module_path], client_env(world))
    assert "gcm ok" in r.stdout


def test_rsa_pkcs1_decryption_failures_look_alike(world, module_path, driver_bin):
    """Whatever is wrong with a CKM_RSA_PKCS ciphertext (padding, block type,
    size), the application gets the same CK_RV and the module the same words
    from the HSM: nothing tells one padding error from another."""
    r = run([driver_bin, "rsa-pkcs", module_path], client_env(world))
    assert "rsa-pkcs ok" in r.stdout
    marker = "C_Decrypt -> CKR 0x40: "  # CKR_ENCRYPTED_DATA_INVALID
    reasons = [line.split(marker, 1)[1] for line in module_log(world).splitlines()
               if marker in line]
    assert len(reasons) == 5, module_log(world)
    assert len(set(reasons)) == 1, reasons


def test_fork_child_gets_a_fresh_state(world, module_path, driver_bin):
    r = run([driver_bin, "fork", module_path, "card1", PIN, "01"], client_env(world))
    assert "fork ok" in r.stdout


@external_client
def test_logging_off_by_default(world, module_path):
    env = client_env(world)
    del env["PRELOADRUN_PKCS11_LOG"]
    r = run(p11(module_path, "--list-objects"), env)
    assert "preloadrun-pkcs11" not in r.stderr


@external_client
def test_p11_kit_list_modules_with_a_module_file(world, module_path, tmp_path):
    """p11-kit finds the module through a .module file and lists its tokens.

    p11-kit ignores the user's configuration when run as root, so the listing
    runs as `nobody` with a HOME holding ~/.config/pkcs11/modules/. The test
    gives nobody's group access to the service socket, as an operator would
    give an application's group.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to run p11-kit as another user")
    import grp
    import pwd
    import shutil
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid)
    import pathlib
    import tempfile
    # Not under tmp_path: pytest's base directory is private to root.
    home = pathlib.Path(tempfile.mkdtemp(prefix="p11home"))
    modules = home / ".config" / "pkcs11" / "modules"
    modules.mkdir(parents=True)
    # A copy of the module: the build tree may be where nobody cannot read.
    module_copy = home / "libpreloadrun-pkcs11.so"
    shutil.copy(module_path, module_copy)
    (modules / "preloadrun.module").write_text(f"module: {module_copy}\n")
    for path in [home, home / ".config", home / ".config" / "pkcs11", modules]:
        os.chmod(path, 0o755)
    os.chmod(module_copy, 0o755)
    os.chmod(modules / "preloadrun.module", 0o644)
    os.chmod(os.path.dirname(world.socket), 0o755)
    os.chown(world.socket, -1, group.gr_gid)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "HSMSIM_SOCKET": world.socket, "CKNFAST_LOADSHARING": "1"}
    r = run([shutil.which("setpriv"), f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
             "--clear-groups", "p11-kit", "list-modules"], env)
    shutil.rmtree(home)
    out = r.stdout
    assert "preloadrun: " in out, out
    section = out[out.index("preloadrun: "):]
    assert "token: loadshared accelerator" in section
    assert "token: card1" in section
