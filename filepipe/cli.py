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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .app import FilepipeApp
    from .plan import Plan, SourcePlan, StepPlan
    from .report import RunReport

EXIT_FAILED = 1
EXIT_USAGE = 2


class Context:
    def __init__(self, pipeline: str | None, debug: bool, verbosity: int = 0) -> None:
        self.pipeline = pipeline
        self.debug = debug
        #: -1 with -q (errors, problems and the data asked for), 1 with -v (more detail)
        self.verbosity = verbosity
        self._app: FilepipeApp | None = None

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0

    @property
    def verbose(self) -> bool:
        return self.verbosity > 0

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
                message = f"Error: {exc}"
            else:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                message = (f"Error: {type(exc).__name__}: {first} (run with --debug for the "
                           "traceback)")
            click.echo(click.style(message, fg="red"), err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


QUIET_HELP = "Print only errors, problems and the data asked for."
VERBOSE_HELP = "Say more: every key and file, step timings, every watch cycle."


def verbosity(func: Callable[..., Any]) -> Callable[..., Any]:
    """-q/--quiet and -v/--verbose on a command (they may also come before it)."""

    @functools.wraps(func)
    def wrapper(*args: Any, quiet_: bool, verbose_: bool, **kwargs: Any) -> Any:
        obj = click.get_current_context().find_object(Context)
        if obj is not None and (quiet_ or verbose_):
            obj.verbosity = _verbosity(quiet_, verbose_)
        return func(*args, **kwargs)

    # first in the list: listed last by --help, after the command's own options
    wrapper.__click_params__ = [  # type: ignore[attr-defined]
        click.Option(["-v", "--verbose", "verbose_"], is_flag=True, help=VERBOSE_HELP),
        click.Option(["-q", "--quiet", "quiet_"], is_flag=True, help=QUIET_HELP),
        *getattr(func, "__click_params__", [])]
    return wrapper


def _verbosity(quiet: bool, verbose: bool) -> int:
    if quiet and verbose:
        raise click.UsageError("give -q/--quiet or -v/--verbose, not both")
    return -1 if quiet else 1 if verbose else 0


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-p", "--pipeline", metavar="PATH_OR_MODULE[:ATTR]",
              help="Pipeline to load (default ./pipeline.py, attribute `app`).")
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@click.option("-v", "--verbose", is_flag=True, help=VERBOSE_HELP)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="filepipe")
@click.pass_context
def main(ctx: click.Context, pipeline: str | None, quiet: bool, verbose: bool,
         debug: bool) -> None:
    """Incremental processing of the data you keep in files.

    \b
    filepipe run              one-shot sync: recompute only what changed
    filepipe watch            keep doing it whenever a source file changes
    filepipe status           what is stale, what failed and why

    Colours are used on a terminal only, and never when NO_COLOR is set.
    """
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    # the commands print failures themselves; the library's log repeats them
    logging.getLogger("filepipe").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    if os.environ.get("NO_COLOR"):  # https://no-color.org: set and not empty
        ctx.color = False
    ctx.obj = Context(pipeline, debug, _verbosity(quiet, verbose))


# --- run --------------------------------------------------------------------------------

STEP_HELP = ("Run only this step (repeatable); NAME+ adds the steps below it, "
             "+NAME the steps it needs.")

executor_option = click.option(
    "--executor", metavar="SPEC", envvar="FILEPIPE_EXECUTOR",
    help="Where step functions run: in-process (default), processes[:N] (local worker "
         "processes), dask://HOST:PORT (a dask scheduler), dask:local[:N] (a local dask "
         "cluster). Inputs, outputs and the index stay with this process.")


@main.command()
@verbosity
@click.option("--step", "steps", multiple=True, metavar="NAME", help=STEP_HELP)
@click.option("--full", is_flag=True, help="Recompute everything, not only what changed.")
@click.option("--dry-run", is_flag=True,
              help="Show the keys each step would recompute (changed files are read, "
                   "nothing is written).")
@click.option("--allow-deletes", is_flag=True,
              help="Let a source lose all its rows (its folder is gone) or most of them at once.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), metavar="FILE.xlsx",
              help="Write the run's changes as a workbook: a summary, then a sheet per table.")
