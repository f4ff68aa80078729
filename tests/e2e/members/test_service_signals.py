"""`hsmfleet serve --fleet` under signals and restarts, over three SoftHSM2
members behind their own `p11-kit server`s:

- every catchable signal's documented effect: HUP re-reads the file and keeps
  serving; TERM and INT stop it (exit 0); CHLD, URG and WINCH are ignored;
  the others end it with their default action. Whatever ends it, none of its
  member workers is left behind (they die with it, PR_SET_PDEATHSIG).
- the service stopped and started twice under a real client supervised by
  preloadrun: the client sees no error and is never restarted.
"""

import signal
import time

import pytest

from conftest import SupervisedClient, external_client
from member_service import MemberService
from p11kit_members import MemberFarm
from procs import children_of, executable, proc_stat, wait_for



@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with MemberFarm(str(tmp_path_factory.mktemp("farm"))) as f:
        yield f


@pytest.fixture
def tools():
    return {"hsmfleet": executable("HSMFLEET"), "preloadrun": executable("PRELOADRUN"),
            "module": executable("PKCS11_MODULE")}


def alive(pid):
    return (proc_stat(pid) or ["Z"])[0] != "Z"


def start(tools, tmp_path, farm):
    service = MemberService(tools["hsmfleet"], str(tmp_path), farm)
    service.start()
    for m in farm.members:
        service.wait_module(m.name, lambda m: m["state"] == "usable", "usable")
    workers = [pid for pid, _ in children_of(service.proc.pid)]
    assert len(workers) == len(farm.members), workers
    return service, workers


KEEPS_SERVING = ["SIGHUP", "SIGCHLD", "SIGURG", "SIGWINCH"]
STOPS_CLEANLY = ["SIGTERM", "SIGINT"]
ENDS_IT = ["SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPIPE", "SIGVTALRM", "SIGPROF", "SIGRTMIN"]


@pytest.mark.parametrize("name", KEEPS_SERVING + STOPS_CLEANLY + ENDS_IT)
def test_a_signal_to_the_member_service(farm, tools, tmp_path, name):
    signo = getattr(signal, name)
    service, workers = start(tools, tmp_path, farm)
    try:
        service.proc.send_signal(signo)
        if name in KEEPS_SERVING:
            time.sleep(0.5)
            assert service.proc.poll() is None, service.log()
            modules = service.modules()
            assert all(m["state"] == "usable" for m in modules.values()), modules
            assert all(alive(pid) for pid in workers)
            if name == "SIGHUP":
                wait_for(lambda: f"SIGHUP: re-reading {service.config}" in service.log(),
                         timeout=5, what="the configuration read again")
            return
        status = service.proc.wait(15)
        if name in STOPS_CLEANLY:
            assert status == 0, service.log()
        else:
            assert status == -signo, (status, service.log())
        wait_for(lambda: not any(alive(pid) for pid in workers), timeout=5,
                 what="every member worker gone with the service")
    finally:
        service.stop()


@external_client
def test_the_service_restarted_twice_under_a_client(farm, tools, tmp_path):
    service, _ = start(tools, tmp_path, farm)
    pin = tmp_path / "pin"
    pin.write_text(farm.pin + "\n")
    pin.chmod(0o600)
    client = SupervisedClient(tools, service, pin, tmp_path, 12)
    try:
        client.wait_first_signature()
        for _ in range(2):
            time.sleep(1.5)
            assert service.stop() == 0, service.log()
            time.sleep(0.5)
            service.start()
            for m in farm.members:
                service.wait_module(m.name, lambda m: m["state"] == "usable" and m["ops"] > 0,
                                    "serving the client again", timeout=30)
        client.assert_no_error(timeout=60)
    finally:
        client.stop()
        service.stop()
