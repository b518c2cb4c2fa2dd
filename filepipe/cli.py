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
@click.option("--report", "report_path", type=click.Path(dir_okay=False), metavar="FILE.xlsx",
              help="Write the run's changes as a workbook: a summary, then a sheet per table.")
@click.pass_obj
@handle_errors
def run(obj: Context, steps: Sequence[str], full: bool, dry_run: bool, allow_deletes: bool,
        report_path: str | None) -> None:
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
    if report_path:
        _write_run_workbook(app, report, report_path)
    if not report.ok:
        sys.exit(EXIT_FAILED)


def _write_run_workbook(app: FilepipeApp, report: RunReport, path: str) -> None:
    from . import versions

    diffs = {}
    if report.run_id is not None:
        diffs = {t: versions.diff(app.ds, t, run=report.run_id) for t in report.tables
                 if any(report.tables[t].values())}
    title = f"run {report.run_id}" if report.run_id is not None else "nothing changed"
    versions.change_workbook(app.ds, path, diffs, title)
    click.echo(f"changes written to {path}")


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
      filepipe show totals
      filepipe show orders --where customer=ACME --limit 0 --format csv
      filepipe show totals --as-of month-end --format xlsx -o totals-november.xlsx
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
        click.echo(df.to_json(orient="records", date_format="iso", force_ascii=False,
                              double_precision=15))
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


# --- versions ---------------------------------------------------------------------------

FORMATS = click.Choice(["text", "csv", "json"])


@main.command()
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
      filepipe log --table totals --limit 5
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
      filepipe diff totals --run 12
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
        click.echo(json.dumps({t: json.loads(d.to_frame().to_json(orient="records", date_format="iso",
                                                                  double_precision=15))
                               for t, d in diffs.items()}, ensure_ascii=False))
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
        click.echo(f"diff written to {xlsx}", err=fmt != "text")


@main.command()
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
      filepipe history totals customer=ACME --format json
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
      filepipe show totals --as-of month-end-2026-11
    """
    from . import versions

    run_id = versions.tag(obj.app.ds, name, message, ref)
    click.echo(f"tagged version {run_id} as {name}")


@main.command()
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
      filepipe restore totals --to month-end -o totals-month-end.xlsx
      filepipe restore prices --to 2026-11-30 --in-place
    """
    app = obj.app
    if bool(output) == in_place:
        raise click.UsageError("give one of -o FILE or --in-place")
    if output:
        app.restore(table, ref, output=output)
        click.echo(f"{table} as of {ref} written to {output}")
        return
    with app.lock(wait=0):
        backup = app.restore(table, ref, in_place=True)
        click.echo(f"{table}: current files kept as {backup}; restored as of {ref}")
        report = app.run(report=_new_report("restore"))
    _print_report(app, report)
    if not report.ok:
        sys.exit(EXIT_FAILED)


@main.command()
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
    click.echo(f"dropped {total} old row version(s)"
               + (f" ({', '.join(f'{t}: {n}' for t, n in dropped.items() if n)})" if total else ""))


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
