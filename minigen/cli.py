"""Command-line plumbing shared by the scripts: flags from a config dataclass, one-line errors.

Each field of a config dataclass becomes a flag (`batch_size` -> `--batch-size`) with its
help text and default, so the dataclass stays the single list of a script's settings.
"""

import argparse
import dataclasses
import sys
import types
import typing

from .errors import MinigenError


@dataclasses.dataclass
class DataConfig:
    """The data settings every training script shares; its config dataclass extends this one."""
    dataset: str = "glyphs"
    image_size: int | None = None
    channels: int | None = None
    data_root: str | None = None
    download: bool = False
    flip: bool = False


# Help for the data flags, one per field of DataConfig.
DATA_HELP = {
    "dataset": "glyphs | shapes | mnist | fashion | cifar10 | folder:PATH",
    "image_size": "resize images to SIZE x SIZE (required for folder:PATH; built-in sets only shrink)",
    "channels": "convert images to 1 (grayscale) or 3 (RGB) channels",
    "data_root": "folder holding mnist/, fashion/, cifar10/ (default: ./data or $MINIGEN_DATA)",
    "download": "download mnist / fashion / cifar10 into --data-root if missing",
    "flip": "random horizontal flips of the training images (not for digits!)",
}


def _base_type(tp):
    """int for `int`, `int | None` and `Optional[int]`; tuples and others as they are."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def add_config_args(parser: argparse.ArgumentParser, cls, helps: dict[str, str],
                    choices: dict[str, list] | None = None) -> None:
    """One flag per field of dataclass `cls`; every field must have a help text."""
    choices = choices or {}
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = helps[f.name]
        base = _base_type(f.type)
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            default_note = "" if f.default is None else f" (default: {f.default})"
            parser.add_argument(flag, type=base, default=f.default, choices=choices.get(f.name),
                                dest=f.name, help=help_text + default_note)


def config_from_args(cls, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def run(main, argv=None) -> int:
    """Call main(argv); a MinigenError becomes one line on stderr and exit status 2."""
    try:
        return main(argv) or 0
    except MinigenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def resumed_config(cls, from_command_line, saved: dict, runtime_fields: set[str]):
    """On --resume, the checkpoint's settings define the run; only the fields that change how
    this invocation runs (steps, output folder, compile, device, intervals...) come from the
    command line."""
    return cls(**{k: (getattr(from_command_line, k) if k in runtime_fields else v) for k, v in saved.items()})
