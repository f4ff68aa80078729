"""Finds every example the documentation shows a reader, as the reader would
copy it:

- README.md: every fenced block (```), its lines as they are;
- man/*.scd: in the EXAMPLES section, every indented block (a line that
  starts with a tab, continued by the lines after each one that ends in
  `++`, scdoc's line break) and every fenced block;
- `--help` of each program and of each of its subcommands: in an
  "Examples:" section, each line indented by two spaces (the explanation
  under it is indented by six).

An Example is its text and where it was found; the same text in several
places is one example with several places.
"""

import os
import re
import subprocess
from dataclasses import dataclass, field

SOURCE = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


@dataclass
class Example:
    text: str
    where: list = field(default_factory=list)


def _fenced(lines, first_line_number, where):
    """(line number, text) of each ``` block in lines."""
    blocks, current, start = [], None, 0
    for i, line in enumerate(lines):
        if line.startswith("```"):
            if current is None:
                current, start = [], first_line_number + i + 1
            else:
                blocks.append((start, "\n".join(current)))
                current = None
        elif current is not None:
            current.append(line)
    assert current is None, f"{where}: a ``` block is not closed"
    return blocks


def readme_examples(path=os.path.join(SOURCE, "README.md")):
    with open(path) as f:
        lines = f.read().splitlines()
    return [(f"README.md:{n}", text) for n, text in _fenced(lines, 1, "README.md")]


def _section(lines, title):
    """(index of the first line, the lines) of the `# TITLE` section of an
    scdoc page."""
    start = next((i for i, l in enumerate(lines) if l.strip() == f"# {title}"), None)
    if start is None:
        return 0, []
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# ")),
               len(lines))
    return start + 1, lines[start + 1:end]


def man_examples(path):
    name = os.path.relpath(path, SOURCE)
    with open(path) as f:
        lines = f.read().splitlines()
    offset, section = _section(lines, "EXAMPLES")
    found = [(f"{name}:{n}", text) for n, text in _fenced(section, offset + 1, name)]
    i = 0
    in_fence = False
    while i < len(section):
        line = section[i]
        if line.startswith("```"):
            in_fence = not in_fence
        if in_fence or not line.startswith("\t"):
            i += 1
            continue
        start, block = i, [line[1:]]
        while block[-1].endswith("++"):
            block[-1] = block[-1][:-2]
            i += 1
            block.append(section[i])
        i += 1
        # scdoc joins consecutive indented lines into one paragraph: a second
        # line without ++ before it would not show as a line of its own.
        assert i >= len(section) or not section[i].startswith("\t"), (
            f"{name}:{offset + i + 1}: an example line without ++ before it; "
            "end the line before with ++ or leave a blank line")
        found.append((f"{name}:{offset + start + 1}", "\n".join(block)))
    return found


def help_examples(program, path, args=()):
    """The examples of `program [args] --help`, and those of each of its
    subcommands, recursively."""
    r = subprocess.run([path, *args, "--help"], capture_output=True, text=True, timeout=10,
                       env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "COLUMNS": "80"})
    assert r.returncode == 0, f"{program} {' '.join(args)} --help: {r.stderr}"
    where = " ".join([program, *args, "--help"])
    found, part = [], None
    for line in r.stdout.splitlines():
        if line and not line.startswith(" "):
            part = line.rstrip(":") if line.endswith(":") else None
            continue
        if part == "Examples" and re.match(r"^  \S", line):
            found.append((where, line[2:]))
        elif part == "Subcommands":
            m = re.match(r"^  (\S+)", line)
            if m:
                found += help_examples(program, path, (*args, m.group(1)))
    return found


def all_examples(programs):
    """{text: Example} of README.md, every man page and every --help.
    `programs` is {name: path} of the built programs."""
    found = readme_examples()
    mandir = os.path.join(SOURCE, "man")
    for page in sorted(os.listdir(mandir)):
        if page.endswith(".scd"):
            found += man_examples(os.path.join(mandir, page))
    for program, path in sorted(programs.items()):
        found += help_examples(program, path)
    examples = {}
    for where, text in found:
        examples.setdefault(text, Example(text)).where.append(where)
    return examples
