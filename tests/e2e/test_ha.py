"""End-to-end tests of preloadrun's high-availability loop (preloadrun(1),
"High availability"; preloadrun-tokens(5)),
against a real `hsmsim serve`, with a child running throughout that must never
see a signal nor a pause.

Each test starts its own service in its own /tmp/hsXXXX directory (see
conftest.py), so the file is parallel-safe (ctest -j2).
"""

import datetime
import json
import re
import subprocess
import time

# ha_world and preloadrun_factory are fixtures: imported to be found by pytest.
from ha_support import (absent_from_tokens, handles, ha_world, loaded_everywhere_at,  # noqa: F401
                        WAIT_S, log_lines, module_entry, preloadrun_factory, wait_for)


# ---- helpers -------------------------------------------------------------------

def hsm_generation(sim, number):
    return sim.modules()[number]["generation"]


def clear(sim, number):
    """`hsmsim module clear N`; returns the module's new generation."""
    before = hsm_generation(sim, number)
    sim.ok("module", "clear", number)
    after = hsm_generation(sim, number)
    assert after > before, f"hsmsim: generation of module {number} did not rise on clear"
    return after


def drain_failures(sim, number):
    """Removes the failures injected on module `number`. `hsmsim module
    fail-next N 0` does not (the count is added to what is pending), so the
    rest is used up by operations that can only land on that module: the other
    modules are failed, `key generate` runs on the first usable module until it
    succeeds, and they are restored."""
    sim.ok("module", "fail-next", number, 0)
    if sim.modules()[number]["fail_next"] == 0:
        return
    others = [n for n, m in sim.modules().items() if n != number and m["state"] == "usable"]
    for n in others:
        sim.ok("module", "fail", n)
    for i in range(200):
        if sim.modules()[number]["fail_next"] == 0:
            break
        sim.run("key", "generate", "--type", "aes-256", "--label", f"drain{i}",
                "--protect", "module")
    assert sim.modules()[number]["fail_next"] == 0
    for n in others:
        sim.ok("module", "restore", n)
    for n in others:
        sim.wait_module(n, "usable")


def start(preloadrun_factory, sim, pf, tokens=("card",), extra=(), env_extra=None):
    """A preloadrun with its child started and every usable module loaded."""
    run = preloadrun_factory(sim, tokens=tokens, passfile=pf if tokens else None,
                             extra=extra, env_extra=env_extra)
    run.wait_started()
    # preloadrun tracks the first 32 modules only
    usable = [n for n, m in sim.modules().items() if m["state"] == "usable" and n <= 32]
    doc = run.wait_doc("every usable module loaded",
                       lambda d: all(loaded_everywhere_at(d, n, hsm_generation(sim, n))
                                     for n in usable))
    return run, doc


# ---- module events ---------------------------------------------------------------

def test_clear_reloads_module_and_republishes(ha_world, preloadrun_factory):
    sim, pf = ha_world
    run, doc0 = start(preloadrun_factory, sim, pf)
    assert doc0["high_availability"] is True
    assert len(doc0["modules"]) == 3
    env = run.child_env()
    assert env["CKNFAST_RELOAD_KEYS"] == "1"
    assert env["CKNFAST_LOADSHARING"] == "1"
    assert env["NFAST_NFKM_TOKENSFILE"] == run.tokens_file
    old = handles(doc0, 2)["card"]
    others = {n: handles(doc0, n) for n in (1, 3)}
    old_entry = module_entry(doc0, 2)

    gen = clear(sim, 2)
    doc = run.wait_doc(f"card reloaded on module 2 at generation {gen}",
                       lambda d: loaded_everywhere_at(d, 2, gen))
    assert doc["generation"] > doc0["generation"]
    new_handle, new_gen = handles(doc, 2)["card"]
    assert new_gen == gen
    assert new_handle != 0 and new_handle != old[0], "module 2 still carries its old handle"
    entry = module_entry(doc, 2)
    assert entry["reloads"] == old_entry["reloads"] + 1
    assert entry["last_reload_ms"] >= old_entry["last_reload_ms"]
    assert entry["given_up"] is False
    # the other modules were not touched
    assert {n: handles(doc, n) for n in (1, 3)} == others
    # the service has the token on module 2 again, as on the others
    mods = sim.modules()
    assert mods[2]["state"] == "usable" and mods[2]["generation"] == gen
    assert mods[2]["objects"] >= 1 and mods[2]["objects"] == mods[1]["objects"], mods

    time.sleep(0.1)
    run.assert_child_undisturbed()
    run.stop()
    assert not run.child_signals()


