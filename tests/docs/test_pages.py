"""What the reader sees of the man pages is what test_examples.py runs, and
the pages and the README agree with what they describe.

- Each example of a man page's source shows in the rendered page line for
  line, as written (scdoc markup never eats a character of one).
- No scdoc markup shows literally in a rendered page (`128+_N_` rendered with
  its underscores, a `*` left over).
- Where the docs say where hsmsim.service keeps its world, they name the
  unit's NFAST_KMDATA.
"""

import glob
import os
import re
import shlex
import subprocess

import pytest

from examples import SOURCE, man_examples

MANDIR = os.environ.get("PRELOADRUN_MANDIR", "")
PAGES = sorted(glob.glob(os.path.join(SOURCE, "man", "*.scd")))


def rendered(source):
    """The page built from `source` as a terminal shows it, in plain text,
    without line breaks of its own."""
    if not os.path.isdir(MANDIR):
        pytest.fail("PRELOADRUN_MANDIR must name the build's man/ (run through ctest)")
    page = os.path.join(MANDIR, os.path.basename(source)[:-len(".scd")])
    r = subprocess.run(["groff", "-man", "-Tutf8", "-P-c", "-P-b", "-P-u", "-P-o",
                        "-rLL=2000n", "-rHY=0", page], capture_output=True, text=True,
                       timeout=30, check=True)
    return r.stdout


@pytest.mark.parametrize("source", PAGES, ids=[os.path.basename(p) for p in PAGES])
def test_examples_render_as_written(source):
    lines = {line.strip() for line in rendered(source).splitlines()}
    for where, text in man_examples(source):
        for line in text.splitlines():
            assert line.strip() in lines, (
                f"{where}: the page shows this example otherwise than its source: {line!r}")


@pytest.mark.parametrize("source", PAGES, ids=[os.path.basename(p) for p in PAGES])
def test_no_markup_shows(source):
    text = rendered(source)
    # _word_ or *word* standing alone: emphasis scdoc did not take as such.
    left = re.findall(r"(?<![\w/.])(_[A-Za-z0-9+]+_|\*[A-Za-z0-9+-]+\*)(?![\w/])", text)
    assert not left, f"{os.path.basename(source)}: markup shown as text: {left}"


def test_docs_name_the_units_world():
    with open(os.path.join(SOURCE, "dist", "systemd", "hsmsim.service")) as f:
        env = dict(item.split("=", 1) for line in f if line.startswith("Environment=")
                   for item in shlex.split(line.split("=", 1)[1]))
    docs = [os.path.join(SOURCE, "README.md"), *PAGES]
    named = []
    for path in docs:
        with open(path) as f:
            named += [(os.path.basename(path), m) for m in
                      re.findall(r"world in [`_]?(/var/lib/[^`_\s,;)]+)", f.read())]
    assert named, "the docs say nowhere where hsmsim.service keeps its world"
    wrong = [(doc, path) for doc, path in named if path != env["NFAST_KMDATA"]]
    assert not wrong, f"hsmsim.service keeps its world in {env['NFAST_KMDATA']}: {wrong}"
