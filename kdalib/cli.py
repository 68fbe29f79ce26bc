"""The ``kdalib`` command line: argument parsing only.

Every subcommand's work lives in the package that owns it. Each ``_run_*`` function
below imports its handler's module when that subcommand runs, so ``kdalib verify`` never
imports torch. A handler takes the parsed ``argparse.Namespace`` and returns an exit
status: 0 clean, 1 findings, 2 unusable input.

``pip install kdalib`` installs the operators and the layer only. The claim tools
(``verify``, ``sources``) need the ``sources`` extra and ``repro`` the ``book`` extra; run
without them, a command says which extra to install instead of failing on an import.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence

from kdalib import __version__

#: The modules each optional extra of ``pyproject.toml`` provides that a command imports.
EXTRAS = {
    "sources": ("ruamel.yaml", "urllib3", "certifi", "pypdf"),
    "book": ("nbformat", "nbclient", "ipykernel", "matplotlib", "pandas", "myst_nb"),
}


class MissingExtra(RuntimeError):
    """A command needs an optional extra of kdalib that is not installed."""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` (a key of :data:`EXTRAS`) that cannot be imported here."""
    return [module for module in EXTRAS[extra] if not _importable(module)]


def require_extra(extra: str, command: str) -> None:
    """Raises :class:`MissingExtra`, naming the extra and the missing modules, when ``command``
    cannot run because ``kdalib[extra]`` is not installed."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(
            f"kdalib {command} needs the {extra!r} extra: pip install 'kdalib[{extra}]' "
            f"(not installed: {', '.join(missing)})"
        )


def _needs(extra: str, command: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable]:
    def wrap(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        def run(args: argparse.Namespace) -> int:
            require_extra(extra, command)
            return handler(args)

        run.__doc__ = handler.__doc__
        return run

    return wrap


@_needs("sources", "verify")
def _run_verify(args: argparse.Namespace) -> int:
    from kdalib.sources.commands import cmd_verify

    return cmd_verify(args)


@_needs("sources", "sources fetch")
def _run_fetch(args: argparse.Namespace) -> int:
    from kdalib.sources.commands import cmd_fetch

    return cmd_fetch(args)


@_needs("sources", "sources check-links")
def _run_check_links(args: argparse.Namespace) -> int:
    from kdalib.sources.commands import cmd_check_links

    return cmd_check_links(args)


@_needs("sources", "sources add")
def _run_add(args: argparse.Namespace) -> int:
    from kdalib.sources.commands import cmd_add

    return cmd_add(args)


@_needs("sources", "sources quote")
def _run_quote(args: argparse.Namespace) -> int:
    from kdalib.sources.commands import cmd_quote

    return cmd_quote(args)


def _run_bench(args: argparse.Namespace) -> int:
    from kdalib.bench.command import cmd_bench

    return cmd_bench(args)


@_needs("book", "repro")
def _run_repro(args: argparse.Namespace) -> int:
    from kdalib.repro.runner import cmd_repro

    return cmd_repro(args)


def _run_tasks_grid(args: argparse.Namespace) -> int:
    from kdalib.tasks.command import cmd_grid

    return cmd_grid(args)


def _run_dev_ptxas(args: argparse.Namespace) -> int:
    from kdalib.ops.triton.ptxas_report import cmd_ptxas

    return cmd_ptxas(args)


def _run_info(args: argparse.Namespace) -> int:
    from kdalib.environment import cmd_info

    return cmd_info(args)


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check sources.yaml against the archived snapshots")
    p.add_argument("--sources", default="sources.yaml", help="the checklist file (default: %(default)s)")
    p.add_argument("--snapshots", default=None, help="snapshot folder (default: $KDALIB_SNAPSHOTS or snapshots/)")
    p.add_argument("--strict", action="store_true", help="a missing snapshot is an error, not a warning")
    p.add_argument(
        "--online",
        action="store_true",
        help="also fetch each source's live text: which sources changed, which quotes it still holds",
    )
    p.add_argument(
        "--fail-on-change",
        action="store_true",
        help="with --online: exit 1 when archived lines or a quote left a source's live text",
    )
    p.add_argument("--json", metavar="FILE", help="write the findings and the summary as JSON")
    p.add_argument(
        "--report",
        choices=("text", "md"),
        default="text",
        help="md: print a Markdown report of the claims (status, finding, fix) instead of the text summary",
    )
    p.add_argument(
        "--changed-since",
        metavar="REF",
        help="report only the claims added or changed since the git ref REF's sources.yaml",
    )
    p.add_argument("--allow-loopback", action="store_true", help=argparse.SUPPRESS)  # tests only
    p.add_argument(
        "--root", default=".", help="book root whose notes/ and notebooks/ are linted (default: %(default)s)"
    )
    p.set_defaults(handler=_run_verify)


def _add_sources(sub) -> None:
    p = sub.add_parser("sources", help="maintain the source checklist")
    p.add_argument("--sources", default="sources.yaml", help="the checklist file (default: %(default)s)")
    p.add_argument("--snapshots", default=None, help="snapshot folder (default: $KDALIB_SNAPSHOTS or snapshots/)")
    ssub = p.add_subparsers(dest="sources_command", required=True, metavar="COMMAND")

    f = ssub.add_parser("fetch", help="archive the text of sources into the snapshot store")
    f.add_argument("ids", nargs="*", metavar="ID", help="source ids (default: every source)")
    f.add_argument(
        "--new-version",
        action="store_true",
        help="fetch the live text and keep it as a new dated version when it changed",
    )
    f.add_argument("--allow-loopback", action="store_true", help=argparse.SUPPRESS)  # tests only
    f.set_defaults(handler=_run_fetch)

    c = ssub.add_parser("check-links", help="check every url and record link.checked/status")
    c.add_argument("--write", action="store_true", help="update sources.yaml in place (comments kept)")
    c.add_argument("--allow-loopback", action="store_true", help=argparse.SUPPRESS)
    c.set_defaults(handler=_run_check_links)

    a = ssub.add_parser("add", help="scaffold a source entry from a URL and a snapshot file")
    a.add_argument("url")
    a.add_argument("--snapshot", required=True, metavar="FILE", help="text file holding the source's content")
    a.add_argument("--id", dest="source_id", help="source id (default: derived from the URL)")
    a.add_argument("--title")
    a.add_argument("--publisher")
    a.add_argument("--kind", default="docs")
    a.add_argument(
        "--origin",
        required=True,
        choices=("publisher", "extraction", "third-party"),
        help="the publisher's own bytes, your extraction of their document, or someone else's copy",
    )
    a.add_argument("--version", default="not recorded", help="which version of the document the text is")
    a.add_argument("--retrieved-from", help="where the text was taken from (default: the URL)")
    a.set_defaults(handler=_run_add)

    q = ssub.add_parser("quote", help="find text in a source's snapshot and print the exact span")
    q.add_argument("source_id", metavar="ID")
    q.add_argument("text")
    q.add_argument("--version", metavar="DATE", help="search this archived version (default: the first snapshot)")
    q.set_defaults(handler=_run_quote)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time the KDA operators side by side; prints a table, writes JSON")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--suite", default="default", help="which rows to run (see --list)")
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    p.add_argument(
        "--methods",
        default=None,
        metavar="A,B",
        help="time only these of the suite's methods, comma-separated (default: all of them)",
    )
    p.add_argument(
        "--rows",
        default=None,
        metavar="PART,PART",
        help="time only the suite's rows whose label contains one of these comma-separated parts, "
        "e.g. train-B2-T16384 (default: every row; see a run's printed labels)",
    )
    p.add_argument("--json", metavar="FILE", default=None, help="where to write results (default: bench-<device>.json)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per row (best is reported)")
    p.add_argument("--fla-path", default=None, help="flash-linear-attention source tree or wheel to compare against")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU intra-op threads for every method (default: torch's default)"
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also profile one call per row and record its most expensive kernels (CUDA) or operators (CPU)",
    )
    p.add_argument(
        "--first-call",
        choices=["forward", "train", "both"],
        default=None,
        help="also time the first call from a cold Triton cache (a fresh process each), kdalib vs FLA, "
        "at B2 T16384 H32 with the bounded gate: the forward, the training step or both (CUDA)",
    )
    p.set_defaults(handler=_run_bench)


def _add_repro(sub) -> None:
    p = sub.add_parser("repro", help="execute notebooks and record their results with provenance")
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="notebooks to run (default: all in notebooks/)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--profile", default="smoke", choices=["smoke", "full"])
    p.add_argument("--out", default=None, help="results folder (default: notebooks/results/<device>/)")
    p.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    p.set_defaults(handler=_run_repro)


def _add_tasks(sub) -> None:
    p = sub.add_parser("tasks", help="synthetic-task experiments")
    tsub = p.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")
    g = tsub.add_parser(
        "grid",
        help="train the missing runs of a synthetic-task grid into its record, resumably (or --status)",
    )
    g.add_argument("--plan", default="figure4", help="which grid (figure4, transition; default: %(default)s)")
    g.add_argument(
        "--device", default="plan", choices=["plan", "cpu", "cuda"], help="default: the plan's device (figure4: cuda)"
    )
    g.add_argument(
        "--record", default=None, help="the record file (default: notebooks/results/<device>/05_synthetic_<plan>.json)"
    )
    g.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="start no run that would end later than this many seconds after the command began",
    )
    g.add_argument("--max-runs", type=int, default=None, help="train at most this many runs")
    g.add_argument(
        "--tier", action="append", default=None, metavar="NAME", help="train only this tier's runs (repeatable)"
    )
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's default)")
    g.add_argument(
        "--status", action="store_true", help="print what the record holds and what is missing; train nothing"
    )
    g.set_defaults(handler=_run_tasks_grid)


def _add_dev(sub) -> None:
    p = sub.add_parser("dev", help="tools for working on kdalib itself")
    dsub = p.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    x = dsub.add_parser(
        "ptxas",
        help="compile the Triton kernels for a GPU on this machine (no GPU needed) and print ptxas' registers, "
        "spills and shared memory per kernel",
    )
    x.add_argument(
        "--path",
        action="append",
        choices=["forward", "forward-bounded", "training"],
        default=None,
        help="which entry point's kernels (repeatable; default: all three)",
    )
    x.add_argument("--kernel", action="append", default=None, metavar="NAME", help="only kernels whose name has NAME")
    x.add_argument("--dim", type=int, default=128, help="K = V (default: %(default)s)")
    x.add_argument("--heads", type=int, default=32, help="heads (default: %(default)s)")
    x.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    x.add_argument("--capability", type=int, default=90, help="the GPU's compute capability (default: %(default)s)")
    x.add_argument("--warps", type=int, action="append", default=None, help="compile with these warps (repeatable)")
    x.add_argument("--stages", type=int, action="append", default=None, help="compile with these stages (repeatable)")
    x.add_argument("--ptxas", default=None, help="the ptxas to run (default: Triton's)")
    x.add_argument("--json", metavar="FILE", default=None, help="also write the rows as JSON")
    x.set_defaults(handler=_run_dev_ptxas)


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="print the environment: Python, torch, device, kdalib")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=_run_info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdalib", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kdalib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_verify, _add_sources, _add_bench, _add_repro, _add_tasks, _add_dev, _add_info):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except MissingExtra as missing:
        print(missing, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (`kdalib verify | head`): stop quietly, and point stdout
        # at /dev/null so that the interpreter's final flush cannot raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # what a shell reports for a process ended by SIGPIPE


if __name__ == "__main__":
    raise SystemExit(main())