@executor_option
@click.pass_obj
@handle_errors
def run(obj: Context, steps: Sequence[str], full: bool, dry_run: bool, allow_deletes: bool,
        report_path: str | None, executor: str | None) -> None:
    """Sync the sources and run what is stale.

    \b
    Examples:
      filepipe run
      filepipe -p examples/sales/pipeline.py run --step customer_totals
      filepipe run --step price_orders+       # that step and every step below it
      filepipe run --step +customer_totals    # that step and every step it needs
      filepipe run --dry-run
      filepipe run --executor processes:4     # the step functions on 4 local processes
      filepipe run --executor dask:local      # on a local dask cluster (dask://HOST:PORT: a scheduler)

    Exit status: 0 all done, 1 some keys failed or a source could not be read
    (everything else was committed), 2 usage or pipeline errors.
    """
    app = obj.app
    if dry_run:
        _print_plan(obj, app.plan(steps, full=full, allow_deletes=allow_deletes))
        return
    if executor:
        app.executor = executor
    progress = _Progress.on_terminal(obj)
    with app.lock(wait=0):
        try:
            report = app.run(steps=list(steps), full=full, report=_new_report("run", progress),
                             allow_deletes=allow_deletes)
        finally:
            if progress is not None:
                progress.close()
    _print_report(obj, app, report)
    if report_path:
        _write_run_workbook(obj, app, report, report_path)
    if not report.ok:
        sys.exit(EXIT_FAILED)


def _write_run_workbook(obj: Context, app: FilepipeApp, report: RunReport, path: str) -> None:
    from . import versions

    diffs = {}
    if report.run_id is not None:
        diffs = {t: versions.diff(app.ds, t, run=report.run_id) for t in report.tables
                 if any(report.tables[t].values())}
    title = f"run {report.run_id}" if report.run_id is not None else "nothing changed"
    versions.change_workbook(app.ds, path, diffs, title)
    if not obj.quiet:
        click.echo(f"changes written to {path}")


def _new_report(trigger: str, progress: _Progress | None = None) -> RunReport:
    from .report import RunReport

    report = RunReport(trigger=trigger)
    if progress is not None:
        report.on_progress = progress.step
        report.on_read_progress = progress.read
    return report


class _Progress:
    """Progress bars on stderr (click's), one at a time: the changed files of a source
    being read, then the batches of each step (read, computed and written). Each shows
    done/total, percent, rate and, after a second, the time left."""

    def __init__(self, file: Any = None) -> None:
        self.file = file
        self._bar: Any = None
        self._label: str | None = None
        self._unit = ""
        self._start = 0.0

    @classmethod
    def on_terminal(cls, obj: Context) -> _Progress | None:
        """Bars when stderr is a terminal and -q is not given, else None."""
        return cls(sys.stderr) if sys.stderr.isatty() and not obj.quiet else None

    def step(self, name: str, done: int, total: int | None) -> None:
        self._update(name, "keys" if total is not None else "batches", done, total)

    def read(self, table: str, done: int, total: int) -> None:
        self._update(f"reading {table}", "files", done, total)

    def _update(self, label: str, unit: str, done: int, total: int | None) -> None:
        import itertools

        if label != self._label:
            self.close()
            self._label, self._unit, self._start = label, unit, time.monotonic()
            options: dict[str, Any] = dict(label=f"{label:<24}", file=self.file, show_pos=True,
                                           show_eta=True, item_show_func=self._rate, width=30)
            if total is None:
                self._bar = click.progressbar(itertools.count(), **options)
            else:
                self._bar = click.progressbar(length=total, show_percent=True, **options)
            self._bar.__enter__()
        if done > self._bar.pos:
            self._bar.update(done - self._bar.pos)
        if total is not None and done >= total:
            self.close()

    def _rate(self, _item: Any) -> str | None:
        elapsed = time.monotonic() - self._start
        if self._bar is None or not self._bar.pos or elapsed <= 0:
            return None
        return f"{self._bar.pos / elapsed:,.0f} {self._unit}/s"

    def close(self) -> None:
        bar, self._bar, self._label = self._bar, None, None
        if bar is not None:
            bar.__exit__(None, None, None)


