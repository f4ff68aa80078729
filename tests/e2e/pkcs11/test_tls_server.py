"""A TLS server whose private key lives on the HSMs: `openssl s_server` with
the pkcs11 engine through the module, under preloadrun, serves a client loop
of TLS 1.3 handshakes (Python's ssl, each checking the server's certificate,
which the HSM key signed) while an HSM module is cleared and a new one is
enrolled. No handshake may fail, and the new module must take its share."""

import os
import socket
import ssl
import subprocess
import time

import pytest

from conftest import client_env, run, wait_for

pytestmark = pytest.mark.skipif(
    os.environ.get("PRELOADRUN_SANITIZE") == "1",
    reason="uninstrumented client cannot load the ASan-built module")

KEY_URI = "pkcs11:token=card1;object=eck;type=private;pin-value=any"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def handshake(context, port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.version()


def test_tls_server_key_on_the_hsms_through_a_clear_and_an_enrolment(world, module_path,
                                                                       tmp_path):
    preloadrun = os.environ["PRELOADRUN"]
    env = client_env(world, extra={"PKCS11_MODULE_PATH": module_path})
    cert = tmp_path / "cert.pem"
    # The server's certificate, signed by its key on the HSMs.
    run([preloadrun, "-s", "card1", "--passphrase-file", world.pinfile, "--", "openssl", "req",
         "-new", "-x509", "-days", "1", "-subj", "/CN=localhost", "-engine", "pkcs11",
         "-keyform", "engine", "-key", KEY_URI, "-out", str(cert)], env)
    port = free_port()
    server = subprocess.Popen(
        [preloadrun, "-s", "card1", "--passphrase-file", world.pinfile, "--", "openssl",
         "s_server", "-accept", str(port), "-engine", "pkcs11", "-keyform", "engine", "-key",
         KEY_URI, "-cert", str(cert), "-quiet"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "w"))
    context = ssl.create_default_context(cafile=str(cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    done, failed = 0, []
    try:
        def serving():
            try:
                handshake(context, port)
                return True
            except OSError:
                return False
        wait_for(serving, timeout=30, what="the TLS server's first handshake")
        before = {n: m["ops"] for n, m in world.modules().items()}

        def loop(seconds):
            nonlocal done
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    assert handshake(context, port) == "TLSv1.3"
                    done += 1
                except (OSError, ssl.SSLError, AssertionError) as e:
                    failed.append(repr(e))
        loop(1.5)
        world.ok("module", "clear", "2")
        loop(1.5)
        added = int(world.ok("module", "add").stdout.split()[-1])
        loop(3.0)
        # Every module served handshakes; the enrolled one too, once
        # preloadrun loaded the card there and the server's module the key.
        def new_module_serves():
            loop(0.2)
            return world.modules()[added]["ops"] > 0
        wait_for(new_module_serves, timeout=20, what=f"module {added} serving the server's key")
    finally:
        server.terminate()
        server.wait(15)
    after = {n: m["ops"] for n, m in world.modules().items()}
    log = (tmp_path / "server.log").read_text()
    assert failed == [], (failed[:5], log[-2000:])
    assert done > 50, done
    for number in (1, 2, 3):
        assert after[number] > before.get(number, 0), (before, after)
