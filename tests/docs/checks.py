"""Checks for the registry in test_examples.py: of what an example left
behind (step checks: check(sandbox, output)), and of what an example that
cannot run here names, against the sources (check(text, programs))."""

import json
import os
import re
import shlex
import subprocess

from examples import SOURCE
from sandbox import TIMEOUT, Sandbox

# -- what an example left behind ---------------------------------------------------


def file_of(path):
    def check(sb, output):
        assert os.path.getsize(sb.host_path(path)) > 0, f"{path} is empty"
    return check


def gone(path):
    def check(sb, output):
        for p in (path, path + ".lock"):
            assert not os.path.exists(sb.host_path(p)), f"{p} is still there"
    return check


def env_file_written(sb):
    path = sb.host_path("/run/app/env")
    return os.path.exists(path) and "echo preloadrun pid" in sb.read("/run/app/env")


def live_json(sb, output):
    doc = json.loads(output[output.index("{"):])
    assert doc["live"] is True and doc["file"]["tokens"][0]["name"] == "mycard", doc


def debug_log(sb, output):
    log = sb.read("/var/log/app-pkcs11.log")
    assert re.search(r"preloadrun-pkcs11\[\d+\]: debug: ", log), log[-2000:]


def objects_zero(sb, output):
    rows = [line for line in output.splitlines() if re.match(r"^\s*\d+\s", line)]
    assert rows, output
    header = next(line for line in output.splitlines() if "OBJECTS" in line)
    column = header.split().index("OBJECTS")
    assert all(row.split()[column] == "0" for row in rows), output


# -- what an example that does not run here names ----------------------------------


def dev_sh_usage():
    r = subprocess.run([os.path.join(SOURCE, "scripts", "dev.sh")], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2, r
    return r.stderr


def check_quick_start(text, programs):
    usage = dev_sh_usage()
    for line in text.splitlines():
        command = shlex.split(line)[1]
        assert re.search(rf"dev\.sh {command}\b", usage), f"dev.sh has no {command}: {usage}"
    with open(os.path.join(SOURCE, "scripts", "dev.sh")) as f:
        assert re.search(r'demo\).*scripts/demo\.sh', f.read()), "dev.sh demo runs demo.sh"


def check_build_by_hand(text, programs):
    with open(os.path.join(SOURCE, "CMakePresets.json")) as f:
        presets = json.load(f)
    names = {kind: {p["name"] for p in presets[kind]}
             for kind in ("configurePresets", "buildPresets", "testPresets")}
    assert "default" in names["buildPresets"] and "default" in names["testPresets"]
    # "# or: ci (warnings as errors), asan, tsan, fuzz"
    offered = re.findall(r"\b(default|ci|asan|tsan|fuzz)\b", text)
    assert set(offered) <= names["configurePresets"], (offered, names)


def check_fuzz(text, programs):
    assert re.search(r"dev\.sh fuzz\b", dev_sh_usage())
    with open(os.path.join(SOURCE, "scripts", "dev.sh")) as f:
        script = f.read()
    for variable in re.findall(r"\b(FUZZ_[A-Z]+)=", text):
        assert variable in script, f"dev.sh does not read {variable}"
    assert '== all' in script, "FUZZ_JOBS=all"


def project_version():
    with open(os.path.join(SOURCE, "CMakeLists.txt")) as f:
        return re.search(r"project\(preloadrun\s+VERSION\s+(\S+)", f.read()).group(1)


def check_installing(text, programs):
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    packages = set(re.findall(r"preloadrun_\S+\.deb", text))
    assert packages == {f"preloadrun_{project_version()}_{arch}.deb"}, packages


def check_uninstalling(text, programs):
    """The package's postrm says to run exactly the commands the README gives
    for what purging keeps."""
    with open(os.path.join(SOURCE, "dist", "debian", "postrm")) as f:
        postrm = f.read()
    for line in text.splitlines():
        command = line.split("#")[0].strip()
        if command.startswith("apt "):
            continue
        assert command in postrm, f"{command!r}: not what the package's postrm says"


def unit_entries(text):
    """[(section, key, value)] of a unit file, repeated keys (Environment=) kept."""
    entries, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key, value))
    return entries