PROBLEM_COLOURS = {"FAILED": "red", "UNREADABLE": "red", "NOT SYNCED": "red", "Error": "red"}


def _echo_problem(line: str) -> None:
    """A problem line on stderr: errors in red, warnings (missing files, waiting steps,
    backups) in yellow."""
    fg = next((c for prefix, c in PROBLEM_COLOURS.items() if line.startswith(prefix)), "yellow")
    click.echo(click.style(line, fg=fg), err=True)


def _print_report(obj: Context, app: FilepipeApp, report: RunReport) -> None:
    for line in report.problems(most_missing=None if obj.verbose else 5):
        _echo_problem(line)
    if obj.quiet:
        return
    rows = []
    for name, c in report.tables.items():
        total = app.table(name).count()
        rows.append([name, c["added"], c["updated"], c["deleted"],
                     max(total - c["added"] - c["updated"], 0)])
    if rows:
        _table(["table", "added", "updated", "deleted", "unchanged"], rows)
    header = ["step", "keys processed", "failed"] + (["seconds"] if obj.verbose else [])
    steps = [[n, s.processed if s.keys is None else s.keys,
              _Styled(s.failed, "red") if s.failed else s.failed]
             + ([round(s.seconds, 2)] if obj.verbose else [])
             for n, s in report.steps.items()]
    if steps:
        _table(header, steps)
    state, fg = ("nothing to do", None) if not rows and not steps else ("done", "green")
    if not report.ok:
        state, fg = "finished with errors", "red"
    click.echo(f"{click.style(state, fg=fg) if fg else state} in {report.seconds:.2f}s")


# --- what a run would do: run --dry-run, status ------------------------------------------------

KEYS_SHOWN = 10  # keys listed per step (all with -v)
FILES_SHOWN = 10  # files listed per source and kind (all with -v)


def _print_plan(obj: Context, plan: Plan) -> None:
    """`run --dry-run`: the changed files, the rows they hold, and per step the keys it
    would recompute (read from the changed files; nothing is written)."""
    for line in plan.problems():
        _echo_problem(line)
    busy = [p for p in plan.steps if p.pending or p.after or p.failed]
    if obj.quiet:
        _table(["step", "pending keys", "failed"], [_step_cells(p)[:3] for p in busy])
        return
    if plan.sources:
        click.echo("Sources changed on disk since the last run:")
        for s in plan.sources:
            for kind, paths in (("new", s.new), ("changed", s.changed), ("missing", s.missing)):
                for p in _first(obj, paths):
                    click.echo(f"  {s.table}: {kind} {p}")
                if len(paths) > len(_first(obj, paths)):
                    click.echo(f"  {s.table}: ... and {len(paths) - FILES_SHOWN} more {kind}")
            if s.read:
                click.echo(f"  {s.table}: {_rows_text(s)}")
    else:
        click.echo("No source file changed since the last run.")
    _table(["step", "pending keys", "failed", "why"], [_step_cells(p) for p in plan.steps])
    if any(p.keys is not None and len(p.keys) for p in plan.steps):
        click.echo("Keys each step would recompute:")
        for p in plan.steps:
            keys = _keys_line(obj, p)
            if keys:
                click.echo(f"  {keys}")
    for o in plan.outputs:
        click.echo(f"Output {o.table}: {len(o.changed)} file(s) changed on disk since filepipe "
                   "wrote them: the run checks them and rebuilds the output if they were edited")
    click.echo("Dry run: nothing was written.")


def _step_cells(p: StepPlan) -> list[Any]:
    pending = _Styled(f"{p.pending}+" if p.after else p.pending, "yellow") \
        if p.pending or p.after else p.pending
    failed = _Styled(p.failed, "red") if p.failed else p.failed
    state = _Styled(p.reason, "green" if p.reason.startswith("up to date") else
                    "red" if p.failed or p.waiting else "yellow")
    return [p.name, pending, failed, state]


