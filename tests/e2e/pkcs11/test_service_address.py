"""The application reaches the HSM service preloadrun loaded its tokens on.

preloadrun passes the service's socket on, made absolute, in HSMSIM_SOCKET:
to its child (run mode and --attach) and in service mode's shell lines, so
that a real client (pkcs11-tool with the module) given nothing else talks to
that service, not to its own default. The socket is given with --socket
(absolute or relative) or comes from preloadrun's own HSMSIM_SOCKET; the
environment of the tests names no other service (no HSMSIM_SOCKET, an empty
XDG_RUNTIME_DIR), and the client changes directory before it starts, so a
relative path passed on as it was would name nothing."""

import os
import subprocess

import pytest

from conftest import client_env

# pkcs11-tool cannot load the ASan-built module: these run in the regular build.
pytestmark = pytest.mark.skipif(
    os.environ.get("PRELOADRUN_SANITIZE") == "1",
    reason="uninstrumented client cannot load the ASan-built module; runs in the regular build")

TIMEOUT = 30


def preloadrun_bin():
    path = os.environ.get("PRELOADRUN")
    if not path:
        pytest.fail("PRELOADRUN is not set: run these tests through ctest")
    return path


def bare_env(world):
    """A client's environment that names no HSM service: no HSMSIM_SOCKET,
    and an XDG_RUNTIME_DIR where the default socket does not exist."""
    env = client_env(world)
    for var in ("HSMSIM_SOCKET", "HSMSIM_ADMIN_SOCKET", "PRELOADRUN_PKCS11_LOG",
                "PRELOADRUN_PKCS11_LOG_LEVEL", "CKNFAST_LOADSHARING"):
        env.pop(var, None)
    xdg = os.path.join(world.root, "xdg")
    os.makedirs(xdg, mode=0o700, exist_ok=True)
    env["XDG_RUNTIME_DIR"] = xdg
    return env


def client(module_path, *args):
    """pkcs11-tool logged in to card1 with a PIN preloadrun makes unneeded,
    started from / (a relative HSMSIM_SOCKET would name nothing there)."""
    cmd = ["pkcs11-tool", "--module", module_path, "--token-label", "card1", "--login",
           "--pin", "not-the-passphrase", *args]
    return ["sh", "-c", 'cd / && exec "$@"', "sh", *cmd]


def sign_args(world):
    digest = os.path.join(world.root, "digest")
    with open(digest, "wb") as f:
        f.write(b"\x01" * 32)
    return ["--sign", "-m", "ECDSA", "--id", "01", "-i", digest,
            "-o", os.path.join(world.root, "sig")]


def assert_signed(world, r):
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert os.path.getsize(os.path.join(world.root, "sig")) == 64, r.stdout + r.stderr
    assert "libpreloadrun-pkcs11" not in r.stderr, r.stderr


def socket_forms(world):
    """(preloadrun's extra arguments, its environment, its working directory)
    for each way of naming the service."""
    env = bare_env(world)
    env_relative = dict(env, HSMSIM_SOCKET=os.path.basename(world.socket))
    return {
        "option": (["--socket", world.socket], env, None),
        "relative-option": (["--socket", os.path.basename(world.socket)], env, world.root),
        "relative-variable": ([], env_relative, world.root),
    }


@pytest.mark.parametrize("form", ["option", "relative-option", "relative-variable"])
def test_child_reaches_the_service_preloadrun_used(world, module_path, form):
    args, env, cwd = socket_forms(world)[form]
    probe = subprocess.run(client(module_path, "--list-objects"), env=bare_env(world),
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert probe.returncode != 0, "the client reaches a service without preloadrun's help"
    r = subprocess.run([preloadrun_bin(), "-q", *args, "-s", "card1", "--passphrase-file",
                        world.pinfile, "--", *client(module_path, *sign_args(world))],
                       env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert_signed(world, r)
    # What the child was given: the socket, absolute.
    r = subprocess.run([preloadrun_bin(), "-q", *args, "--", "sh", "-c",
                        'printf %s "$HSMSIM_SOCKET"'],
                       env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert (r.returncode, r.stdout) == (0, world.socket), r.stderr


def start_service_mode(world, args, env, cwd):
    tok = os.path.join(world.root, "tf", "tokens.json")
    os.makedirs(os.path.dirname(tok), mode=0o700, exist_ok=True)
    p = subprocess.Popen([preloadrun_bin(), "-q", *args, "-s", "card1", "--passphrase-file",
                          world.pinfile, "-f", tok], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    while True:
        line = p.stdout.readline()
        if not line:
            p.kill()
            pytest.fail(f"preloadrun printed {lines!r} and exited: {p.stderr.read()}")
        lines.append(line)
        if line.startswith("echo preloadrun pid"):
            return p, tok, "".join(lines)


def stop(p):
    p.terminate()
    assert p.wait(TIMEOUT) == 0, p.stderr.read()
    p.stdout.close()
    p.stderr.close()


@pytest.mark.parametrize("form", ["option", "relative-option", "relative-variable"])
def test_service_mode_shell_lines_name_the_service(world, module_path, form):
    args, env, cwd = socket_forms(world)[form]
    p, tok, text = start_service_mode(world, args, env, cwd)
    try:
        assert f"HSMSIM_SOCKET='{world.socket}'; export HSMSIM_SOCKET;\n" in text, text
        assert f"NFAST_NFKM_TOKENSFILE='{tok}'; export NFAST_NFKM_TOKENSFILE;\n" in text, text
        # Another shell, given only the lines, signs with the preloaded token.
        r = subprocess.run(["sh", "-c", text + 'exec "$@"', "sh",
                            *client(module_path, *sign_args(world))],
                           env=bare_env(world), capture_output=True, text=True, timeout=TIMEOUT)
        assert_signed(world, r)
    finally:
        stop(p)


@pytest.mark.parametrize("form", ["option", "relative-option", "relative-variable"])
def test_attach_passes_the_service_on(world, module_path, form):
    args, env, cwd = socket_forms(world)[form]
    owner, tok, _ = start_service_mode(world, ["--socket", world.socket], bare_env(world), None)
    try:
        r = subprocess.run([preloadrun_bin(), "-q", "--attach", tok, *args, "--",
                            *client(module_path, *sign_args(world))],
                           env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL)
        assert_signed(world, r)
    finally:
        stop(owner)


def test_attach_without_a_socket_leaves_the_child_s_default(world):
    owner, tok, _ = start_service_mode(world, ["--socket", world.socket], bare_env(world), None)
    try:
        r = subprocess.run([preloadrun_bin(), "-q", "--attach", tok, "--", "sh", "-c",
                            'printf %s "${HSMSIM_SOCKET-unset}"'],
                           env=bare_env(world), capture_output=True, text=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL)
        assert (r.returncode, r.stdout) == (0, "unset"), r.stderr
    finally:
        stop(owner)

