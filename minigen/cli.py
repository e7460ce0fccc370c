"""Command-line plumbing shared by the scripts: flags from a config dataclass, one-line errors.

Each setting is written once, as a field of a config dataclass:

    lr: float = setting(1e-3, "peak AdamW learning rate")
    schedule: str = setting("linear", "β schedule", choices=schedules.NAMES)

and becomes a flag (`lr` -> `--lr`) with its default, help text, choices and allowed range
(`check=`, e.g. `positive`, `at_least(1)`, `between(0, 1)`), so a bad value is refused before any
data is drawn or model built, in one line naming the flag, the value and the range (exit 2).
Settings marked `runtime=True` change how an invocation runs, not what is trained (steps,
output folder, device...): on --resume they come from the command line, the others from the
checkpoint.
"""

import argparse
import dataclasses
import math
import os
import sys
import types
import typing
from pathlib import Path

from .errors import MinigenError


def setting(default, help: str, choices=None, runtime: bool = False, check=None, *, flag: str | None = None,
            metavar: str | None = None, parse=None, repeat: bool = False, required: bool = False):
    """A config field with its flag's help text, choices, allowed range (`check`), and whether
    it is a runtime setting. Rarer needs: `flag` when the flag is not `--field-name` (`-n`,
    `--class`; for a bool, a plain switch such as `--no-clip`), `metavar`, `parse` (an argparse
    type for a value that is not a plain number or string), `repeat` (a list: the flag may be
    given again), `required`."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "runtime": runtime,
                                                        "check": check, "flag": flag, "metavar": metavar,
                                                        "parse": parse, "repeat": repeat, "required": required})


# ---- allowed ranges: each takes a value and returns what is wrong with it, or None ----------------

def at_least(low):
    return lambda v: None if v >= low else f"must be at least {low}"


def between(low, high, low_open: bool = False):
    """low ≤ v ≤ high (low < v with low_open)."""
    def check(v):
        ok = (low < v if low_open else low <= v) and v <= high
        return None if ok else f"must be in {'(' if low_open else '['}{low}, {high}]"
    return check


# Upper bounds shared by every script (a value past them fails late, or draws only black and white)
SEED_MAX = 2**32 - 1                 # NumPy's seeds stop there; torch's at 2^64
SEED = between(0, SEED_MAX)
STEPS = between(1, 10**9)            # optimizer steps: a billion is past any run; a typo past it would train forever
GUIDANCE = between(0, 100)           # classifier-free guidance scale w: past ~30 every pixel saturates
LOSS_SCALE = between(0, 1000)        # loss and classifier guidance scales


def positive(v):
    return None if v > 0 else "must be greater than 0"


def non_negative(v):
    return None if v >= 0 else "must be 0 or more"


def number(base, check=None):
    """An argparse type: `base` (int, float or str), a finite number, and within `check`'s range."""
    def parse(text: str):
        try:
            value = base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if base is int else 'a number'}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text}: must be a finite number")
        problem = check(value) if check else None
        if problem:
            raise argparse.ArgumentTypeError(f"{text}: {problem}")
        return value
    parse.__name__ = base.__name__                     # argparse names the type in its messages
    return parse


def interval(text: str) -> tuple[float, float]:
    """An argparse type for "LOW,HIGH": two finite numbers, 0 ≤ LOW < HIGH."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give two numbers LOW,HIGH") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
        raise argparse.ArgumentTypeError(f"{text}: must be finite with 0 <= LOW < HIGH")
    return low, high


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (`error: argument --lr: -1: must be ...`)
    and exit status 2, without the usage block (`--help` has it)."""

    def error(self, message: str):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)

    def _get_value(self, action, arg_string):
        """A flag given an empty value (`--ckpt ''`, an unset shell variable) is refused, not
        read as "not given": every flag that takes a value needs one."""
        if action.option_strings and arg_string == "":
            self.error(f"argument {'/'.join(action.option_strings)}: an empty value; give one, or leave the flag out")
        return super()._get_value(action, arg_string)


def _base_type(tp):
    """int for `int`, `int | None` and `Optional[int]`; tuples and others as they are."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def flag_of(cls, name: str) -> str:
    """The command-line flag of setting `name` of dataclass `cls`: `--field-name`, or the `flag`
    its `setting` names (`-n`, `--class`)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.metadata.get("flag") or "--" + name.replace("_", "-")


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of dataclass `cls`, each declared with `setting`."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        flag = flag_of(cls, f.name)
        help_text, choices, check = meta["help"], meta["choices"], meta.get("check")
        base = _base_type(f.type)
        if base is bool:                            # --x and --no-x; a plain switch where `flag` names it
            action = "store_true" if meta.get("flag") else argparse.BooleanOptionalAction
            parser.add_argument(flag, action=action, default=f.default, dest=f.name, help=help_text)
            continue
        default_note = "" if f.default is None or meta.get("required") else f" (default: {f.default})"
        if meta.get("repeat"):
            kind, default_note = str, ""
        elif meta.get("parse"):
            kind = meta["parse"]
        else:
            kind = number(base, check) if base in (int, float) or check else base
        parser.add_argument(flag, type=kind, default=f.default, choices=list(choices) if choices else None,
                            dest=f.name, help=help_text + default_note, metavar=meta.get("metavar"),
                            action="append" if meta.get("repeat") else "store", required=meta.get("required", False))


def config_from_args(cls, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def parse_config(parser: argparse.ArgumentParser, cls, argv=None):
    """(config, the names of the settings given on the command line), so that a resumed run
    can tell a flag the user typed from a default."""
    args = parser.parse_args(argv)
    saved = [(a, a.default) for a in parser._actions]
    try:                                                # parse again with no defaults: only what was typed
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        given = set(vars(parser.parse_args(argv, namespace=argparse.Namespace())))
    finally:
        for action, default in saved:
            action.default = default
    return config_from_args(cls, args), given


def runtime_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("runtime")}


def run(main, argv=None) -> int:
    """Call main(argv); a MinigenError becomes one line on stderr and exit status 2 (as a bad
    flag does, through Parser)."""
    try:
        return main(argv) or 0
    except MinigenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:                       # argparse: --help (0) or a bad flag (2)
        return e.code if isinstance(e.code, int) else 2


def refuse_moved(argv, moved: dict[str, str]) -> None:
    """A flag that now belongs to another script, or is gone: one line saying what replaced it
    (`moved` maps the flag to that line), before the command line is parsed."""
    for arg in sys.argv[1:] if argv is None else argv:
        flag = arg.split("=", 1)[0]
        if flag in moved:
            raise MinigenError(f"{flag}: {moved[flag]}")


# ---- output paths, checked before the work rather than after it ----------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")


def writable_folder(path, flag: str = "--out") -> Path:
    """Make the folder (and its parents) now, and prove it can be written to."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MinigenError(f"{flag} {path}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise MinigenError(f"{flag} {path}: cannot write there ({e.strerror or type(e).__name__})") from None
    return path


def writable_image(path, flag: str = "--out") -> Path:
    """An image file to be written: a known image suffix, not a folder, its folder writable."""
    path = Path(path)
    if path.is_dir():
        raise MinigenError(f"{flag} {path}: is a folder; give a file name such as {path / 'samples.png'}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise MinigenError(f"{flag} {path}: unknown image type {path.suffix or '(none)'!r}; "
                           f"use one of {', '.join(IMAGE_SUFFIXES)}")
    writable_folder(path.parent if str(path.parent) else ".", flag=f"{flag} {path}: its folder")
    return path