def _rows_text(s: SourcePlan) -> str:
    if not s.rows_changed:
        return "no row changed (the files hold the rows the index has)"
    return f"a sync would add {s.added} row(s), change {s.updated}, delete {s.deleted}"


def _first(obj: Context, items: Sequence[Any]) -> Sequence[Any]:
    return items if obj.verbose else items[:FILES_SHOWN]


def _keys_line(obj: Context, p: StepPlan) -> str | None:
    """``step (customer): ACME, Globex (+3 more)``, or None when no key is pending."""
    if p.keys is None or not len(p.keys):
        return None
    if not p.transform_keys:
        return f"{p.name}: the whole table"
    keys = p.keys if obj.verbose else p.keys.head(KEYS_SHOWN)
    names = p.transform_keys
    values = [str(r[0]) if len(names) == 1 else "(" + ", ".join(map(str, r)) + ")"
              for r in keys[names].itertuples(index=False, name=None)]
    columns = names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
    more = f" (+{p.pending - len(values)} more)" if p.pending > len(values) else ""
    after = f" + what {', '.join(p.after)} change{'s' if len(p.after) == 1 else ''}" \
        if p.after else ""
    return f"{p.name} ({columns}): {', '.join(values)}{more}{after}"


# --- watch ------------------------------------------------------------------------------

@main.command()
@verbosity
@click.option("--debounce", type=float, default=None, metavar="SECONDS",
              help="Quiet period after the last file event before a cycle starts.")
@click.option("--poll", is_flag=True, help="Poll the folders (network drives) instead of OS events.")
@click.option("--rescan", type=float, default=300.0, show_default=True, metavar="SECONDS",
              help="Full sync this often, to catch missed events.")
@executor_option
@click.pass_obj
@handle_errors
def watch(obj: Context, debounce: float | None, poll: bool, rescan: float,
          executor: str | None) -> None:
    """Run whenever a source file changes (Ctrl-C to stop).

    Logs one line per cycle that changed something or met a problem; -v logs every
    cycle (the periodic full sync that found nothing too), -q only problems.

    \b
    Examples:
      filepipe watch
      filepipe watch --poll --debounce 2      # a network drive
    """
    from . import watch as watching

    app = obj.app
    if executor:
        app.executor = executor
    with app.lock(wait=0), app.executing():
        watching.watch(app, debounce=watching.DEFAULT_DEBOUNCE if debounce is None else debounce,
                       poll=poll, rescan_every=rescan, echo=click.echo,
                       verbosity=obj.verbosity)


# --- inspection -------------------------------------------------------------------------

@main.command()
@verbosity
@click.option("--step", "steps", multiple=True, metavar="NAME",
              help="Only this step (repeatable); NAME+ adds the steps below it, +NAME the "
                   "steps it needs.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--check", is_flag=True,
              help="Exit 1 when a step has keys pending or failed, a source file cannot be "
                   "read or an output changed on disk; 0 when all is up to date.")
@click.pass_obj
@handle_errors
def status(obj: Context, steps: Sequence[str], fmt: str, check: bool) -> None:
    """Rows per table; per step the keys the next run would recompute, and why; failures.

    Changed source files are found by their fingerprints, then read and hashed to count
    the keys they touch, as `run` would; nothing is written.

    \b
    Examples:
      filepipe status
      filepipe status --check -q || filepipe run
      filepipe status --format json
    """
    app = obj.app
    plan = app.plan(steps)
    stats = app.table_stats()
    if fmt == "json":
        import json

        click.echo(json.dumps({"tables": [{**t, "last_change": _iso(t["last_change"])}
                                          for t in stats], **plan.as_dict()}, ensure_ascii=False))
    elif obj.quiet:
        for line in plan.problems():
            _echo_problem(line)
        _table(["step", "pending", "failed", "state"],
               [_step_cells(p) for p in plan.steps if p.pending or p.after or p.failed])
    else:
        _print_status(obj, stats, plan)
    if check and not plan.clean:
        sys.exit(EXIT_FAILED)


