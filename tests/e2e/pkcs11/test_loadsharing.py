"""Load-sharing and failover: operations spread over every module of the
group, and a module cleared under load never costs the client an error."""

import subprocess
import time

from conftest import PIN, client_env, module_log, ops, run


def sign(driver_bin, module_path, env, count, threads, key_id="01", token="card1",
         mech="ecdsa", check=True):
    return run([driver_bin, "sign", module_path, token, PIN, key_id, str(count), str(threads),
                mech], env, timeout=240, check=check)


def test_operations_spread_over_all_modules(world, module_path, driver_bin):
    before = ops(world)
    r = sign(driver_bin, module_path, client_env(world), 60, 1)
    assert "errors=0" in r.stdout
    after = ops(world)
    for n in (1, 2, 3):
        assert after[n] - before[n] >= 20, (before, after)


def test_module_protected_key_in_accelerator_slot(world, module_path, driver_bin):
    before = ops(world)
    r = sign(driver_bin, module_path, client_env(world), 30, 1, key_id="02",
             token="loadshared accelerator", mech="pss")
    assert "errors=0" in r.stdout
    after = ops(world)
    assert all(after[n] > before[n] for n in (1, 2, 3)), (before, after)


def test_without_load_sharing_one_module_serves(world, module_path, driver_bin):
    before = ops(world)
    sign(driver_bin, module_path, client_env(world, loadsharing=False), 30, 1)
    after = ops(world)
    grown = [n for n in (1, 2, 3) if after[n] > before[n]]
    assert grown == [1], (before, after)


def test_eight_threads_sign_concurrently(world, module_path, driver_bin):
    r = sign(driver_bin, module_path, client_env(world), 40, 8)
    assert "ok=320 errors=0" in r.stdout


def test_clear_during_signing_loop_costs_no_error(make_service, make_sign_loop):
    from conftest import setup_world
    sim = setup_world(make_service(modules=3, init_delay_ms=50, op_latency_ms=3))
    loop = make_sign_loop(sim, client_env(sim), threads=4)
    # Clear module 2 once the client signs on every module (logging in takes
    # a while on a slow machine: under ASan, well over a second).
    loop.wait_signing_on(sim, (1, 2, 3))
    sim.ok("module", "clear", "2")
    sim.wait_module(2, "usable")
    time.sleep(0.3)
    mid = ops(sim)[2]
    loop.wait_signing_on(sim, (1, 3), at_least=20)
    r = loop.stop()
    assert r.returncode == 0 and "errors=0" in r.stdout, r.stdout + r.stderr
    # Baseline without reloading: the cleared module stays out of the group.
    assert ops(sim)[2] == mid
    assert "module 2" in module_log(sim) and "leaves the group" in module_log(sim)


def test_session_key_lost_with_its_module(world, module_path, driver_bin):
    env = client_env(world)
    p = subprocess.Popen([driver_bin, "session-key", module_path, "2"], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "generated"
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline().strip() == "rv=0x0"
    for n in (1, 2, 3):
        world.ok("module", "clear", str(n))
    p.stdin.write("go\n")
    p.stdin.flush()
    # CKR_DEVICE_ERROR: the session key lived on one module only and is gone.
    assert p.stdout.readline().strip() == "rv=0x30"
    p.wait(30)