def test_fail_drops_entries_and_restore_brings_them_back(ha_world, preloadrun_factory):
    sim, pf = ha_world
    run, doc0 = start(preloadrun_factory, sim, pf)

    sim.ok("module", "fail", 2)
    doc = run.wait_doc("module 2 failed and dropped",
                       lambda d: module_entry(d, 2)["state"] == "failed"
                       and absent_from_tokens(d, 2))
    assert doc["generation"] > doc0["generation"]
    assert handles(doc, 1) == handles(doc0, 1) and handles(doc, 3) == handles(doc0, 3)
    # stays dropped while failed
    time.sleep(0.3)
    doc_failed = run.doc()
    assert absent_from_tokens(doc_failed, 2) and module_entry(doc_failed, 2)["state"] == "failed"

    sim.ok("module", "restore", 2)
    gen = hsm_generation(sim, 2)
    doc = run.wait_doc(f"card back on module 2 at generation {gen}",
                       lambda d: loaded_everywhere_at(d, 2, gen))
    assert doc["generation"] > doc_failed["generation"]
    assert handles(doc, 2)["card"][0] != handles(doc0, 2)["card"][0]
    assert sim.modules()[2]["objects"] >= 1
    run.assert_child_undisturbed()


def test_new_module_gets_tokens(ha_world, preloadrun_factory):
    sim, pf = ha_world
    run, doc0 = start(preloadrun_factory, sim, pf)

    out = sim.ok("module", "add").stdout
    number = int(re.findall(r"\d+", out)[-1])
    assert number == 4, out
    sim.wait_module(number, "usable")
    gen = hsm_generation(sim, number)
    doc = run.wait_doc(f"card loaded on the new module {number}",
                       lambda d: loaded_everywhere_at(d, number, gen))
    assert doc["generation"] > doc0["generation"]
    assert len(doc["modules"]) == 4
    entry = module_entry(doc, number)
    assert entry["esn"] == sim.modules()[number]["esn"]
    assert entry["reloads"] == 1 and entry["last_reload_ms"] > 0
    assert [e["esn"] for e in doc["tokens"][0]["loaded"] if e["module"] == number] == [entry["esn"]]
    assert sim.modules()[number]["objects"] >= 1
    run.assert_child_undisturbed()


def test_removed_module_is_dropped(ha_world, preloadrun_factory):
    sim, pf = ha_world
    run, doc0 = start(preloadrun_factory, sim, pf)

    sim.ok("module", "remove", 3)
    doc = run.wait_doc("module 3 removed and dropped",
                       lambda d: module_entry(d, 3)["state"] == "removed"
                       and absent_from_tokens(d, 3))
    assert doc["generation"] > doc0["generation"]
    assert handles(doc, 1) == handles(doc0, 1) and handles(doc, 2) == handles(doc0, 2)
    # still tracked (it counts towards the 32), still absent a moment later
    time.sleep(0.2)
    doc = run.doc()
    assert module_entry(doc, 3) is not None and absent_from_tokens(doc, 3)
    run.assert_child_undisturbed()


# ---- retries ----------------------------------------------------------------------

def test_transient_failures_are_retried(ha_world, preloadrun_factory):
    sim, pf = ha_world
    run, doc0 = start(preloadrun_factory, sim, pf)
    failed_before = sim.modules()[2]["ops_failed"]

    sim.ok("module", "fail-next", 2, 3)
    gen = clear(sim, 2)
    doc = run.wait_doc("card reloaded on module 2 after 3 failures",
                       lambda d: loaded_everywhere_at(d, 2, gen))
    mods = sim.modules()
    assert mods[2]["fail_next"] == 0
    assert mods[2]["ops_failed"] - failed_before >= 3
    assert mods[2]["objects"] >= 1
    assert module_entry(doc, 2)["given_up"] is False
    assert not log_lines(run, "error"), run.stderr()
    run.assert_child_undisturbed()


