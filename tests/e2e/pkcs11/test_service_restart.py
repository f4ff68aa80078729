"""A restart of the HSM service is invisible to an application under
preloadrun: the service keeps module generations and handles across restarts
and says which instance of it answers; preloadrun loads the tokens again and
publishes the new instance; the PKCS#11 module re-validates what it holds and
an operation that meets the restarting service waits for it
(PRELOADRUN_PKCS11_SERVICE_WAIT) instead of failing.

The scenario: restart hsmsim once after creating the key, run a client under
preloadrun, restart hsmsim again; the client signs with 3 threads throughout
and counts every error."""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import PIN, _env_path, client_env, module_log, setup_world, wait_for


def restart(sim, sig):
    """Stops hsmsim with `sig` and starts it again on the same world and sockets."""
    before = sim.modules()
    if sig == signal.SIGKILL:
        sim.kill()
        sim.proc = None
    else:
        sim.stop(sig)
    sim.start(modules=3, init_delay_ms=50)
    return before, sim.modules()


def tokens_doc(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def loaded_on(doc, module):
    return [e for t in doc["tokens"] for e in t["loaded"] if e["module"] == module]


def total_ops(sim):
    return {n: m["ops"] for n, m in sim.modules().items()}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_restarts_are_invisible_to_a_signing_client(make_service, module_path, driver_bin, sig):
    sim = setup_world(make_service(modules=3, init_delay_ms=50))
    # Once after creating the key: generation 0 and handle 1 come again in a
    # service that forgets its counters.
    _, after_first = restart(sim, signal.SIGTERM)
    assert all(m["generation"] == 1 for m in after_first.values()), after_first

    tokens = os.path.join(sim.root, "tokens.json")
    stop = os.path.join(sim.root, "stop")
    env = client_env(sim, reload=True)
    env.pop("CKNFAST_LOADSHARING", None)
    out = open(os.path.join(sim.root, "client.out"), "w")
    err = open(os.path.join(sim.root, "preloadrun.err"), "w")
    pr = subprocess.Popen(
        [_env_path("PRELOADRUN"), "-s", "card1", "--passphrase-file", sim.pinfile,
         "--socket", sim.socket, "-f", tokens, "--",
         driver_bin, "sign-until", module_path, "card1", "anything", "01", stop, "3"],
        env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        wait_for(lambda: all(v > 50 for v in total_ops(sim).values()), 30,
                 "every module serving the client")
        doc0 = tokens_doc(tokens)
        assert doc0 is not None

        before, after = restart(sim, sig)
        for n in (1, 2, 3):
            assert after[n]["generation"] > before[n]["generation"], (before, after)
        # preloadrun publishes the new instance, with new handles everywhere
        doc = wait_for(
            lambda: (d := tokens_doc(tokens)) is not None
            and d["service_instance"] != doc0["service_instance"]
            and all(loaded_on(d, n) for n in (1, 2, 3)) and d,
            15, "the tokens file of the new instance")
        for n in (1, 2, 3):
            old = {e["handle"] for e in loaded_on(doc0, n)}
            new = loaded_on(doc, n)
            assert all(e["handle"] not in old for e in new), (doc0, doc)
            assert all(e["module_generation"] == after[n]["generation"] for e in new)
        # every module serves the client again, not only one
        wait_for(lambda: all(v > 50 for v in total_ops(sim).values()), 15,
                 "every module serving the client after the restart")
    finally:
        open(stop, "w").close()
        try:
            rc = pr.wait(60)
        except subprocess.TimeoutExpired:
            pr.kill()
            pr.wait()
            rc = None
        out.close()
        err.close()
    with open(os.path.join(sim.root, "client.out")) as f:
        result = f.read()
    with open(os.path.join(sim.root, "preloadrun.err")) as f:
        stderr = f.read()
    assert rc == 0, f"preloadrun/client exited {rc}\n{result}\n{stderr}\n{module_log(sim)[-4000:]}"
    first = result.splitlines()[0]
    assert " errors=0 " in first, f"{result}\n{module_log(sim)[-4000:]}"
    assert int(first.split()[0].split("=")[1]) > 300, result
    log = module_log(sim)
    assert "the HSM service restarted" in log, log[-4000:]


def test_without_reloading_an_operation_does_not_wait(make_service, module_path, driver_bin):
    """The wait is for key reloading, where modules come back: without it a
    restart is the baseline (modules stay out), and nothing hangs."""
    sim = setup_world(make_service(modules=2, init_delay_ms=50))
    env = client_env(sim, reload=False)
    stop = os.path.join(sim.root, "stop")
    p = subprocess.Popen([driver_bin, "sign-until", module_path, "card1", PIN, "01", stop, "1"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sum(total_ops(sim).values()) > 20, 20, "signing")
        restart(sim, signal.SIGTERM)
        time.sleep(1.0)
    finally:
        open(stop, "w").close()
    stdout, _ = p.communicate(timeout=30)
    assert p.returncode == 1, stdout
    errors = [line for line in stdout.splitlines() if line.startswith("error ")]
    # Failing at once: many errors in the second after the restart, not one
    # per 5-second wait.
    assert len(errors) > 10, stdout


def test_service_wait_is_configurable_and_bounded(make_service, module_path, driver_bin):
    """A service that stays down: an operation waits PRELOADRUN_PKCS11_SERVICE_WAIT,
    then fails with CKR_DEVICE_ERROR."""
    sim = setup_world(make_service(modules=2, init_delay_ms=50))
    tokens = os.path.join(sim.root, "tokens.json")
    stop = os.path.join(sim.root, "stop")
    env = client_env(sim, reload=True, extra={"PRELOADRUN_PKCS11_SERVICE_WAIT": "1500"})
    env.pop("CKNFAST_LOADSHARING", None)
    pr = subprocess.Popen(
        [_env_path("PRELOADRUN"), "-s", "card1", "--passphrase-file", sim.pinfile,
         "--socket", sim.socket, "-f", tokens, "--",
         driver_bin, "sign-until", module_path, "card1", "anything", "01", stop, "1"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        wait_for(lambda: sum(total_ops(sim).values()) > 20, 30, "signing")
        sim.kill()
        sim.proc = None
        time.sleep(4.0)
    finally:
        open(stop, "w").close()
    stdout, stderr = pr.communicate(timeout=60)
    errors = [line for line in stdout.splitlines() if line.startswith("error ")]
    assert errors, stdout + stderr
    assert all("rv=0x30 " in line for line in errors), stdout  # CKR_DEVICE_ERROR
    times = [int(line.split("ms=")[1]) for line in errors]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # Each failure waited about 1.5 s: two or three in 4 s, never a burst.
    assert 1 <= len(errors) <= 4, stdout
    assert all(g >= 1300 for g in gaps), (times, stdout)


def test_preloadrun_restarted_at_the_same_path_is_taken_up(make_service, module_path, driver_bin):
    """preloadrun in service mode stopped and started again at the same -f
    path numbers its file's generations from 1 again: the module tells the
    new owner from the old one and takes its handles, every time."""
    sim = setup_world(make_service(modules=2, init_delay_ms=50))
    tokens = os.path.join(sim.root, "tokens.json")
    stop = os.path.join(sim.root, "stop")
    env = client_env(sim, reload=True, tokens_file=tokens)
    env.pop("CKNFAST_LOADSHARING", None)
    args = [_env_path("PRELOADRUN"), "-s", "card1", "--passphrase-file", sim.pinfile,
            "--socket", sim.socket, "-f", tokens]

    def start_preloadrun():
        p = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        doc = wait_for(lambda: (d := tokens_doc(tokens)) is not None
                       and all(loaded_on(d, n) for n in (1, 2)) and d, 20,
                       "preloadrun's tokens file")
        return p, doc

    pr, doc = start_preloadrun()
    t0 = time.monotonic()
    client = subprocess.Popen([driver_bin, "sign-until", module_path, "card1", "anything", "01",
                               stop, "1"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sum(total_ops(sim).values()) > 50, 20, "signing")
        owners = {doc["owner"]["instance"]}
        for _ in range(2):  # twice in a row, nothing else happening in between
            pr.send_signal(signal.SIGTERM)
            assert pr.wait(20) == 0
            pr, doc = start_preloadrun()
            owners.add(doc["owner"]["instance"])
        assert len(owners) == 3
        live = time.monotonic()
        before = sum(total_ops(sim).values())
        time.sleep(2.0)
        assert sum(total_ops(sim).values()) > before + 50, "the client signs no more"
    finally:
        open(stop, "w").close()
        stdout, _ = client.communicate(timeout=60)
        pr.send_signal(signal.SIGTERM)
        pr.wait(20)
    # Errors while the tokens were unloaded (between two preloadruns) are
    # expected; none a second after the last one published its file.
    late = [line for line in stdout.splitlines() if line.startswith("error ")
            and int(line.split("ms=")[1]) > (live - t0 + 1.0) * 1000]
    assert not late, stdout