def _print_status(obj: Context, stats: list[dict[str, Any]], plan: Plan) -> None:
    _table(["table", "role", "rows", "last change", "store"],
           [[t["table"], t["role"], t["rows"], _when(t["last_change"]), t["store"]]
            for t in stats])
    click.echo()
    _table(["step", "pending", "failed", "state"], [_step_cells(p) for p in plan.steps])
    for p in plan.steps:
        line = _keys_line(obj, p)
        if line:
            click.echo(f"  {line}")
        for err in dict.fromkeys(p.errors):
            click.echo(click.style(f"  {p.name} failed: {err}", fg="red"))
    click.echo()
    for line in plan.problems():
        _echo_problem(line)
    if not plan.sources:
        click.echo("Sources: no file changed since the last run.")
    for s in plan.sources:
        parts = [f"{len(v)} {k}" for k, v in (("new", s.new), ("changed", s.changed),
                                             ("missing", s.missing)) if v]
        if not parts:
            continue
        rows = f"; rows +{s.added} ~{s.updated} -{s.deleted}" if s.read else ""
        click.echo(f"Source {s.table}: {', '.join(parts)} file(s) since the last run{rows} "
                   "(run `filepipe run`)")
        if obj.verbose:
            for kind, paths in (("new", s.new), ("changed", s.changed), ("missing", s.missing)):
                for path in paths:
                    click.echo(f"  {kind} {path}")
    for o in plan.outputs:
        click.echo(f"Output {o.table}: {len(o.changed)} file(s) changed on disk since filepipe "
                   "wrote them; the next run checks them (a copy is kept of real edits) and "
                   "rebuilds the output")
        for path in _first(obj, o.changed[:5] if not obj.verbose else o.changed):
            click.echo(f"  {path}")
        if len(o.changed) > 5 and not obj.verbose:
            click.echo(f"  ... and {len(o.changed) - 5} more")


def _iso(ts: float | None) -> str | None:
    """A Unix time as local ISO 8601 with its offset (None stays None)."""
    import datetime

    return None if ts is None else \
        datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


@main.command()
@verbosity
@click.pass_obj
@handle_errors
def tables(obj: Context) -> None:
    """List the tables with their stores and row counts."""
    _table(["table", "role", "rows", "store"],
           [[t["table"], t["role"], t["rows"], t["store"]] for t in obj.app.table_stats()])


@main.command()
@verbosity
@click.argument("table")
@click.option("--limit", type=int, default=20, show_default=True, help="Rows to show (0: all).")
@click.option("--where", "where", multiple=True, metavar="COLUMN=VALUE",
              help="Keep rows whose column equals the value (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "xlsx"]), default="table",
              show_default=True, help="xlsx needs -o FILE.")
@click.option("--as-of", "as_of", metavar="REF", help="The table as it was at a version: a run id, a "
              "tag, or a time (2026-11-30, 2026-11-30T14:00).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this new file.")
@click.pass_obj
@handle_errors
def show(obj: Context, table: str, limit: int, where: Sequence[str], fmt: str, as_of: str | None,
         output: str | None) -> None:
    """Print the rows of TABLE.

    \b
    Examples:
      filepipe show customers
      filepipe show orders --where shop=berlin --limit 0 --format csv
      filepipe show customers --as-of month-end --format xlsx -o customers-november.xlsx
    """
    from . import versions

    if fmt == "xlsx" and not output:
        raise click.UsageError("--format xlsx writes a workbook: name it with -o FILE.xlsx")
    df = versions.as_of(obj.app.ds, table, as_of) if as_of else obj.app.table(table).get_data()
    for cond in where:
        column, sep, value = cond.partition("=")
        if not sep or column not in df.columns:
            raise click.BadParameter(f"{cond!r}: expected COLUMN=VALUE with a column of "
                                     f"{table} ({', '.join(map(str, df.columns))})")
        df = df[df[column].astype(str) == value]
    if output:
        versions.export(df, output if fmt == "table" or output.lower().endswith(f".{fmt}")
                        else f"{output}.{fmt}")
        if not obj.quiet:
            click.echo(f"{len(df)} row(s) written to {output}")
        return
    if limit:
        df = df.head(limit)
    _echo_frame(df, fmt)