def test_retry_window_expires_gives_up_once(ha_world, preloadrun_factory):
    sim, pf = ha_world
    run, doc0 = start(preloadrun_factory, sim, pf, extra=["--retry-window", "600ms"])

    # more failures than any retry policy tries in 600 ms; few enough to drain
    sim.ok("module", "fail-next", 2, 40)
    # the window opens when preloadrun sees the clear, after this instant
    t0 = time.monotonic()
    gen = clear(sim, 2)
    doc = run.wait_doc("module 2 given up", lambda d: module_entry(d, 2)["given_up"] is True)
    took = time.monotonic() - t0
    assert took >= 0.6, f"given up after {took:.2f}s, before the 600 ms window"
    assert absent_from_tokens(doc, 2)
    assert module_entry(doc, 2)["state"] == "usable"
    assert module_entry(doc, 2)["generation"] == gen
    # nothing more is tried on it: no more failed operations, one error line
    time.sleep(0.8)
    failed = sim.modules()[2]["ops_failed"]
    time.sleep(0.5)
    assert sim.modules()[2]["ops_failed"] == failed, "preloadrun still loads after giving up"
    errors = log_lines(run, "error", r"\bmodule 2\b")
    assert len(errors) == 1, f"expected one error line for module 2:\n{run.stderr()}"
    assert not log_lines(run, "error", r"\bmodule [13]\b")

    # other modules are unaffected: module 1 still reloads on clear
    gen1 = clear(sim, 1)
    doc = run.wait_doc("module 1 reloaded", lambda d: loaded_everywhere_at(d, 1, gen1))
    assert module_entry(doc, 2)["given_up"] is True
    assert module_entry(doc, 1)["given_up"] is False

    # once the failures are gone, a clear makes module 2 load again
    assert sim.modules()[2]["fail_next"] > 0, "the retry loop used up every injected failure"
    drain_failures(sim, 2)
    for n in (1, 3):
        g = hsm_generation(sim, n)
        run.wait_doc(f"module {n} reloaded after restore", lambda d: loaded_everywhere_at(d, n, g))
    gen2 = clear(sim, 2)
    doc = run.wait_doc("module 2 loaded again", lambda d: loaded_everywhere_at(d, 2, gen2))
    assert module_entry(doc, 2)["given_up"] is False
    assert len(log_lines(run, "error", r"\bmodule 2\b")) == 1, run.stderr()
    run.assert_child_undisturbed()


# ---- limits -----------------------------------------------------------------------

def test_33rd_module_refused_with_one_line(make_service, preloadrun_factory):
    sim = make_service(modules=32, init_delay_ms=50)
    pf = sim.create_token("card", "correct horse")
    run, doc0 = start(preloadrun_factory, sim, pf)
    assert len(doc0["modules"]) == 32

    # a removed module still counts
    sim.ok("module", "remove", 32)
    run.wait_doc("module 32 removed", lambda d: module_entry(d, 32)["state"] == "removed")
    out = sim.ok("module", "add").stdout
    number = int(re.findall(r"\d+", out)[-1])
    assert number == 33, out
    sim.wait_module(33, "usable")
    wait_for(lambda: log_lines(run, pattern=r"\bmodule 33\b"), WAIT_S,
             what=lambda: f"a log line refusing module 33\n{run.stderr()}")
    # later events on it: no more lines, no crash
    sim.ok("module", "clear", 33)
    sim.wait_module(33, "usable")
    sim.ok("module", "fail", 33)
    sim.ok("module", "restore", 33)
    sim.wait_module(33, "usable")
    # events are handled in order: once module 1's reload is published, every
    # event of module 33 before it has been handled
    gen1 = clear(sim, 1)
    doc = run.wait_doc("module 1 reloaded", lambda d: loaded_everywhere_at(d, 1, gen1))
    lines = log_lines(run, pattern=r"\bmodule 33\b")
    assert len(lines) == 1, f"expected exactly one line about module 33:\n{run.stderr()}"
    assert re.search(r"(warn|warning|error):", lines[0]), lines[0]
    assert len(doc["modules"]) == 32
    assert module_entry(doc, 33) is None and absent_from_tokens(doc, 33)
    assert sim.modules()[33]["objects"] == 0, "the refused module got a token anyway"
    run.assert_child_undisturbed()


def test_33rd_module_at_start_refused_with_one_line(make_service, preloadrun_factory):
    sim = make_service(modules=33, init_delay_ms=50)
    pf = sim.create_token("card", "correct horse")
    run, doc0 = start(preloadrun_factory, sim, pf)
    assert len(doc0["modules"]) == 32 and module_entry(doc0, 33) is None
    assert sim.modules()[33]["objects"] == 0
    # the HA loop's subscription sees module 33 again, and its later events
    sim.ok("module", "clear", 33)
    sim.wait_module(33, "usable")
    gen1 = clear(sim, 1)
    doc = run.wait_doc("module 1 reloaded", lambda d: loaded_everywhere_at(d, 1, gen1))
    lines = log_lines(run, pattern=r"\bmodule 33\b")
    assert len(lines) == 1, f"expected exactly one line about module 33:\n{run.stderr()}"
    assert module_entry(doc, 33) is None and absent_from_tokens(doc, 33)
    assert sim.modules()[33]["objects"] == 0
    run.assert_child_undisturbed()


