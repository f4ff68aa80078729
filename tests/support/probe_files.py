"""What the probe (tests/support/probe.cpp, the child of the supervision
tests) writes: signal counts (--count NAME=N, --count-all NUMBER=N) and its
report (--report KEY=VALUE, env=NAME=VALUE)."""


def read_counts(path, key=str):
    """{'SIGTERM': 1, ...} from a probe --count file, or with key=int
    {15: 1, ...} from a --count-all file (empty when missing)."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.strip().partition("=")
                if name:
                    out[key(name)] = int(value)
    except FileNotFoundError:
        pass
    return out


def read_report(path):
    """A probe --report file: {key: value}, with 'env' a {NAME: VALUE} dict."""
    values = {"env": {}}
    with open(path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            if key == "env":
                name, _, v = value.partition("=")
                values["env"][name] = v
            else:
                values[key] = value
    return values
