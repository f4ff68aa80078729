"""The soak's classification of errors (soak.py: Model, Analysis) on
made-up time lines: when a module serves, and which errors are violations,
grace or expected, and why."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soak  # noqa: E402

MS = 1_000_000
GRACE = 100 * MS
PID = 4242


def modules(*entries, fail_next=None):
    """[(number, state, generation)] -> a MODULES fact's data."""
    fail_next = fail_next or {}
    return [{"number": n, "esn": f"E{n}", "state": s, "generation": g, "latency_ms": 0,
             "objects": 0, "fail_next": fail_next.get(n, 0)} for n, s, g in entries]


def publication(loaded, pid=PID, reloaded_ms=10**12, generation=1):
    """A tokens file with the soak's softcard on modules {number: generation}."""
    return {"generation": generation, "owner": {"pid": pid},
            "modules": [{"number": n, "last_reload_ms": reloaded_ms} for n in loaded],
            "tokens": [{"name": soak.CARD, "loaded": [
                {"module": n, "module_generation": g} for n, g in loaded.items()]}]}


class Line:
    """Facts at times given in ms."""

    def __init__(self):
        self.facts = []

    def at(self, ms, kind, data=None):
        self.facts.append((ms * MS, len(self.facts), kind, data or {}))
        return self

    def start(self, mods=((1, "usable", 0), (2, "usable", 0))):
        """Service up, two usable modules, preloadrun publishing both at 10 ms."""
        return (self.at(0, "up").at(0, "modules", modules(*mods))
                .at(5, "pr_start", {"pid": PID})
                .at(10, "publish", publication({n: g for n, _, g in mods})))

    def classify(self, start_ms, end_ms):
        an = soak.Analysis(self.facts, 0)
        return an.classify({"start": start_ms * MS, "end": end_ms * MS}, GRACE)


def test_error_while_modules_serve_is_a_violation():
    cls, why, module = Line().start().classify(500, 501)
    assert cls == "violation" and module in (1, 2), why


def test_error_right_after_the_first_publication_is_grace():
    cls, why, _ = Line().start().classify(50, 51)
    assert cls == "grace", why


def test_error_before_any_publication_is_expected():
    line = Line().at(0, "up").at(0, "modules", modules((1, "usable", 0))).at(5, "pr_start",
                                                                             {"pid": PID})
    cls, why, _ = line.classify(7, 8)
    assert cls == "expected" and "not (yet) loaded" in why, why


def test_clear_on_its_way_stops_serving_before_the_event_arrives():
    line = (Line().start(mods=((1, "usable", 0),))
            .at(400, "cmd", {"kind": "clear", "module": 1})
            .at(410, "event", {"module": 1, "state": "initialising", "generation": 1})
            .at(411, "cmd_end", {"kind": "clear", "module": 1, "status": 0}))
    # the module is cleared before hsmsim's event reaches the observer
    cls, why, _ = line.classify(402, 405)
    assert cls == "expected", why
    # and the handles published before the clear do not make it serve again
    line.at(460, "event", {"module": 1, "state": "usable", "generation": 1})
    cls, why, _ = line.classify(600, 601)
    assert cls == "expected" and "not (yet) loaded" in why, why
    line.at(470, "publish", publication({1: 1}))
    assert line.classify(600, 601)[0] == "violation"


def test_a_failed_command_leaves_the_module_serving():
    line = (Line().start(mods=((1, "usable", 0),))
            .at(400, "cmd", {"kind": "remove", "module": 1})
            .at(410, "cmd_end", {"kind": "remove", "module": 1, "status": 1}))
    assert line.classify(402, 405)[0] == "expected"
    assert line.classify(600, 601)[0] == "violation"


def test_pending_injected_failures_until_a_later_list_shows_none():
    line = (Line().start(mods=((1, "usable", 0),))
            .at(400, "cmd", {"kind": "fail-next", "module": 1, "count": 3})
            # a list taken before the command ended cannot clear it
            .at(405, "modules", modules((1, "usable", 0)))
            .at(410, "cmd_end", {"kind": "fail-next", "module": 1, "status": 0})
            .at(450, "modules", modules((1, "usable", 0), fail_next={1: 2})))
    cls, why, _ = line.classify(460, 461)
    assert cls == "expected" and "injected failures" in why, why
    line.at(700, "modules", modules((1, "usable", 0)))
    assert line.classify(720, 721)[0] == "grace"
    assert line.classify(900, 901)[0] == "violation"


def test_service_restart():
    line = (Line().start()
            .at(1000, "svc_kill", {"pid": 1, "signal": "SIGKILL", "wall_ms": 5000})
            .at(1005, "down", {"why": "gone"})
            .at(1100, "up").at(1100, "modules", modules((1, "usable", 0), (2, "usable", 0)))
            # what preloadrun loaded before the restart is gone, whatever the file says
            .at(1150, "publish", publication({1: 0, 2: 0}, reloaded_ms=4999, generation=9)))
    cls, why, _ = line.classify(1001, 1002)
    assert cls == "expected" and "service down" in why, why
    cls, why, _ = line.classify(1400, 1401)
    assert cls == "expected" and "not (yet) loaded" in why, why
    line.at(1200, "publish", publication({1: 0}, reloaded_ms=5001, generation=10))
    assert line.classify(1400, 1401) == ("violation", "module 1 served throughout", 1)
    # a call that was under way when the service went down
    assert line.classify(990, 1003)[0] == "expected"


def test_preloadrun_restart():
    line = (Line().start()
            .at(1000, "pr_stop", {"pid": PID, "signal": "SIGTERM"})
            .at(1001, "removed")
            # the old preloadrun's last words do not count
            .at(1002, "publish", publication({1: 0, 2: 0}))
            .at(1010, "pr_start", {"pid": PID + 1}))
    cls, why, _ = line.classify(1003, 1004)
    assert cls == "expected" and "preloadrun down" in why, why
    assert line.classify(1500, 1501)[0] == "expected"
    line.at(1050, "publish", publication({2: 0}, pid=PID + 1))
    assert line.classify(1500, 1501) == ("violation", "module 2 served throughout", 2)
    assert line.classify(1100, 1101)[0] == "grace"


def test_a_call_that_outlives_the_last_serving_module_is_expected():
    line = (Line().start(mods=((1, "usable", 0),))
            .at(500, "cmd", {"kind": "fail", "module": 1})
            .at(505, "event", {"module": 1, "state": "failed", "generation": 0}))
    assert line.classify(490, 506)[0] == "expected"
    assert line.classify(480, 499)[0] == "violation"


def test_another_serving_module_makes_it_a_violation():
    line = (Line().start()
            .at(500, "cmd", {"kind": "fail", "module": 1})
            .at(505, "event", {"module": 1, "state": "failed", "generation": 0}))
    assert line.classify(490, 506) == ("violation", "module 2 served throughout", 2)