# ---- the service connection --------------------------------------------------------

def test_service_restart_reconnects_and_reloads(ha_world, preloadrun_factory):
    sim, pf = ha_world
    run, doc0 = start(preloadrun_factory, sim, pf)

    sim.kill()                      # SIGKILL: sockets left behind, nothing closed
    sim.proc = None
    time.sleep(0.3)
    assert run.alive(), f"preloadrun died with the service\n{run.describe()}"
    sim.start(modules=3, init_delay_ms=50)   # same world, same socket paths
    for n in (1, 2, 3):
        sim.wait_module(n, "usable")
    mods = sim.modules()
    gens = {n: mods[n]["generation"] for n in (1, 2, 3)}
    doc = run.wait_doc("every module reloaded on the restarted service",
                       lambda d: all(loaded_everywhere_at(d, n, gens[n])
                                     and module_entry(d, n)["reloads"] >= 2
                                     for n in (1, 2, 3)))
    assert doc["generation"] > doc0["generation"]
    mods = sim.modules()
    for n in (1, 2, 3):
        # a fresh service has no object but the ones preloadrun loaded again
        assert mods[n]["objects"] >= 1, f"module {n} has no object after the restart: {mods[n]}"
        assert module_entry(doc, n)["last_reload_ms"] > module_entry(doc0, n)["last_reload_ms"]
    run.assert_child_undisturbed()
    # and the loop still follows module events afterwards
    gen = clear(sim, 2)
    run.wait_doc("module 2 reloaded after reconnection", lambda d: loaded_everywhere_at(d, 2, gen))


# ---- modes --------------------------------------------------------------------------

def test_zero_tokens_file_still_follows_modules(ha_world, preloadrun_factory):
    sim, pf = ha_world
    run, doc0 = start(preloadrun_factory, sim, pf, tokens=())
    assert doc0["tokens"] == []
    assert run.child_env()["CKNFAST_RELOAD_KEYS"] == "1"
    gen = clear(sim, 2)
    doc = run.wait_doc(f"module 2 at generation {gen} in the file",
                       lambda d: module_entry(d, 2)["generation"] == gen
                       and module_entry(d, 2)["state"] == "usable")
    assert doc["generation"] > doc0["generation"]
    run.assert_child_undisturbed()


def test_no_ha_reloads_nothing(ha_world, preloadrun_factory):
    sim, pf = ha_world
    # an inherited CKNFAST_RELOAD_KEYS must be removed for the child
    run, doc0 = start(preloadrun_factory, sim, pf, extra=["--no-ha"],
                      env_extra={"CKNFAST_RELOAD_KEYS": "1"})
    assert doc0["high_availability"] is False
    env = run.child_env()
    assert env["CKNFAST_RELOAD_KEYS"] is None, env
    assert env["CKNFAST_LOADSHARING"] == "1"
    with open(run.tokens_file, "rb") as f:
        before = f.read()

    gen = clear(sim, 2)
    sim.wait_module(2, "usable")
    time.sleep(0.5)
    doc = run.doc()
    assert doc["generation"] == doc0["generation"]
    with open(run.tokens_file, "rb") as f:
        assert f.read() == before, "the tokens file changed under --no-ha"
    assert sim.modules()[2]["objects"] == 0, "something reloaded module 2 under --no-ha"
    assert sim.modules()[2]["generation"] == gen
    run.assert_child_undisturbed()


# ---- status ---------------------------------------------------------------------------

