"""The `filepipe` command: thin click wrappers over FilepipeApp.

Heavy libraries (pandas, SQLAlchemy...) are imported inside the commands, so that
``filepipe --help`` starts at once.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .app import FilepipeApp
    from .report import RunReport

EXIT_FAILED = 1
EXIT_USAGE = 2


class Context:
    def __init__(self, pipeline: str | None, debug: bool) -> None:
        self.pipeline = pipeline
        self.debug = debug
        self._app: FilepipeApp | None = None

    @property
    def app(self) -> FilepipeApp:
        if self._app is None:
            from .app import load_app

            self._app = load_app(self.pipeline)
        return self._app


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """One-line messages for filepipe's own errors (tracebacks only with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context().find_object(Context)
        try:
            return func(*args, **kwargs)
        except click.exceptions.Exit:
            raise
        except BrokenPipeError:  # `filepipe show t | head` closed our output: not an error
            sys.stdout = open(os.devnull, "w")  # closed by the interpreter: silences the final flush
            sys.exit(0)
        except click.ClickException:
            raise
        except Exception as exc:
            from .errors import FilepipeError

            if ctx is not None and ctx.debug:
                raise
            if isinstance(exc, FilepipeError):
                click.echo(f"Error: {exc}", err=True)
            else:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                click.echo(f"Error: {type(exc).__name__}: {first} (run with --debug for the "
                           "traceback)", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-p", "--pipeline", metavar="PATH_OR_MODULE[:ATTR]",
              help="Pipeline to load (default ./pipeline.py, attribute `app`).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="filepipe")
@click.pass_context
def main(ctx: click.Context, pipeline: str | None, debug: bool) -> None:
    """Incremental processing of the data you keep in files.

    \b
    filepipe run              one-shot sync: recompute only what changed
    filepipe watch            keep doing it whenever a source file changes
    filepipe status           what is stale, what failed and why
    """
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    # the commands print failures themselves; the library's log repeats them
    logging.getLogger("filepipe").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    ctx.obj = Context(pipeline, debug)


# --- run --------------------------------------------------------------------------------

@main.command()
@click.option("--step", "steps", multiple=True, metavar="NAME", help="Run only this step (repeatable).")
@click.option("--full", is_flag=True, help="Recompute everything, not only what changed.")
@click.option("--dry-run", is_flag=True, help="Show what would run and why; write nothing.")
@click.option("--allow-deletes", is_flag=True,
              help="Let a source lose all its rows (its folder is gone) or most of them at once.")
@click.pass_obj
@handle_errors
def run(obj: Context, steps: Sequence[str], full: bool, dry_run: bool, allow_deletes: bool) -> None:
    """Sync the sources and run what is stale.

    \b
    Examples:
      filepipe run
      filepipe -p examples/sales/pipeline.py run --step totals
      filepipe run --dry-run

    Exit status: 0 all done, 1 some keys failed or a source could not be read
    (everything else was committed), 2 usage or pipeline errors.
    """
    app = obj.app
    if dry_run:
        _print_plan(app, steps)
        return
    with app.lock(wait=0):
        report = app.run(steps=list(steps), full=full, report=_new_report("run"),
                         allow_deletes=allow_deletes)
    _print_report(app, report)
    if not report.ok:
        sys.exit(EXIT_FAILED)


def _new_report(trigger: str) -> RunReport:
    from .report import RunReport

    report = RunReport(trigger=trigger)
    if sys.stderr.isatty():
        report.on_progress = _progress_line
    return report


def _progress_line(step: str, done: int, total: int | None) -> None:
    if total:
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "-" * (width - filled)
        click.echo(f"\r{step:<24} [{bar}] {done}/{total}", nl=done >= total, err=True)
    else:
        click.echo(f"\r{step:<24} {done} chunk(s)", nl=False, err=True)


def _print_report(app: FilepipeApp, report: RunReport) -> None:
    rows = []
    for name, c in report.tables.items():
        total = app.table(name).count()
        rows.append([name, c["added"], c["updated"], c["deleted"],
                     max(total - c["added"] - c["updated"], 0)])
    if rows:
        _table(["table", "added", "updated", "deleted", "unchanged"], rows)
    steps = [[n, s.processed if s.keys is None else s.keys, s.failed]
             for n, s in report.steps.items()]
    if steps:
        _table(["step", "keys processed", "failed"], steps)
    for line in report.problems(most_missing=5):
        click.echo(line, err=True)
    state = "nothing to do" if not rows and not steps else "done"
    if not report.ok:
        state = "finished with errors"
    click.echo(f"{state} in {report.seconds:.2f}s")


def _print_plan(app: FilepipeApp, steps: Sequence[str]) -> None:
    app.select_steps(steps)  # unknown names are an error here too
    sources = app.source_plan()
    if sources:
        click.echo("Sources changed on disk since the last run:")
        for s in sources:
            for kind, paths in (("new", s.new), ("changed", s.changed), ("missing", s.missing)):
                for p in paths:
                    click.echo(f"  {s.table}: {kind} {p}")
    else:
        click.echo("No source file changed since the last run.")
    plans = [p for p in app.step_plan() if not steps or p.name in steps]
    _table(["step", "pending keys", "failed", "why"],
           [[p.name, p.pending, p.failed, p.reason] for p in plans])
    if sources:
        click.echo("(pending counts do not include rows of changed files, which are read at run time)")


# --- watch ------------------------------------------------------------------------------

@main.command()
@click.option("--debounce", type=float, default=None, metavar="SECONDS",
              help="Quiet period after the last file event before a cycle starts.")
@click.option("--poll", is_flag=True, help="Poll the folders (network drives) instead of OS events.")
@click.option("--rescan", type=float, default=300.0, show_default=True, metavar="SECONDS",
              help="Full sync this often, to catch missed events.")
@click.pass_obj
@handle_errors
def watch(obj: Context, debounce: float | None, poll: bool, rescan: float) -> None:
    """Run whenever a source file changes (Ctrl-C to stop).

    \b
    Examples:
      filepipe watch
      filepipe watch --poll --debounce 2      # a network drive
    """
    from . import watch as watching

    app = obj.app
    with app.lock(wait=0):
        watching.watch(app, debounce=watching.DEFAULT_DEBOUNCE if debounce is None else debounce,
                       poll=poll, rescan_every=rescan, echo=click.echo)


# --- inspection -------------------------------------------------------------------------

@main.command()
@click.pass_obj
@handle_errors
def status(obj: Context) -> None:
    """Rows per table, pending and failed keys per step, changed sources.

    Reads no data file: changed sources are found by their fingerprints.
    """
    app = obj.app
    _table(["table", "role", "rows", "last change", "store"],
           [[t["table"], t["role"], t["rows"], _when(t["last_change"]), t["store"]]
            for t in app.table_stats()])
    click.echo()
    plans = app.step_plan()
    _table(["step", "pending", "failed", "state"],
           [[p.name, p.pending, p.failed, p.reason] for p in plans])
    for p in plans:
        for err in dict.fromkeys(p.errors):
            click.echo(f"  {p.name} failed: {err}")
    click.echo()
    sources = app.source_plan()
    if not sources:
        click.echo("Sources: no file changed since the last run.")
    for s in sources:
        parts = [f"{len(v)} {k}" for k, v in (("new", s.new), ("changed", s.changed),
                                             ("missing", s.missing)) if v]
        click.echo(f"Source {s.table}: {', '.join(parts)} file(s) since the last run "
                   "(run `filepipe run`)")
    for o in app.output_plan():
        click.echo(f"Output {o.table}: {len(o.changed)} file(s) changed on disk since filepipe "
                   "wrote them; the next run checks them (a copy is kept of real edits) and "
                   "rebuilds the output")
        for path in o.changed[:5]:
            click.echo(f"  {path}")
        if len(o.changed) > 5:
            click.echo(f"  ... and {len(o.changed) - 5} more")


@main.command()
@click.pass_obj
@handle_errors
def tables(obj: Context) -> None:
    """List the tables with their stores and row counts."""
    _table(["table", "role", "rows", "store"],
           [[t["table"], t["role"], t["rows"], t["store"]] for t in obj.app.table_stats()])


@main.command()
@click.argument("table")
@click.option("--limit", type=int, default=20, show_default=True, help="Rows to show (0: all).")
@click.option("--where", "where", multiple=True, metavar="COLUMN=VALUE",
              help="Keep rows whose column equals the value (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.pass_obj
@handle_errors
def show(obj: Context, table: str, limit: int, where: Sequence[str], fmt: str) -> None:
    """Print the rows of TABLE.

    \b
    Examples:
      filepipe show totals
      filepipe show orders --where customer=ACME --limit 0 --format csv
    """
    df = obj.app.table(table).get_data()
    for cond in where:
        column, sep, value = cond.partition("=")
        if not sep or column not in df.columns:
            raise click.BadParameter(f"{cond!r}: expected COLUMN=VALUE with a column of "
                                     f"{table} ({', '.join(map(str, df.columns))})")
        df = df[df[column].astype(str) == value]
    if limit:
        df = df.head(limit)
    if fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(df.to_json(orient="records", date_format="iso", force_ascii=False))
    else:
        click.echo(df.to_string(index=False) if len(df) else "(no rows)")


@main.command()
@click.pass_obj
@handle_errors
def steps(obj: Context) -> None:
    """List the steps with inputs, outputs and transform keys."""
    _table(["step", "inputs", "outputs", "transform keys"],
           [[p.name, ", ".join(p.inputs), ", ".join(p.outputs),
             ", ".join(p.transform_keys) or "(whole table)"] for p in obj.app.step_plan()])


@main.command()
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text",
              show_default=True)
@click.pass_obj
@handle_errors
def graph(obj: Context, fmt: str) -> None:
    """Tables and steps as a graph.

    \b
    Examples:
      filepipe graph
      filepipe graph --format mermaid > pipeline.mmd
      filepipe graph --format dot | dot -Tpng > pipeline.png
    """
    from .graph import render

    click.echo(render(obj.app.steps, fmt))


@main.command()
@click.argument("step", required=False)
@click.option("--all", "everything", is_flag=True,
              help="Start a fresh metadata index (the old one is kept aside).")
@click.pass_obj
@handle_errors
def reset(obj: Context, step: str | None, everything: bool) -> None:
    """Make STEP recompute every key on the next run; or, with --all, start a fresh index.

    \b
    Examples:
      filepipe reset totals     # totals recomputes everything next run
      filepipe reset --all      # the index is damaged or lost track: rebuild it from the files
    """
    if bool(step) == everything:
        raise click.UsageError("give a STEP, or --all")
    app = obj.app
    with app.lock(wait=0):
        if everything:
            kept = app.reset_index()
            where = f"; the old one is kept as {kept}" if kept else ""
            click.echo(f"Started a fresh metadata index{where}. The next `filepipe run` rebuilds "
                       "it from the files and makes every output equal a fresh recompute.")
            return
        assert step is not None  # checked above: a STEP or --all
        app.reset(step)
    click.echo(f"{step}: every key will be recomputed by the next `filepipe run`")


@main.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
def init(directory: str) -> None:
    """Create a small working project in DIRECTORY (default: here).

    It has an inbox/ folder with sample order files, a pipeline.py and an out/ folder;
    `filepipe run` inside it writes out/report.xlsx.
    """
    from .scaffold import scaffold

    try:
        created = scaffold(directory)
    except FileExistsError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    for path in created:
        click.echo(f"created {path}")
    click.echo(f"\nNext: cd {directory} && filepipe run")


# --- formatting -------------------------------------------------------------------------

def _table(header: list[str], rows: list[list[Any]]) -> None:
    """A plain aligned text table (numbers right-aligned)."""
    if not rows:
        return
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(isinstance(r[i], (int, float)) for r in rows) for i in range(len(header))]
    for n, r in enumerate(cells):
        line = "  ".join(c.rjust(w) if numeric[i] and n else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths)))
        click.echo(line.rstrip())


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