def _echo_frame(df: Any, fmt: str) -> None:
    """`df` as an aligned text table, CSV or JSON (full float precision)."""
    if fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
    elif fmt == "json":
        from .plan import frame_json

        click.echo(frame_json(df))
    else:
        click.echo(df.to_string(index=False) if len(df) else "(no rows)")


@main.command()
@verbosity
@click.pass_obj
@handle_errors
def steps(obj: Context) -> None:
    """List the steps with inputs, outputs and transform keys."""
    _table(["step", "inputs", "outputs", "transform keys"],
           [[p.name, ", ".join(p.inputs), ", ".join(p.outputs),
             ", ".join(p.transform_keys) or "(whole table)"] for p in obj.app.step_plan()])


@main.command()
@verbosity
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
@verbosity
@click.argument("step", required=False, metavar="[STEP]")
@click.option("--all", "everything", is_flag=True,
              help="Start a fresh metadata index (the old one is kept aside).")
@click.pass_obj
@handle_errors
def reset(obj: Context, step: str | None, everything: bool) -> None:
    """Make STEP recompute every key on the next run; or, with --all, start a fresh index.

    STEP may select several steps as `run --step` does (STEP+, +STEP).

    \b
    Examples:
      filepipe reset customer_totals   # it recomputes everything next run
      filepipe reset price_orders+     # price_orders and every step below it
      filepipe reset --all      # the index is damaged or lost track: rebuild it from the files
    """
    if bool(step) == everything:
        raise click.UsageError("give a STEP, or --all")
    app = obj.app
    with app.lock(wait=0):
        if everything:
            kept = app.reset_index()
            where = f"; the old one is kept as {kept}" if kept else ""
            if not obj.quiet:
                    click.echo(f"Started a fresh metadata index{where}. The next `filepipe run` "
                           "rebuilds it from the files and makes every output equal a fresh "
                           "recompute.")
            return
        assert step is not None  # checked above: a STEP or --all
        names = app.reset(step)
    if not obj.quiet:
        click.echo(f"{', '.join(names)}: every key will be recomputed by the next `filepipe run`")


@main.command()
@verbosity
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.pass_obj
def init(obj: Context, directory: str) -> None:
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
    if obj.quiet:
        return
    for path in created:
        click.echo(f"created {path}")
    click.echo(f"\nNext: cd {directory} && filepipe run")


# --- versions ---------------------------------------------------------------------------

FORMATS = click.Choice(["text", "csv", "json"])


@main.command()
@verbosity
@click.option("--table", metavar="T", help="Only versions that changed this table.")
@click.option("--limit", type=int, default=20, show_default=True, help="Versions to show (0: all).")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
@handle_errors
def log(obj: Context, table: str | None, limit: int, fmt: str) -> None:
    """List the versions (runs that changed something), newest first.

    \b
    Examples:
      filepipe log
      filepipe log --table customers --limit 5
      filepipe log --format json
    """
    import pandas as pd

    from . import versions

    found = versions.log(obj.app.ds, table=table, limit=limit or None)
    if fmt == "json":
        import json

        click.echo(json.dumps([v.as_dict() for v in found], ensure_ascii=False))
        return
    rows = [[v.run_id, _when(v.finished) if v.finished else "interrupted", v.trigger,
             _counts(v.tables), v.failed or "", ", ".join(v.tags)] for v in found]
    if fmt == "csv":
        click.echo(pd.DataFrame(rows, columns=["version", "finished", "trigger", "changes", "failed",
                                               "tags"]).to_csv(index=False), nl=False)
    elif rows:
        _table(["version", "finished", "trigger", "changes", "failed", "tags"], rows)
    else:
        click.echo("no versions yet: `filepipe run` makes the first")


def _counts(tables: dict[str, dict[str, int]]) -> str:
    parts = []
    for name, c in tables.items():
        bits = [f"{sign}{c[k]}" for sign, k in (("+", "added"), ("~", "updated"), ("-", "deleted")) if c.get(k)]
        if bits:
            parts.append(f"{name} {' '.join(bits)}")
    return "; ".join(parts) or "-"


