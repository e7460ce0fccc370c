"""Command-line plumbing shared by the scripts: flags from a config dataclass, one-line errors.

Each setting is written once, as a field of a config dataclass:

    lr: float = setting(1e-3, "peak AdamW learning rate")
    schedule: str = setting("linear", "β schedule", choices=schedules.NAMES)

and becomes a flag (`lr` -> `--lr`) with its default, help text and choices. Settings marked
`runtime=True` change how an invocation runs, not what is trained (steps, output folder,
device...): on --resume they come from the command line, the others from the checkpoint.
"""

import argparse
import dataclasses
import sys
import types
import typing

from .errors import MinigenError


def setting(default, help: str, choices=None, runtime: bool = False):
    """A config field with its flag's help text, its choices, and whether it is a runtime setting."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "runtime": runtime})


def _base_type(tp):
    """int for `int`, `int | None` and `Optional[int]`; tuples and others as they are."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of dataclass `cls`, each declared with `setting`."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text, choices = f.metadata["help"], f.metadata["choices"]
        base = _base_type(f.type)
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            default_note = "" if f.default is None else f" (default: {f.default})"
            parser.add_argument(flag, type=base, default=f.default, choices=list(choices) if choices else None,
                                dest=f.name, help=help_text + default_note)


def config_from_args(cls, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def runtime_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("runtime")}


def run(main, argv=None) -> int:
    """Call main(argv); a MinigenError becomes one line on stderr and exit status 2."""
    try:
        return main(argv) or 0
    except MinigenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
