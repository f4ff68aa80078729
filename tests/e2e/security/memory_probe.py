"""Reads another process's memory the way any local process may try to: its
mappings from /proc/PID/maps (and smaps), their bytes from /proc/PID/mem,
searched for a secret. test_memory.py uses search() itself (as root) and runs this file as
a process of another uid:

  memory_probe.py pid PID NEEDLE
      prints search(PID, NEEDLE) as one JSON line and exits.
  memory_probe.py parent FILE
      run as the child of the process to probe (COMMAND of preloadrun), with
      NEEDLE the contents of FILE (so that it is on no command line): prints
      one JSON line, {"parent": search(parent), "parent_name": its
      name, "control": search() of a process of its own that holds NEEDLE,
      "dumpable": its own PR_GET_DUMPABLE}, then waits for SIGTERM and exits 0.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys

PR_GET_DUMPABLE = 3


def _attempt(fn):
    try:
        return fn(), "ok"
    except OSError as e:
        return None, type(e).__name__


# Mappings larger than this are the sanitizers' shadow memory (terabytes,
# metadata only); they are skipped.
HUGE = 1 << 30
CHUNK = 4 << 20


def _touched_mappings(pid):
    """(start, end) of each readable mapping of PID that holds pages, from
    /proc/PID/smaps (a mapping never touched holds nothing)."""
    out = []
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                current = (start, end) if "r" in fields[1] and end - start <= HUGE else None
            elif current is not None and fields and fields[0] == "Rss:" and int(fields[1]) > 0:
                out.append(current)
                current = None
    return out


def _holds(mem, start, end, needle):
    tail = b""
    for at in range(start, end, CHUNK):
        try:
            mem.seek(at)
            data = mem.read(min(CHUNK, end - at))
        except (OSError, OverflowError, ValueError):
            return False  # [vvar], guard pages: not readable through mem
        if needle in tail + data:
            return True
        tail = data[-(len(needle) - 1):] if len(needle) > 1 else b""
    return False


def search(pid, needle):
    """{"maps": "ok" or the exception opening /proc/PID/maps, "mem": the same
    for /proc/PID/mem, "found": whether NEEDLE is in PID's memory (None when
    either could not be opened)}."""
    maps, maps_status = _attempt(lambda: open(f"/proc/{pid}/maps").read())
    mem, mem_status = _attempt(lambda: open(f"/proc/{pid}/mem", "rb", buffering=0))
    result = {"maps": maps_status, "mem": mem_status, "found": None}
    if maps is None or mem is None:
        if mem is not None:
            mem.close()
        return result
    with mem:
        result["found"] = any(_holds(mem, start, end, needle)
                              for start, end in _touched_mappings(pid))
    return result


def process_name(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.index("(") + 1:text.rindex(")")]


def control_search(needle):
    """search() of a process of this uid that holds NEEDLE in its heap (read
    from a pipe, never on its command line): readable, and found."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "held = sys.stdin.buffer.readline()\n"
         "sys.stdout.write('holding\\n'); sys.stdout.flush()\n"
         "time.sleep(60)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        holder.stdin.write(needle + b"\n")
        holder.stdin.flush()
        holder.stdout.readline()
        return search(holder.pid, needle)
    finally:
        holder.kill()
        holder.wait()


def main(argv):
    if argv[1] == "pid":
        print(json.dumps(search(int(argv[2]), argv[3].encode())), flush=True)
        return 0
    with open(argv[2], "rb") as f:
        needle = f.read().strip()
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    report = {
        "parent": search(parent, needle),
        "parent_name": process_name(parent),
        "control": control_search(needle),
        "dumpable": libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0),
    }
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(json.dumps(report), flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
