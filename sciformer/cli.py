"""The `sciformer` command: Lightning's fit/validate/test/predict plus typed subcommands.

Subcommands are imported only when run, so `sciformer --help` answers at once.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable

from sciformer.errors import SciformerError

LIGHTNING = {
    "fit": "train a model: sciformer fit -c configs/pretrain/scot_tiny_cpu.yaml",
    "validate": "evaluate on the validation split: sciformer validate -c CONFIG --ckpt_path CKPT",
    "test": "evaluate on the test split: sciformer test -c CONFIG --ckpt_path CKPT",
    "predict": "write predictions: sciformer predict -c CONFIG --ckpt_path CKPT",
}

# name -> (module:function, one-line help with an example). A function taking `argv` parses its own
# arguments (argparse); any other is a typed function whose signature jsonargparse turns into a CLI.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("sciformer.data.commands:main", "build|convert|info data stores: sciformer data build ns-sines --out d.zarr"),
    "export": ("sciformer.commands:export", "checkpoint -> safetensors + config.json: sciformer export last.ckpt out/"),
    "sample": ("sciformer.tasks.generative:sample", "generate molecules/crystals with ADiT: sciformer sample --ckpt last.ckpt --n 1000 --kind molecule --out samples/"),
    "quickstart": ("sciformer.quickstart:quickstart", "the end-to-end demo: build data, pretrain, fine-tune vs scratch, roll out, report: sciformer quickstart"),
    "finetune": ("sciformer.commands:finetune", "fine-tune a pretrained model for several sample counts vs baselines, report AG/EG: sciformer finetune --ckpt pre.ckpt --data wave.zarr --samples 8,32 --out runs/ft"),
    "rollout": ("sciformer.rollout.command:rollout", "roll a model out over a store (ar|direct|mixed), write zarr + summary + plots: sciformer rollout --ckpt last.ckpt --data d.zarr --mode ar --out runs/rollout/ar/rollout.zarr"),
    "convert": ("sciformer.models.poseidon_convert:main", "upstream checkpoint -> sciformer export: sciformer convert poseidon Poseidon-T/ exports/poseidon-t"),
    "info": ("sciformer.commands:info", "versions, devices, registered models and data sets: sciformer info"),
}


def overview() -> str:
    width = max(map(len, [*LIGHTNING, *COMMANDS]))
    lines = ["usage: sciformer <command> [options]   (sciformer <command> --help for details)", "", "commands:"]
    for name, text in LIGHTNING.items():
        lines.append(f"  {name:<{width}}  {text}")
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name:<{width}}  {text}")
    return "\n".join(lines)


def _run_lightning(argv: list[str]) -> None:
    from sciformer.lightning_cli import SciformerCLI

    sys.argv = [sys.argv[0], *argv]  # LightningCLI reads sys.argv; passing both makes it warn
    SciformerCLI()


def _examples(fn: Callable) -> str:
    """The indented block after "Example:" in a docstring, shown under --help."""
    doc = inspect.getdoc(fn) or ""
    _, found, rest = doc.partition("Example:")
    block = [line for line in rest.split("\n\n")[0].splitlines() if line.strip()] if found else []
    return "examples:\n" + "\n".join(block) if block else ""


def _list_params(fn: Callable) -> set[str]:
    """Parameters of ``fn`` annotated ``list[...]`` (or ``list[...] | None``)."""
    hints = typing.get_type_hints(fn)
    out = set()
    for name, hint in hints.items():
        args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if any(typing.get_origin(a) is list for a in args):
            out.add(name)
    return out


def merge_list_flags(fn: Callable, argv: list[str]) -> list[str]:
    """Every list-valued flag accepts ``--flag a --flag b``, ``--flag a,b`` and ``--flag '[a,b]'`` alike: the
    values are gathered into one ``--flag [a,b]`` (jsonargparse alone takes only the last form)."""
    lists = _list_params(fn)
    values: dict[str, list[str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name in lists and (eq or i + 1 < len(argv)):
            value = inline if eq else argv[i + 1]
            i += 1 if eq else 2
            items = value.strip()
            items = items[1:-1] if items.startswith("[") and items.endswith("]") else items
            values.setdefault(name, []).extend(v.strip().strip("'\"") for v in items.split(",") if v.strip())
            continue
        rest.append(arg)
        i += 1
    return rest + [a for name, vals in values.items() for a in (f"--{name}", "[" + ",".join(vals) + "]")]


def bare_bool_flags(fn: Callable, argv: list[str]) -> list[str]:
    """A ``bool`` flag given alone (``--onnx``, at the end or before another flag) means ``--onnx true``."""
    bools = {k for k, v in typing.get_type_hints(fn).items() if v is bool}
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg.startswith("--") and arg[2:] in bools and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            out.append("true")
    return out


def _run_function(name: str, argv: list[str]) -> None:
    import argparse

    from jsonargparse import CLI, DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    target, _ = COMMANDS[name]
    module, attr = target.split(":")
    fn: Callable = getattr(importlib.import_module(module), attr)
    if list(inspect.signature(fn).parameters) == ["argv"]:
        fn(argv)
        return
    CLI(fn, args=merge_list_flags(fn, bare_bool_flags(fn, argv)), prog=f"sciformer {name}", as_positional=True,
        fail_untyped=True, epilog=_examples(fn), formatter_class=Formatter)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(overview())
        return 0
    if argv[0] in ("-V", "--version"):
        from sciformer import __version__

        print(f"sciformer {__version__}")
        return 0
    cmd = argv[0]
    try:
        if cmd in LIGHTNING:
            _run_lightning(argv)
        elif cmd in COMMANDS:
            _run_function(cmd, argv[1:])
        else:
            close = difflib.get_close_matches(cmd, [*LIGHTNING, *COMMANDS], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            print(f"sciformer: unknown command '{cmd}'{hint}; run `sciformer --help`", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        _debug_traceback()
        print(f"sciformer {cmd}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # argparse/jsonargparse exit after printing usage and the error
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:
        user = user_error(e)
        if user is None:  # a bug, not bad input: keep the traceback
            raise
        _debug_traceback()
        print(f"sciformer {cmd}: error: {one_line(user)}", file=sys.stderr)
        return 1
    return 0


def user_error(e: BaseException) -> SciformerError | None:
    """The ``SciformerError`` behind ``e``: itself, or one that jsonargparse or Lightning wrapped while building a
    task or data module (found through ``__cause__``/``__context__``)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, SciformerError):
            return e
        if isinstance(e, OSError) and e.filename and e.errno in OUTPUT_ERRNOS:
            return SciformerError(f"{e.filename}: {e.strerror}; {OUTPUT_ERRNOS[e.errno]}")
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


# operating-system refusals of a path the user chose (an output directory, mostly): what to do about each
OUTPUT_ERRNOS = {
    errno.EACCES: "choose a writable location or fix its permissions",
    errno.EPERM: "choose a writable location or fix its permissions",
    errno.EROFS: "the file system is read-only: choose another location",
    errno.ENOSPC: "the disk is full: free space or choose another location",
    errno.EDQUOT: "the disk quota is exhausted: free space or choose another location",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another location",
    errno.EEXIST: "a file is in the way where a directory is needed: choose another location",
}


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _debug_traceback() -> None:
    """``SCIFORMER_DEBUG=1`` shows the traceback behind a one-line error."""
    if os.environ.get("SCIFORMER_DEBUG", "").strip() not in ("", "0"):
        import traceback

        traceback.print_exc(file=sys.stderr)

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
