"""`--flagfile=FILE` expanded before absl parses, with includes found next to their file.

A flag file holds one flag per line (`#` and `//` start comments) and may include another
with a line `--flagfile=OTHER`. absl opens OTHER relative to the working directory, so a
config that includes its base file works from one directory only. `expand(argv)` does
what absl does, except where it looks for a relative include:

1. next to the including file (configs/x.cfg's `--flagfile=x_base.cfg` is configs/x_base.cfg);
2. else relative to the working directory, as absl does (configs written for absl:
   `--flagfile=configs/x_base.cfg` from the repository root keep working).

Own code rather than absl's because absl has no hook for where an include is looked up.
A `--flagfile` on the command line is relative to the working directory, as in absl.
"""

import os

from absl import flags

_DIRECTIVES = ("--flagfile=", "-flagfile=")


def _lines(path, stack):
    """The flag lines of `path`, its includes expanded in place (an empty name: none, as
    in absl)."""
    if not path:
        return []
    real = os.path.realpath(path)
    if real in stack:
        chain = " → ".join([*stack, real])
        raise flags.CantOpenFlagFileError(f"flag files include each other in a circle: {chain}")
    try:
        with open(path) as f:
            text = f.read()
    except OSError as err:
        raise flags.CantOpenFlagFileError(
            f"cannot read flag file {path}: {err.strerror}") from None
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        if line.startswith(_DIRECTIVES):
            name = line.split("=", 1)[1].strip()
            lines += _lines(name and _include(path, name), [*stack, real])
        else:
            lines.append(line)
    return lines


def _include(including, name):
    """Where `--flagfile=name` inside the file `including` points."""
    name = os.path.expanduser(name)
    if os.path.isabs(name):
        return name
    beside = os.path.join(os.path.dirname(including), name)
    if os.path.exists(beside):
        return beside
    if os.path.exists(name):
        return name  # relative to the working directory (absl's rule)
    raise flags.CantOpenFlagFileError(
        f"{including} includes --flagfile={name}, which is neither next to it ({beside}) "
        f"nor in the working directory {os.getcwd()}; write the path relative to the "
        "including file")


def expand(argv):
    """`argv` with every `--flagfile=FILE` (or `--flagfile FILE`) replaced by FILE's flags,
    includes resolved as the module docstring says; stops at `--`, as absl does."""
    out, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        if arg in ("--flagfile", "-flagfile"):
            if not rest:
                raise flags.IllegalFlagValueError("--flagfile with no argument")
            out += _lines(os.path.expanduser(rest.pop(0)), [])
        elif arg.startswith(_DIRECTIVES):
            out += _lines(os.path.expanduser(arg.split("=", 1)[1]), [])
        else:
            out.append(arg)
            if arg == "--":
                out += rest
                break
    return out
