#!/usr/bin/env python3
"""The rules of ARCHITECTURE.md that a compiler does not check by itself.

- Each part includes only its own private headers (by a path relative to its
  own folder, never with "..") and the public headers of the parts it may use.
- No public header (include/preloadrun/) includes a private or generated one.
- No source file has more than 600 lines; no function more than 100 (the
  sources are clang-formatted: a definition starts with a line ending in "{"
  and ends at the "}" with the same indentation).

Usage: check_sources.py SOURCE_DIR. Prints one line per breach, exits 1 if any.
"""

import re
import sys
from pathlib import Path

MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 100

# part -> the parts whose public headers (include/preloadrun/<part>/) or
# interface headers (src/wire/include/) it may include. Keep in step with
# ARCHITECTURE.md's table.
MAY_USE = {
    "common": set(),
    "wire": {"common", "hsm"},  # hsm's types (headers only)
    "tokens": {"common"},
    "hsm": {"common", "wire"},
    "sim": {"common", "hsm", "wire", "pkcs11"},  # pkcs11: the PKCS#11 header, for members
    "supervisor": {"common", "hsm", "tokens"},
    "pkcs11": {"common", "hsm", "tokens"},
}
# Within a part, folders that may use only the ones before them (hsmsim:
# the model knows no server and no CLI, the server no CLI).
LAYERS = {"sim": ["model", "member", "server", "cli"]}
# Headers every part may include (generated into the build tree).
ANYWHERE = {"preloadrun/version.hpp"}
# Generated headers a part may include by name: the wire's schema, for the
# wire's users.
GENERATED = {part: {"wire.pb.h"} for part in ("wire", "hsm", "sim")}
GENERATED["sim"] = {"wire.pb.h", "worker.pb.h"}  # the members' worker protocol

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def public_part(header):
    """The part a public header belongs to: preloadrun/<part>/x.hpp."""
    parts = header.split("/")
    if len(parts) >= 3 and parts[0] == "preloadrun":
        return parts[1]
    return None


def check_includes(root, errors):
    for part, allowed in MAY_USE.items():
        private_root = root / "src" / part
        interface_root = private_root / "include"  # the wire's headers for its users
        files = []
        if private_root.is_dir():
            files += [p for p in private_root.rglob("*") if p.suffix in (".hpp", ".cpp", ".def")]
        public_root = root / "include" / "preloadrun" / part
        if public_root.is_dir():
            files += [p for p in public_root.rglob("*") if p.suffix in (".hpp", ".def")]
        for path in sorted(files):
            is_public = public_root in path.parents
            text = path.read_text(encoding="utf-8")
            for included in INCLUDE.findall(text):
                where = f"{path.relative_to(root)}: #include \"{included}\""
                if ".." in Path(included).parts:
                    errors.append(f"{where}: no '..' in includes")
                    continue
                if included in ANYWHERE:
                    continue
                owner = public_part(included)
                if owner is not None:
                    if owner not in allowed and owner != part:
                        errors.append(f"{where}: {part} may not use {owner}")
                    continue
                if included.startswith("wire/"):
                    if "wire" not in allowed and part != "wire":
                        errors.append(f"{where}: {part} may not use the wire")
                    elif is_public:
                        errors.append(f"{where}: a public header includes the wire's")
                    continue
                if is_public:
                    errors.append(f"{where}: a public header includes a private or generated one")
                    continue
                if included in GENERATED.get(part, set()):
                    continue
                layers = LAYERS.get(part, [])
                mine = path.relative_to(private_root).parts[0] if private_root in path.parents else ""
                theirs = Path(included).parts[0]
                if mine in layers and theirs in layers and layers.index(theirs) > layers.index(mine):
                    errors.append(f"{where}: {part}'s {mine} may not use its {theirs}")
                    continue
                if not any((d / included).is_file() for d in (private_root, interface_root, path.parent)):
                    errors.append(f"{where}: not a header of {part} (src/{part}/{included})")


CONTROL = re.compile(r"^(if|for|while|switch|catch|do|else|try|namespace|class|struct|enum|union|"
                     r"extern|template\s*<[^>]*>\s*(class|struct))\b")


def function_lengths(path):
    """(name, first line, lines) of each function definition of a C++ file:
    a brace that follows a parameter list at a point where no function is
    open (lambdas and blocks count towards the function around them)."""
    text = path.read_text(encoding="utf-8")
    stack = []  # [is_function, first line, name]
    header = []  # characters since the last ; { } at this point
    header_line = 1
    line = 1
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            line += text.count("\n", i, end)
            i = end
            continue
        if c == "#" and (i == 0 or text[i - 1] == "\n"):
            while i < n and text[i] != "\n":  # a directive, with its continuations
                i += 2 if text.startswith("\\\n", i) else 1
            continue
        if c in "\"'":
            if c == "\"" and i > 0 and text[i - 1] == "R":
                close = text.index("(", i)
                delimiter = ")" + text[i + 1:close] + "\""
                end = text.index(delimiter, close) + len(delimiter)
            else:
                end = i + 1
                while end < n and text[end] != c:
                    end += 2 if text[end] == "\\" else 1
                end += 1
            line += text.count("\n", i, end)
            header.append(" ")
            i = end
            continue
        if c == "\n":
            line += 1
            if not "".join(header).strip():
                header_line = line + 1
        if c == "{":
            head = " ".join("".join(header).split())
            in_function = any(entry[0] for entry in stack)
            is_function = (not in_function and ")" in head and not CONTROL.match(head)
                           and not head.startswith("="))
            stack.append([is_function, header_line, head[:70]])
            header = []
            header_line = line
        elif c == "}":
            if stack:
                is_function, first, name = stack.pop()
                if is_function:
                    yield name, first, line - first + 1
            header = []
            header_line = line
        elif c == ";":
            header = []
            header_line = line
        else:
            if not header and c.isspace():
                header_line = line + (1 if c == "\n" else 0)
            else:
                header.append(c)
        i += 1


def check_sizes(root, errors):
    for top in ("src", "include"):
        for path in sorted((root / top).rglob("*")):
            if path.suffix not in (".cpp", ".hpp"):
                continue
            count = path.read_text(encoding="utf-8").count("\n")
            rel = path.relative_to(root)
            if count > MAX_FILE_LINES:
                errors.append(f"{rel}: {count} lines (at most {MAX_FILE_LINES})")
            if path.suffix == ".cpp":
                for name, line, length in function_lengths(path):
                    if length > MAX_FUNCTION_LINES:
                        errors.append(f"{rel}:{line}: {name}: {length} lines "
                                      f"(at most {MAX_FUNCTION_LINES})")


def main():
    root = Path(sys.argv[1]).resolve()
    errors = []
    check_includes(root, errors)
    check_sizes(root, errors)
    for e in errors:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
