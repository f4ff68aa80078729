"""Tokens file and key reloading (CKNFAST_RELOAD_KEYS): a cleared module comes
back into service when the tokens file says its token was reloaded; without
the flag it never does; new modules join; failed reloads are abandoned after
the retry window; stale files are refused."""

import time

from conftest import PIN, client_env, module_log, ops, run, wait_for


def sign_cmd(driver_bin, module_path, count, threads, pin=PIN):
    return [driver_bin, "sign", module_path, "card1", pin, "01", str(count), str(threads)]


def finish(loop):
    r = loop.stop()
    assert r.returncode == 0 and "errors=0" in r.stdout, r.stdout + r.stderr
    return r


def world_with_latency(make_service, modules=3):
    from conftest import setup_world
    return setup_world(make_service(modules=modules, init_delay_ms=50, op_latency_ms=3))


def test_live_tokens_file_login_with_any_pin(world, module_path, driver_bin, make_holder):
    holder = make_holder(world)
    env = client_env(world, tokens_file=holder.path)
    r = run(sign_cmd(driver_bin, module_path, 5, 1, pin="anything"), env)
    assert "errors=0" in r.stdout
    assert "using tokens file" in module_log(world)


def test_stale_tokens_file_is_refused(world, module_path, driver_bin, make_holder):
    holder = make_holder(world)
    holder.command("die", ready=False)
    holder.proc.wait(10)
    env = client_env(world, tokens_file=holder.path)
    r = run(sign_cmd(driver_bin, module_path, 1, 1, pin="anything"), env, check=False)
    assert r.returncode != 0  # the file is not used: the PIN is checked again
    log = module_log(world)
    assert "not used (owner dead)" in log and f"pid {holder.proc.pid}" in log, log
    # The right passphrase still works: the module loads the token itself.
    r = run(sign_cmd(driver_bin, module_path, 3, 1), env)
    assert "errors=0" in r.stdout


def clear_and_republish(sim, holder, module=2):
    sim.ok("module", "clear", str(module))
    sim.wait_module(module, "usable")
    holder.command("publish")


def test_reload_brings_cleared_module_back(make_service, make_sign_loop, make_holder):
    sim = world_with_latency(make_service)
    holder = make_holder(sim)
    env = client_env(sim, reload=True, tokens_file=holder.path)
    loop = make_sign_loop(sim, env)
    loop.wait_signing_on(sim, list(ops(sim)))
    clear_and_republish(sim, holder)
    time.sleep(0.3)
    after_reload = ops(sim)[2]
    wait_for(lambda: ops(sim)[2] > after_reload + 10, timeout=30,
             what="module 2 serving again after the reload")
    finish(loop)
    log = module_log(sim)
    assert "reloaded 1 key(s) onto module 2" in log, log
    assert "leaves the group" in log
    assert any("module 2 (ESN" in line and "joins the group: module usable again" in line
               for line in log.splitlines()), log


def test_every_module_cleared_at_once_the_application_sees_no_error(make_service,
                                                                     make_sign_loop, make_holder):
    # No module can serve while all are cleared: the operations wait (up to
    # PRELOADRUN_PKCS11_SERVICE_WAIT) for the tokens file to bring them back.
    sim = world_with_latency(make_service)
    holder = make_holder(sim)
    env = client_env(sim, reload=True, tokens_file=holder.path)
    loop = make_sign_loop(sim, env)
    loop.wait_signing_on(sim, list(ops(sim)))
    for n in (1, 2, 3):
        sim.ok("module", "clear", str(n))
    for n in (1, 2, 3):
        sim.wait_module(n, "usable")
    time.sleep(0.2)  # the signers meet the cleared modules and wait
    holder.command("publish")
    loop.wait_signing_on(sim, (1, 2, 3), at_least=10)
    finish(loop)  # errors=0: no signature failed
    log = module_log(sim)
    assert "reloaded 1 key(s) onto module 1" in log, log


def test_without_reload_keys_cleared_module_stays_out(make_service, make_sign_loop,
                                                       make_holder):
    sim = world_with_latency(make_service)
    holder = make_holder(sim)
    env = client_env(sim, reload=False, tokens_file=holder.path)
    loop = make_sign_loop(sim, env)
    loop.wait_signing_on(sim, list(ops(sim)))
    clear_and_republish(sim, holder)
    time.sleep(0.5)
    mid = ops(sim)[2]
    loop.wait_signing_on(sim, (1, 3), at_least=20)
    finish(loop)
    assert ops(sim)[2] == mid


def test_new_module_joins(make_service, make_sign_loop, make_holder):
    sim = world_with_latency(make_service, modules=2)
    holder = make_holder(sim)
    env = client_env(sim, reload=True, tokens_file=holder.path)
    loop = make_sign_loop(sim, env)
    loop.wait_signing_on(sim, list(ops(sim)))
    sim.ok("module", "add")
    sim.wait_module(3, "usable")
    holder.command("publish")
    wait_for(lambda: ops(sim)[3] > 10, timeout=30, what="module 3 serving")
    finish(loop)
    assert "module 3 (ESN" in module_log(sim)


def test_failed_reload_abandoned_after_retry_window(make_service, make_sign_loop,
                                                    make_holder):
    sim = world_with_latency(make_service)
    holder = make_holder(sim)
    env = client_env(sim, reload=True, tokens_file=holder.path,
                     extra={"PRELOADRUN_PKCS11_RETRY_WINDOW": "300"})
    loop = make_sign_loop(sim, env)
    loop.wait_signing_on(sim, list(ops(sim)))
    sim.ok("module", "clear", "2")
    sim.wait_module(2, "usable")
    holder.command("bogus 2")  # a handle that does not exist on module 2
    wait_for(lambda: "module 2 (ESN" in module_log(sim) and "abandoned" in module_log(sim),
             timeout=30, what="module 2 abandoned")
    finish(loop)
    assert module_log(sim).count("abandoned") == 1


def test_owner_dying_later_is_reported_once(make_service, make_sign_loop, make_holder):
    sim = world_with_latency(make_service)
    holder = make_holder(sim)
    env = client_env(sim, reload=True, tokens_file=holder.path)
    loop = make_sign_loop(sim, env)
    loop.wait_signing_on(sim, list(ops(sim)))
    holder.command("publish")  # a change, so the module re-reads the file
    holder.command("die", ready=False)
    holder.proc.wait(10)
    # The file changes once more (rewritten in place) after the owner died.
    with open(holder.path, "a") as f:
        f.write(" ")
    # The client still runs when the module reads that change (stopping it
    # at once could end it first, on a loaded machine).
    wait_for(lambda: "is no longer live" in module_log(sim), timeout=60,
             what="the module reading the dead owner's file")
    # The service unloaded the owner's token with it, and the keys loaded
    # under it: the operations after that fail, and the loop still ends.
    r = loop.stop()
    assert "ok=" in r.stdout, r.stdout + r.stderr
    log = module_log(sim)
    assert log.count("is no longer live") == 1, log
