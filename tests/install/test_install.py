"""Installing: `cmake --install` into a DESTDIR puts every file where the
distribution's tools look (the PKCS#11 module in p11-kit's modules directory,
man pages, completions, systemd units), and `cpack` makes a Debian package
that dpkg installs into a throwaway root and removes without a trace; the
installed programs run and their man pages render from there."""

import os
import re
import subprocess

import pytest

BUILD = os.environ.get("PRELOADRUN_BUILD_DIR", "")
VERSION = os.environ.get("PRELOADRUN_VERSION", "")


def multiarch():
    return subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], capture_output=True,
                          text=True, check=True).stdout.strip()


def p11_kit_module_dir():
    return subprocess.run(["pkg-config", "--variable=p11_module_path", "p11-kit-1"],
                          capture_output=True, text=True, check=True).stdout.strip()


def expected_files(prefix):
    """Every file installed under PREFIX (relative to the root, no leading /)."""
    p = prefix.strip("/")
    zsh = "zsh/vendor-completions" if prefix == "/usr" else "zsh/site-functions"
    return {
        f"{p}/bin/preloadrun",
        f"{p}/bin/hsmfleet",
        f"{p}/bin/hsmsim",  # a symbolic link to hsmfleet
        f"{p}/lib/{multiarch()}/pkcs11/libpreloadrun-pkcs11.so",
        f"{p}/share/man/man1/preloadrun.1.gz",
        f"{p}/share/man/man1/hsmfleet.1.gz",
        f"{p}/share/man/man1/hsmsim.1.gz",  # .so man1/hsmfleet.1
        f"{p}/share/man/man5/preloadrun-tokens.5.gz",
        f"{p}/share/man/man5/preloadrun-fleet.5.gz",
        f"{p}/share/man/man7/libpreloadrun-pkcs11.7.gz",
        f"{p}/share/bash-completion/completions/preloadrun",
        f"{p}/share/bash-completion/completions/hsmsim",
        f"{p}/share/bash-completion/completions/hsmfleet",
        f"{p}/share/{zsh}/_preloadrun",
        f"{p}/share/{zsh}/_hsmsim",
        f"{p}/share/fish/vendor_completions.d/preloadrun.fish",
        f"{p}/share/fish/vendor_completions.d/hsmsim.fish",
        f"{p}/share/fish/vendor_completions.d/hsmfleet.fish",
        f"{p}/lib/systemd/system/hsmfleet.service",
        f"{p}/lib/systemd/system/hsmsim.service",
        f"{p}/lib/systemd/system/preloadrun@.service",
        f"{p}/lib/sysusers.d/hsmfleet.conf",
        f"{p}/lib/sysusers.d/hsmsim.conf",
        f"{p}/share/doc/preloadrun/README.md",
        f"{p}/share/doc/preloadrun/examples/preloadrun.module",
    }


def files_under(root):
    found = set()
    for dirpath, _, names in os.walk(root):
        for name in names:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


@pytest.fixture(scope="module", autouse=True)
def build_dir():
    if not BUILD or not os.path.isfile(os.path.join(BUILD, "CPackConfig.cmake")):
        pytest.fail("PRELOADRUN_BUILD_DIR must name a configured and built tree (run through ctest)")


def install(destdir, prefix):
    env = {**os.environ, "DESTDIR": str(destdir)}
    r = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def check_runs_from(root, prefix):
    """The installed programs run, say their version, and link nothing from
    the build tree; the man pages render with man -l."""
    bindir = os.path.join(root, prefix.strip("/"), "bin")
    for program in ("preloadrun", "hsmfleet", "hsmsim"):
        path = os.path.join(bindir, program)
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and r.stdout.startswith(f"{program} {VERSION} ("), r
        dynamic = subprocess.run(["readelf", "-d", path], capture_output=True, text=True,
                                 check=True).stdout
        assert "RPATH" not in dynamic and "RUNPATH" not in dynamic, dynamic
    module = os.path.join(root, prefix.strip("/"), "lib", multiarch(), "pkcs11",
                          "libpreloadrun-pkcs11.so")
    exported = subprocess.run(["nm", "-D", "--defined-only", module], capture_output=True,
                              text=True, check=True).stdout.splitlines()
    names = sorted(line.split()[-1] for line in exported if line.strip())
    # PKCS#11 2.40's entry point and 3.0's interfaces, nothing else.
    assert names == ["C_GetFunctionList", "C_GetInterface", "C_GetInterfaceList"], names
    assert "not found" not in subprocess.run(["ldd", module], capture_output=True,
                                             text=True).stdout
    mandir = os.path.join(root, prefix.strip("/"), "share/man")
    for section, page in (("1", "preloadrun"), ("1", "hsmfleet"), ("5", "preloadrun-tokens"),
                          ("7", "libpreloadrun-pkcs11")):
        r = subprocess.run(["man", "-l", os.path.join(mandir, f"man{section}", f"{page}.{section}.gz")],
                           capture_output=True, text=True, timeout=30,
                           env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0",
                                "PAGER": "cat"})
        assert r.returncode == 0, r.stderr
        text = re.sub(".\b", "", r.stdout)  # no bold/underline overstrikes
        for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "SEE ALSO"):
            assert f"\n{heading}\n" in text, f"{page}({section}) lacks {heading}"
    # `man hsmsim` is hsmfleet's page.
    r = subprocess.run(["man", "-M", mandir, "1", "hsmsim"], capture_output=True, text=True,
                       timeout=30, env={**os.environ, "MANWIDTH": "80", "PAGER": "cat"})
    assert r.returncode == 0 and "hsmfleet, hsmsim" in re.sub(".\b", "", r.stdout), r


