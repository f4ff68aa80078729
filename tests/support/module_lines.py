"""What the PKCS#11 module (libpreloadrun-pkcs11) writes on a client's
stderr: every line of it names the module, as
"libpreloadrun-pkcs11[PID]: LEVEL: MESSAGE"."""

import re

MODULE = "libpreloadrun-pkcs11"
NOTICE_RE = re.compile(r"^libpreloadrun-pkcs11\[(\d+)\]: (error|warning): (.*)$")


def module_lines(text):
    """The lines of `text` (a client's stderr) that name the module."""
    return [line for line in text.splitlines() if MODULE in line]


def one_module_line(text):
    """The one line of `text` that names the module (asserted)."""
    lines = module_lines(text)
    assert len(lines) == 1, text
    return lines[0]


def notices(text):
    """The module's notices in `text`: [(level, message)]."""
    return [(m.group(2), m.group(3)) for m in map(NOTICE_RE.match, module_lines(text)) if m]