@main.command()
@verbosity
@click.argument("tables", nargs=-1, metavar="[TABLE]...")
@click.option("--run", "run_id", type=int, metavar="ID", help="The changes of this version.")
@click.option("--from", "from_ref", metavar="REF", help="From this version (run id, tag or time).")
@click.option("--to", "to_ref", metavar="REF", help="To this version (default: now).")
@click.option("--xlsx", "xlsx", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the diff as a workbook (a summary sheet, then a sheet per table).")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
@handle_errors
def diff(obj: Context, tables: Sequence[str], run_id: int | None, from_ref: str | None,
         to_ref: str | None, xlsx: str | None, fmt: str) -> None:
    """Show rows added (+++), deleted (---) and changed (->) between two versions.

    Without TABLE, every table that changed. REF is a run id from `filepipe log`, a tag,
    or a time such as 2026-11-30 or 2026-11-30T14:00.

    \b
    Examples:
      filepipe diff customers --run 12
      filepipe diff --from 2026-11-30
      filepipe diff orders --from month-end --xlsx changes.xlsx
    """
    import json

    from . import versions

    if run_id is None and from_ref is None:
        raise click.UsageError("say which changes: --run ID, or --from REF [--to REF]")
    ds = obj.app.ds
    names = list(tables) or versions.changed_tables(ds, from_ref, to_ref, run_id)
    diffs = {t: versions.diff(ds, t, from_ref, to_ref, run=run_id) for t in names}
    if fmt == "json":
        from .plan import frame_json

        click.echo(json.dumps({t: json.loads(frame_json(d.to_frame())) for t, d in diffs.items()},
                              ensure_ascii=False))
    for t, d in diffs.items():
        if fmt == "csv":
            click.echo(d.to_frame().assign(table=t).to_csv(index=False), nl=False)
        elif fmt == "text":
            c = d.counts
            click.echo(f"# {t}: +{c.get('added', 0)} -{c.get('deleted', 0)} ~{c.get('changed', 0)}")
            click.echo(d.to_text() if not d.is_empty else "(no change)")
    if not diffs and fmt == "text":
        click.echo("no table changed")
    if xlsx:
        title = f"run {run_id}" if run_id is not None else f"{from_ref} → {to_ref or 'now'}"
        versions.change_workbook(ds, xlsx, diffs, title)
        if not obj.quiet:
            click.echo(f"diff written to {xlsx}", err=fmt != "text")


@main.command()
@verbosity
@click.argument("table")
@click.argument("key", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
@handle_errors
def history(obj: Context, table: str, key: Sequence[str], fmt: str) -> None:
    """Every version of one row of TABLE: when, which version, what changed; for an
    output row, also the input rows it was computed from.

    \b
    Examples:
      filepipe history prices sku=A-100
      filepipe history customers "customer=Chen Wei" --format json
    """
    from . import versions

    values = {}
    for pair in key:
        column, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE")
        values[column] = value
    app = obj.app
    found = versions.row_history(app.ds, table, values)
    if fmt != "text":
        _echo_frame(found, fmt)
        return
    if found.empty:
        click.echo("no version of that row")
        return
    _echo_frame(found, "text")
    if app.table(table).produced_by is None:
        return
    columns = [c for c in found.columns if c not in ("run", "time", "change", "changed")]
    for version in found[found["change"] != "deleted"].to_dict("records"):
        row = {**values, **{c: version[c] for c in columns}}
        for source, rows in app.row_sources(table, row, int(version["run"])).items():
            click.echo(f"\nversion {version['run']}: computed from {source} ({len(rows)} row(s))")
            _echo_frame(rows.head(20), "text")


@main.command()
@verbosity
@click.argument("name")
@click.option("-m", "--message", help="What the version is.")
@click.option("--at", "ref", metavar="REF", help="Tag this version instead of the current one.")
@click.pass_obj
@handle_errors
def tag(obj: Context, name: str, message: str | None, ref: str | None) -> None:
    """Name the current version (use the name as a REF later).

    \b
    Examples:
      filepipe tag month-end-2026-11 -m "sent to finance"
      filepipe show customers --as-of month-end-2026-11
    """
    from . import versions

    run_id = versions.tag(obj.app.ds, name, message, ref)
    if not obj.quiet:
        click.echo(f"tagged version {run_id} as {name}")


@main.command()
@verbosity
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
@handle_errors
def tags(obj: Context, fmt: str) -> None:
    """List the tags."""
    from . import versions

    found = versions.tags(obj.app.ds)
    if fmt != "text":
        _echo_frame(found, fmt)
    elif found.empty:
        click.echo("no tags: `filepipe tag NAME` makes one")
    else:
        _table(["tag", "version", "made", "message"],
               [[r.name, int(r.run_id), _when(r.created), r.message or ""]
                for r in found.itertuples()])


@main.command()
@verbosity
@click.argument("table")
@click.option("--to", "ref", required=True, metavar="REF", help="The version: run id, tag or time.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write it to this new file.")
@click.option("--in-place", is_flag=True,
              help="Write it back into the source's own file(s), after backing them up; then run.")
@click.pass_obj
@handle_errors
def restore(obj: Context, table: str, ref: str, output: str | None, in_place: bool) -> None:
    """Write TABLE as it was at a version: to a new file, or back into a source.

    \b
    Examples:
      filepipe restore customers --to month-end -o customers-month-end.xlsx
      filepipe restore prices --to 2026-11-30 --in-place
    """
    app = obj.app
    if bool(output) == in_place:
        raise click.UsageError("give one of -o FILE or --in-place")
    if output:
        app.restore(table, ref, output=output)
        if not obj.quiet:
            click.echo(f"{table} as of {ref} written to {output}")
        return
    progress = _Progress.on_terminal(obj)
    with app.lock(wait=0):
        backup = app.restore(table, ref, in_place=True)
        if not obj.quiet:
            click.echo(f"{table}: current files kept as {backup}; restored as of {ref}")
        try:
            report = app.run(report=_new_report("restore", progress))
        finally:
            if progress is not None:
                progress.close()
    _print_report(obj, app, report)
    if not report.ok:
        sys.exit(EXIT_FAILED)


@main.command()
@verbosity
@click.option("--keep-runs", type=int, metavar="N", help="Keep every state of the last N versions.")
@click.option("--keep-days", type=float, metavar="D", help="Keep every state of the last D days.")
@click.pass_obj
@handle_errors
def gc(obj: Context, keep_runs: int | None, keep_days: float | None) -> None:
    """Drop history older than that (tagged versions stay); current data is untouched.

    \b
    Examples:
      filepipe gc --keep-runs 100
      filepipe gc --keep-days 90
    """
    from . import versions

    app = obj.app
    with app.lock(wait=0):
        dropped = versions.gc(app.ds, keep_runs=keep_runs, keep_days=keep_days)
    total = sum(dropped.values())
    if not obj.quiet:
        click.echo(f"dropped {total} old row version(s)"
                   + (f" ({', '.join(f'{t}: {n}' for t, n in dropped.items() if n)})"
                      if total else ""))


# --- formatting -------------------------------------------------------------------------

@dataclass
class _Styled:
    """A table cell shown in a colour (on a terminal, unless NO_COLOR is set)."""

    value: Any
    fg: str

    def __str__(self) -> str:
        return str(self.value)


def _table(header: list[str], rows: list[list[Any]]) -> None:
    """A plain aligned text table (numbers right-aligned)."""
    if not rows:
        return
    plain = [[c.value if isinstance(c, _Styled) else c for c in r] for r in rows]
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in plain]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(isinstance(r[i], (int, float)) for r in plain) for i in range(len(header))]
    styles = [[None] * len(header)] + [[c.fg if isinstance(c, _Styled) else None for c in r]
                                       for r in rows]
    for n, (r, fgs) in enumerate(zip(cells, styles)):
        parts = []
        for i, (c, w) in enumerate(zip(r, widths)):
            pad = " " * (w - len(c))
            text = click.style(c, fg=fgs[i]) if fgs[i] else c
            parts.append(pad + text if numeric[i] and n else text + pad)
        click.echo("  ".join(parts).rstrip())


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