def test_status_shows_modules_handles_generation_and_given_up(ha_world, preloadrun_factory):
    sim, pf = ha_world
    run, _ = start(preloadrun_factory, sim, pf, extra=["--retry-window", "300ms"])
    sim.ok("module", "fail-next", 3, 1000)
    clear(sim, 3)
    doc = run.wait_doc("module 3 given up", lambda d: module_entry(d, 3)["given_up"] is True)
    gen2 = clear(sim, 2)
    doc = run.wait_doc("module 2 reloaded", lambda d: loaded_everywhere_at(d, 2, gen2))

    r = subprocess.run([run.args[0], "status", run.tokens_file], capture_output=True,
                       text=True, timeout=10, env={**sim.env, "NO_COLOR": "1"})
    assert r.returncode == 0, r
    out = r.stdout
    doc = run.doc()     # nothing changes any more: same as what status read
    assert re.search(rf"generation:?\s+{doc['generation']}\b", out), out
    lines = out.splitlines()
    for m in doc["modules"]:
        row = [line for line in lines
               if re.match(rf"\s*{m['number']}\s", line) and m["esn"] in line]
        assert len(row) == 1, f"no single row for module {m['number']}:\n{out}"
        row = row[0]
        assert m["state"] in row, row
        last = datetime.datetime.fromtimestamp(m["last_reload_ms"] / 1000)
        stamps = {(last + datetime.timedelta(seconds=d)).strftime("%H:%M:%S") for d in (-1, 0)}
        assert any(s in row for s in stamps), f"no last reload time in {row!r}"
        assert ("given up" in row) == m["given_up"], row
    for t in doc["tokens"]:
        token_lines = [line for line in lines if t["name"] in line and t["hash"] in line]
        assert token_lines, out
        for e in t["loaded"]:
            assert re.search(rf"module {e['module']}\D+{e['handle']}\b", token_lines[0]), \
                f"token {t['name']}: no handle {e['handle']} for module {e['module']}:\n{out}"
    assert not any(e["module"] == 3 for e in doc["tokens"][0]["loaded"])

    r = subprocess.run([run.args[0], "status", run.tokens_file, "--json"], capture_output=True,
                       text=True, timeout=10, env=sim.env)
    assert r.returncode == 0, r
    status = json.loads(r.stdout)
    assert status["live"] is True and status["file"] == run.doc()
    run.assert_child_undisturbed()


# ---- concurrency -------------------------------------------------------------------------

def test_slow_module_does_not_delay_fast_one(ha_world, preloadrun_factory):
    sim, pf = ha_world
    run, _ = start(preloadrun_factory, sim, pf)
    # The slow module's latency leaves room for a slow machine (ASan, two
    # loaded cores): the fast one must be back well before it.
    sim.ok("module", "latency", 2, 3000)

    t0 = time.monotonic()
    sim.ok("module", "clear", 2)        # the slow one first
    sim.ok("module", "clear", 1)
    mods = sim.modules()
    gen1, gen2 = mods[1]["generation"], mods[2]["generation"]
    run.wait_doc("fast module 1 reloaded", lambda d: loaded_everywhere_at(d, 1, gen1))
    fast = time.monotonic() - t0
    doc = run.doc()
    assert not loaded_everywhere_at(doc, 2, gen2), "slow module 2 back as early as module 1"
    run.wait_doc("slow module 2 reloaded", lambda d: loaded_everywhere_at(d, 2, gen2))
    slow = time.monotonic() - t0
    assert fast < 2.0, f"the fast module took {fast:.2f}s: held up by the slow one?"
    assert slow >= 3.0, f"the slow module was back after {slow:.2f}s, under its latency"
    assert slow - fast > 1.0, f"fast {fast:.2f}s, slow {slow:.2f}s"
    run.assert_child_undisturbed()
    sim.ok("module", "latency", 2, 0)   # quick unload at the end


# ---- unloading at exit ------------------------------------------------------------

def gone_lines(sim, pid):
    return [line for line in sim.log().splitlines()
            if f"client pid {pid} " in line and "has gone" in line]


def test_transient_failure_at_unload_is_retried(ha_world, preloadrun_factory):
    sim, pf = ha_world
    run, doc0 = start(preloadrun_factory, sim, pf)
    pid = run.proc.pid
    sim.ok("module", "fail-next", 2, 1)
    run.stop()
    # preloadrun itself unloaded everything, module 2 too: the service had
    # nothing left to free when it went.
    wait_for(lambda: gone_lines(sim, pid) or
             not any(m["objects"] for m in sim.modules().values()), WAIT_S,
             what="the service to see preloadrun go")
    time.sleep(0.3)  # the service logs after it frees
    assert sim.modules()[2]["fail_next"] == 0
    assert not [line for line in gone_lines(sim, pid) if "unloaded 0 object" not in line], \
        sim.log()
    assert "could not be unloaded" not in run.stderr(), run.stderr()


def test_failed_unload_at_exit_is_a_warning(ha_world, preloadrun_factory):
    sim, pf = ha_world
    run, doc0 = start(preloadrun_factory, sim, pf)
    sim.ok("module", "fail-next", 2, 50)
    run.stop()
    lines = [line for line in run.stderr_lines() if "could not be unloaded from module 2" in line]
    assert len(lines) == 1 and "softcard card" in lines[0], run.stderr()
    assert "warn" in lines[0].lower(), lines
    # and the service frees it once preloadrun has gone
    wait_for(lambda: sim.modules()[2]["objects"] == 0, WAIT_S, what="module 2 freed")