def check_completions_found(root, prefix):
    """Each shell finds the installed completion without configuration
    beyond pointing its search path at the root (XDG_DATA_DIRS, fpath)."""
    share = os.path.join(root, prefix.strip("/"), "share")
    bash = subprocess.run(
        ["bash", "-c", ". /usr/share/bash-completion/bash_completion; "
         "__load_completion preloadrun && complete -p preloadrun"],
        env={**os.environ, "XDG_DATA_DIRS": share, "BASH_COMPLETION_USER_DIR": "/nonexistent"},
        capture_output=True, text=True, timeout=30)
    assert bash.returncode == 0 and "preloadrun" in bash.stdout, bash.stderr
    zdir = os.path.join(share, "zsh/vendor-completions" if prefix == "/usr"
                        else "zsh/site-functions")
    zsh = subprocess.run(["zsh", "-fc", f"fpath=({zdir} $fpath); autoload -Uz _preloadrun _hsmsim "
                          "&& autoload +X _preloadrun _hsmsim && whence -w _preloadrun _hsmsim"],
                         capture_output=True, text=True, timeout=30)
    assert zsh.returncode == 0 and zsh.stdout.count("function") == 2, zsh.stdout + zsh.stderr
    fish = subprocess.run(
        ["fish", "--no-config", "-c",
         f"set fish_complete_path {share}/fish/vendor_completions.d $fish_complete_path; "
         "complete -C 'preloadrun --softc'"],
        capture_output=True, text=True, timeout=30,
        # fish autoloads the completion of a command it finds on PATH.
        env={**os.environ, "HOME": str(root),
             "PATH": os.path.join(root, prefix.strip("/"), "bin") + ":" + os.environ["PATH"]})
    assert fish.returncode == 0 and "--softcard" in fish.stdout, fish.stdout + fish.stderr


@pytest.mark.parametrize("prefix", ["/usr", "/usr/local"])
def test_destdir_install_layout(tmp_path, prefix):
    install(tmp_path, prefix)
    assert files_under(tmp_path) == expected_files(prefix)
    assert os.readlink(tmp_path / prefix.strip("/") / "bin" / "hsmsim") == "hsmfleet"
    if prefix == "/usr":
        # p11-kit (and with it p11tool, GnuTLS) looks for modules here.
        module_dir = p11_kit_module_dir().strip("/")
        assert any(f.startswith(module_dir + "/") for f in files_under(tmp_path))
    check_runs_from(tmp_path, prefix)
    check_completions_found(tmp_path, prefix)


def test_debian_package_installs_and_removes_cleanly(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(["cpack", "--config", os.path.join(BUILD, "CPackConfig.cmake"),
                        "-B", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    debs = [name for name in os.listdir(out) if name.endswith(".deb")]
    assert len(debs) == 1, os.listdir(out)
    deb = str(out / debs[0])

    def field(name):
        return subprocess.run(["dpkg-deb", "-f", deb, name], capture_output=True, text=True,
                              check=True).stdout.strip()

    assert field("Package") == "preloadrun" and field("Version") == VERSION
    assert field("Architecture") == subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    depends = field("Depends")
    for library in ("libc6", "libssl3", "libstdc++6", "libprotobuf-lite32"):
        assert library in depends, depends

    # dpkg installs it into a throwaway root, its maintainer scripts run
    # with DPKG_ROOT set to it ("chrootless").
    root = tmp_path / "root"
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("")
    dpkg = ["dpkg", f"--root={root}", "--force-depends", "--force-not-root",
            "--force-script-chrootless", "--log=/dev/null"]
    r = subprocess.run([*dpkg, "-i", deb], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    installed = {f for f in files_under(root) if not f.startswith("var/lib/dpkg/")}
    accounts = {f for f in installed if f.startswith("etc/")}
    assert installed - accounts == expected_files("/usr")
    # postinst created the hsmfleet and hsmsim system users and groups
    # (systemd-sysusers).
    passwd = (root / "etc/passwd").read_text().splitlines()
    for user in ("hsmfleet", "hsmsim"):
        entry = [line.split(":") for line in passwd if line.startswith(f"{user}:")]
        assert len(entry) == 1 and int(entry[0][2]) < 1000, passwd
        assert entry[0][5] == f"/var/lib/{user}" and entry[0][6] == "/usr/sbin/nologin", entry
        assert any(line.startswith(f"{user}:")
                   for line in (root / "etc/group").read_text().split())
    assert os.readlink(root / "usr/bin/hsmsim") == "hsmfleet"
    check_runs_from(root, "/usr")
    check_completions_found(root, "/usr")

    # Removing leaves no file of the package; purging says what it keeps:
    # the world (keys nothing else can bring back) and the user.
    (root / "var/lib/hsmsim/kmdata").mkdir(parents=True)
    r = subprocess.run([*dpkg, "--remove", "preloadrun"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([*dpkg, "--purge", "preloadrun"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    kept = [line for line in r.stderr.splitlines() if line.startswith("preloadrun: kept")]
    assert len(kept) == 3 and "/var/lib/hsmsim" in kept[0] and "userdel hsmfleet" in kept[1] \
        and "userdel hsmsim" in kept[2], \
        r.stdout + r.stderr
    left = {f for f in files_under(root) if not f.startswith("var/lib/dpkg/")}
    assert {f for f in left if not f.startswith("etc/")} == set(), left
    assert (root / "var/lib/hsmsim/kmdata").is_dir()