def unit_file(name):
    with open(os.path.join(SOURCE, "dist", "systemd", name)) as f:
        return unit_entries(f.read())


def values(entries, section, key):
    return [v for s, k, v in entries if (s, k) == (section, key)]


def environment(entries):
    env = {}
    for assignment in values(entries, "Service", "Environment"):
        for item in shlex.split(assignment):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def check_app_unit(text, programs):
    app = unit_entries(text)
    env = environment(app)
    assert values(app, "Unit", "Requires") == values(app, "Unit", "After") == [
        "preloadrun@mycard.service"]
    argv = shlex.split(values(unit_file("preloadrun@.service"), "Service", "ExecStart")[0]
                       .replace("%i", "mycard"))
    assert env["NFAST_NFKM_TOKENSFILE"] == argv[argv.index("-f") + 1]
    for unit in ("hsmsim.service", "preloadrun@.service"):
        assert env["HSMSIM_SOCKET"] == environment(unit_file(unit))["HSMSIM_SOCKET"], unit
    assert env["CKNFAST_LOADSHARING"] == env["CKNFAST_RELOAD_KEYS"] == "1"


def check_soak(text, programs):
    argv = shlex.split(text)
    r = subprocess.run([os.path.join(SOURCE, argv[0]), "--help"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    for option in (a for a in argv if a.startswith("--")):
        assert option in r.stdout, f"soak.py has no {option}"


def check_systemd(text, programs):
    """The credential the README makes is the one preloadrun@.service loads,
    the group it adds the user to is the socket's, the user is sysusers.d's,
    the units it starts are shipped; and its credential lines run."""
    service = unit_file("preloadrun@.service")
    name, _, path = values(service, "Service", "LoadCredentialEncrypted")[0].partition(":")
    m = re.search(r"systemd-creds encrypt --name=(\S+) - (\S+)", text)
    assert (m.group(1), m.group(2)) == (name, path.replace("%i", "mycard")), m.groups()
    argv = shlex.split(values(service, "Service", "ExecStart")[0])
    assert argv[argv.index("--passphrase-file") + 1] == f"%d/{name}"
    assert values(unit_file("hsmsim.service"), "Service", "Group") == ["hsmsim"]
    assert re.search(r"usermod -aG hsmsim ", text)
    with open(os.path.join(SOURCE, "dist", "sysusers.d", "hsmsim.conf")) as f:
        assert re.search(r"^u\s+hsmsim\b", f.read(), re.M)
    shipped = os.listdir(os.path.join(SOURCE, "dist", "systemd"))
    for unit in re.findall(r"systemctl (?:enable --now|edit) (\S+)", text):
        unit = re.sub(r"@[^.]+", "@", unit)
        assert unit in shipped or unit + ".service" in shipped, unit
    # Its credential lines, as written, on a terminal: the file they make
    # decrypts to the passphrase typed, which is what LoadCredentialEncrypted=
    # gives the service. /etc and /var/lib/systemd (the host key) are private.
    lines = "\n".join(line for line in text.splitlines()
                      if not re.match(r"(systemctl|systemd-sysusers|usermod) ", line))
    sb = Sandbox(programs, programs["module"], private=("/etc", "/var/lib/systemd"),
                 passphrases={"mycard": "secret"})
    try:
        shell = sb.spawn(lines)
        assert shell.wait() == 0, f"{lines}\n--- its output:\n{shell.output()}"
        r = subprocess.run(sb.argv("systemd-creds", "decrypt", "--name=passphrase",
                                   path.replace("%i", "mycard"), "-"),
                           capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 0 and r.stdout == "secret", r
    finally:
        sb.close()


def check_tokens_file(text, programs):
    """preloadrun reads the example: not live (its owner is long gone), but
    not corrupt, and shown as it is."""
    sb = Sandbox(programs, programs["module"], files={"t/tokens.json": text})
    try:
        os.chmod(sb.host_path("t"), 0o700)
        r = subprocess.run(sb.argv(programs["preloadrun"], "status", "t/tokens.json", "--json"),
                           capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 1, r
        doc = json.loads(r.stdout)
        assert doc["live"] is False and doc["file"] == json.loads(text), doc
        assert "corrupt" not in doc["reason"], doc
    finally:
        sb.close()


def check_fleet_config(text, programs):
    """The service accepts the example's file as it is: two members, named as
    written, and the token set (the members fail, their servers being
    elsewhere, but the file is valid and served)."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="fleet-") as root:
        config = os.path.join(root, "fleet.toml")
        with open(config, "w") as f:
            f.write(text + "\n")
        os.chmod(config, 0o600)
        env = dict(os.environ, HSMSIM_SOCKET=os.path.join(root, "c.sock"),
                   HSMSIM_ADMIN_SOCKET=os.path.join(root, "a.sock"))
        env.pop("NOTIFY_SOCKET", None)
        serve = subprocess.Popen([programs["hsmfleet"], "serve", "--fleet", config],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True)
        try:
            line = serve.stdout.readline()
            assert line.startswith("hsmfleet: ready: 2 modules, PKCS#11 members of "), line
            out = subprocess.run([programs["hsmsim"], "module", "list", "--json"], env=env,
                                 capture_output=True, text=True, timeout=TIMEOUT, check=True)
            assert [m["esn"] for m in json.loads(out.stdout)] == ["left", "right"], out.stdout
            out = subprocess.run([programs["hsmsim"], "softcard", "list"], env=env,
                                 capture_output=True, text=True, timeout=TIMEOUT, check=True)
            assert "signing" in out.stdout, out.stdout
        finally:
            serve.terminate()
            assert serve.wait(TIMEOUT) == 0


def check_fleet_commands(text, programs):
    """The commands take what the example gives them; hsmfleet serve without
    --fleet (or --simulate) is refused."""
    serve_help = subprocess.run([programs["hsmfleet"], "serve", "--help"], capture_output=True,
                                text=True, timeout=TIMEOUT).stdout
    assert "--fleet" in serve_help
    bare = subprocess.run([programs["hsmfleet"], "serve"], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert bare.returncode == 2 and "--fleet FILE" in bare.stderr, bare
    assert "hsmfleet serve --fleet " in text
    if "preloadrun" in text:
        assert "preloadrun -s signing -- myapp" in text


def check_maintenance(text, programs):
    """The lines run as written against a simulated fleet of two modules:
    module 1 drained, then back in service."""
    import tempfile
    import time
    with tempfile.TemporaryDirectory(prefix="drain-") as root:
        world = os.path.join(root, "world")
        os.mkdir(world, 0o700)
        env = dict(os.environ, NFAST_KMDATA=world, HSMSIM_SOCKET=os.path.join(root, "c.sock"),
                   HSMSIM_ADMIN_SOCKET=os.path.join(root, "a.sock"),
                   PATH=os.path.dirname(programs["hsmsim"]) + ":" + os.environ["PATH"])
        env.pop("NOTIFY_SOCKET", None)
        serve = subprocess.Popen([programs["hsmsim"], "serve", "--modules", "2",
                                  "--init-delay-ms", "100"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
        try:
            assert serve.stdout.readline().startswith("hsmsim: ready: 2 modules")
            r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], env=env,
                               capture_output=True, text=True, timeout=TIMEOUT)
            assert r.returncode == 0, r
            deadline = time.monotonic() + 10
            while True:
                out = subprocess.run([programs["hsmsim"], "module", "list", "--json"], env=env,
                                     capture_output=True, text=True, timeout=TIMEOUT,
                                     check=True).stdout
                first = json.loads(out)[0]
                if first["state"] == "usable" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert first["state"] == "usable" and first["generation"] == 1, first
            assert not first["drained"], first
        finally:
            serve.terminate()
            assert serve.wait(TIMEOUT) == 0
