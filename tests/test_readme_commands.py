"""The README and the `--help` texts tell the truth (issue #11, section 4).

* Every `filepipe ...` command of README.md (its bash blocks, the commands named in their
  comments, and the ones in its prose) and of the "Examples:" of every `--help` text is
  extracted, not copied, and run as written against the bundled example it is about:
  `examples/sales` (commands without `-p` run in its folder; `-p examples/...` from the
  folder holding `examples/`), or the project `filepipe init` makes. It must exit 0 and,
  when it shows rows (`show`, `history`, `log`, `diff`), show some: a command naming a
  table, step, tag or value the example does not have answers "nothing" and fails here.
  Each command gets its own copy of a prepared project: the example run 12 times (a
  version each), tagged `month-end` at version 6, with orders and a price edited between
  the runs (`diff --run 12`, `--from month-end`, `history prices sku=A-100` and
  `restore ... --to month-end` then have something to show).
* Special cases, none skipped silently:
  - `pip install -e '.[dev]' && filepipe ...`: only the filepipe half runs; this test runs
    in that installed environment, and installing again would reach the network.
  - `python3 -m venv ...` and `pytest` (the set-up block) are not filepipe commands:
    `test_set_up_is_a_virtual_environment_then_two_commands` checks the block's shape,
    and `pytest` is what runs this file.
  - `filepipe watch ...` runs until Ctrl-C: a bounded variant starts it as a process, waits
    for its startup cycle, edits an order file, waits for the cycle that syncs it, sends
    SIGINT and expects exit 0.
  - `tag NAME ...` runs on the project before it has the tag `month-end` (a tag names one
    version); a command using a tag made by a `filepipe tag` before it in the same help
    text runs after that tag command.
  - Lines with `|`, `>` or `cd DIR &&` run in bash as written (`cd myproject && ...` after
    the README's `filepipe init myproject`). `... | dot -Tpng` needs Graphviz: without
    `dot` the test says so and skips (`.ci/run` installs it).
  - Destructive commands (`reset --all`, `restore ... --in-place`, `run --full`) run in
    their own copy like all others; `reset --all` is followed by the run it announces.
* Commands known to be wrong (`KNOWN_WRONG`: they name a table or step examples/sales does
  not have) are strict xfails: when one is fixed the test XPASSes and its entry must go
  (`test_known_wrong_commands_still_exist` fails for entries whose text is gone).
* The install: runtime dependencies are exactly the third-party packages `filepipe/`
  imports, but for those an extra installs for its feature (`dask`); the `api` extra
  installs what examples/seed_events needs for the command its docstring gives, and that
  command serves the API (a bounded run of uvicorn).
* The sales example formats its report's money columns (`formats=`), and the README shows
  the picture of that report, docs/report.png (made by examples/sales/report_png.sh).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli_apps import close_apps, explain, recording_loaded_apps
from click.testing import CliRunner, Result

from filepipe.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"
SALES = EXAMPLES / "sales"
SEED = EXAMPLES / "seed_events" / "pipeline.py"
BIN = Path(sys.executable).parent

# command as written → why it fails (and the fix); see the module docstring
KNOWN_WRONG: dict[str, str] = {}

MONEY = "#,##0.00"


# --- the commands ------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    text: str                                     # as written, its comment cut
    where: str                                    # README.md, or `filepipe X --help`
    before: tuple[str, ...] = field(default=())   # the commands before it in its block

    @property
    def args(self) -> list[str]:
        """The arguments after `filepipe` (of the filepipe part of an `a && filepipe ...` line)."""
        words = shlex.split(self.text)
        return words[len(words) - words[::-1].index("filepipe"):]

    @property
    def shell(self) -> bool:
        """Needs a shell: a pipe, a redirection or a `cd`."""
        return bool(re.search(r"[|>]|^cd ", self.text))


_FILEPIPE_LINE = re.compile(r"(^|&&\s*)filepipe\s")
_COMMENT = re.compile(r"\s+#\s.*$")
_SPAN = re.compile(r"`([^`\n]+)`")


def _filepipe_spans(text: str) -> list[str]:
    return [s.strip() for s in _SPAN.findall(text) if _FILEPIPE_LINE.search(s.strip())]


def readme_commands(text: str | None = None) -> list[Command]:
    """The `filepipe` commands of README.md, in order of appearance, each once."""
    text = README.read_text(encoding="utf-8") if text is None else text
    found: list[Command] = []
    prose = text
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S):
        prose = prose.replace(body, "\n")
        if lang not in ("bash", "sh", "shell", "console", ""):
            continue
        block: list[str] = []
        for line in body.splitlines():
            line = line.strip()
            command = _COMMENT.sub("", line)
            comment = line[len(command):]
            for cmd in ([command] if _FILEPIPE_LINE.search(command) else []) + _filepipe_spans(comment):
                found.append(Command(cmd, "README.md", tuple(block)))
                block.append(cmd)
    found += [Command(s, "README.md") for s in _filepipe_spans(prose)]
    seen: set[str] = set()
    return [c for c in found if not (c.text in seen or seen.add(c.text))]


def help_commands() -> list[Command]:
    """The example commands of `filepipe --help` and of each `filepipe COMMAND --help`."""
    texts = [("filepipe --help", main.help or "")]
    texts += [(f"filepipe {name} --help", cmd.help or "") for name, cmd in sorted(main.commands.items())]
    found = []
    for where, text in texts:
        block: list[str] = []
        for line in text.splitlines():
            # `filepipe run              one-shot sync: ...`: two spaces start a description
            command = _COMMENT.sub("", re.split(r"\s{2,}", line.strip())[0])
            if command.startswith("filepipe "):
                found.append(Command(command, where, tuple(block)))
                block.append(command)
    return found


def all_commands() -> list[Command]:
    seen: set[str] = set()
    return [c for c in readme_commands() + help_commands() if not (c.text in seen or seen.add(c.text))]


def _params() -> list:
    return [pytest.param(c, id=f"{c.where}: {c.text}",
                         marks=[pytest.mark.xfail(strict=True, reason=KNOWN_WRONG[c.text])]
                         if c.text in KNOWN_WRONG else [])
            for c in all_commands()]


# --- running them ------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies of pipeline.py come and go at one path: no stale __pycache__ entry for them."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


@pytest.fixture(autouse=True, scope="module")
def _record_loaded_apps() -> Iterator[None]:
    """Close the index after each command (as the end of a process would): a project is
    then copied, or replaced, with nothing open in it."""
    with recording_loaded_apps():
        yield


def invoke(args: list[str], cwd: Path, what: str | None = None) -> Result:
    """`filepipe ARGS` in-process in `cwd`, asserting exit code 0."""
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(main, args)
    finally:
        os.chdir(old)
        close_apps()
    assert result.exit_code == 0, explain(result, what or " ".join(["filepipe", *args]))
    return result


def bash(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`command` as written, in bash, with this environment's `filepipe` first on PATH."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, (f"`{command}` in {cwd}: exit {proc.returncode}\n--- stdout\n"
                                  f"{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def filepipe_exe() -> list[str]:
    beside = BIN / "filepipe"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-c", "from filepipe.cli import main; main()"]


def age(root: Path, seconds: float = 10.0) -> None:
    """Files older than the 2 s "racy" window: a later sync trusts their fingerprints."""
    for p in [root] if root.is_file() else root.rglob("*"):
        if p.is_file():
            st = p.stat()
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def edit_order(project: Path, shop: str, order_id: str, **fields: object) -> None:
    path = project / "inbox" / shop / f"{order_id}.json"
    order = json.loads(path.read_text(encoding="utf-8"))
    order.update(fields)
    path.write_text(json.dumps(order, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    age(path)


def set_price(project: Path, sku: str, price: float) -> None:
    import openpyxl

    path = project / "prices.xlsx"
    book = openpyxl.load_workbook(path)
    sheet = book["Prices"]
    header = [c.value for c in sheet[1]]
    for row in sheet.iter_rows(min_row=2):
        if row[header.index("sku")].value == sku:
            row[header.index("unit_price")].value = price
    book.save(path)
    age(path)


def copy_sales(dest: Path) -> Path:
    shutil.copytree(SALES, dest, ignore=shutil.ignore_patterns("out", ".filepipe", "__pycache__", "~$*",
                                                               ".~lock*", "*.sh"))
    age(dest)
    return dest


class Projects:
    """Prepared states of examples/sales, each kept aside as a template.

    The metadata index records the files' absolute paths, so a state is always restored at
    the same place: `work/examples/sales` (and `-p examples/sales/pipeline.py` works from
    `work`)."""

    STATES = ("fresh", "untagged", "history")

    def __init__(self, base: Path) -> None:
        self.base = base
        self.work = base / "work"
        self.project = self.work / "examples" / "sales"
        copy_sales(self.project)
        self._keep("fresh")
        invoke(["run"], self.project)                                   # version 1
        orders = [("berlin", "1003"), ("lisbon", "1001"), ("online", "1002"),
                  ("berlin", "1006"), ("lisbon", "1004"), ("online", "1005"),
                  ("berlin", "1009"), ("lisbon", "1007"), ("online", "1008"),
                  ("berlin", "1012"), ("lisbon", "1010")]
        for n, (shop, order_id) in enumerate(orders, start=2):          # versions 2..12
            if n == 7:
                self._keep("untagged")
                invoke(["tag", "month-end", "-m", "sent to finance"], self.project)
            if n == 9:
                set_price(self.project, "A-100", 19.25)
            edit_order(self.project, shop, order_id, qty=n % 5 + 1, customer="Chen Wei")
            invoke(["run"], self.project)
        log = invoke(["log", "--format", "json"], self.project).stdout
        assert max(v["run_id"] for v in json.loads(log)) == 12, log
        self._keep("history")

    def _keep(self, state: str) -> None:
        shutil.copytree(self.work, self.base / state, symlinks=True)

    def restore(self, state: str) -> Path:
        """`work` as it was in `state`; returns the project folder."""
        assert state in self.STATES
        if self.work.exists():
            shutil.rmtree(self.work)
        shutil.copytree(self.base / state, self.work, symlinks=True)
        return self.project


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> Projects:
    return Projects(tmp_path_factory.mktemp("readme-commands"))


_EMPTY_ANSWERS = ("(no rows)", "no version of that row", "no versions yet", "no table changed",
                  "no tags:")


def answers_nothing(args: list[str], stdout: str) -> bool:
    """The command ran but found nothing to show: it names something the example lacks."""
    if not args or args[0] not in ("show", "history", "log", "diff", "tags"):
        return False
    out = stdout.strip()
    if re.search(r"^0 row\(s\) written", out, flags=re.M):
        return True
    if out in ("", "[]", "{}") or any(a in out for a in _EMPTY_ANSWERS):
        return True
    if "csv" in args and args[0] == "show":  # a header and no row
        return len(out.splitlines()) < 2
    return False


def written_files(cmd: Command) -> list[str]:
    """The files the command says it writes (`-o F`, `--xlsx F`, `--report F`, `> F`)."""
    words = shlex.split(cmd.text)
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-o", "--output", "--xlsx", "--report", ">")]


def run_watch(args: list[str], project: Path) -> str:
    """A bounded `filepipe watch`: startup cycle, one edited order synced, then SIGINT."""
    edit_order(project, "berlin", "1015", qty=4)  # the startup cycle has work to log
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([*filepipe_exe(), *args], cwd=project, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()

    def wait_for(pattern: str, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                assert proc.poll() is None, "watch ended early:\n" + "".join(log)
                continue
            log.append(line)
            if re.search(pattern, line):
                return
        raise AssertionError(f"no line matching {pattern!r} in {timeout:g} s:\n" + "".join(log))

    try:
        wait_for(r"startup")
        time.sleep(0.5)
        edit_order(project, "lisbon", "1013", qty=5, customer="Lena Vogel")
        wait_for(r"orders")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.1)
    while not lines.empty():
        log.append(lines.get())
    assert code == 0, f"`filepipe {' '.join(args)}` exit {code}:\n" + "".join(log)
    return "".join(log)


@pytest.mark.parametrize("cmd", _params())
def test_command_runs_as_written(cmd: Command, projects: Projects, tmp_path: Path) -> None:
    args = cmd.args
    if args[:1] == ["init"] or cmd.text.startswith("cd "):
        # the project `filepipe init DIR` makes (`cd DIR && ...` runs after that init)
        target = re.match(r"cd (\S+) &&", cmd.text)
        if target:
            invoke(["init", target.group(1)], tmp_path)
            age(tmp_path / target.group(1))
            bash(cmd.text, tmp_path)
        else:
            invoke(args, tmp_path, cmd.text)
            assert (tmp_path / args[1] / "pipeline.py").is_file()
        return

    if cmd.text.startswith("pip install"):
        # only the filepipe half: this environment is that install (see the module docstring)
        work = projects.restore("fresh").parent.parent
        result = invoke(args, work, cmd.text)
        assert (work / "examples" / "sales" / "out" / "report.xlsx").is_file(), result.stdout
        return

    project = projects.restore("untagged" if args[:1] == ["tag"] else "history")
    cwd = projects.work if args[:1] == ["-p"] else project
    if args[:1] == ["watch"]:
        run_watch(args, project)
        return
    if args[:2] == ["status", "--check"]:
        # the copy gave every file a new inode, which status reports as changed until a run
        # has looked at them (a copied project is "not checked yet"): the user's state is
        # the one after their last run
        invoke(["run", "-q"], cwd)
    for earlier in cmd.before:  # a tag this command uses, made by the text before it
        if Command(earlier, cmd.where).args[:1] == ["tag"]:
            invoke(Command(earlier, cmd.where).args, cwd, earlier)
    if cmd.shell:
        if "dot -T" in cmd.text and shutil.which("dot") is None:
            invoke(args[:args.index("|")] if "|" in args else args, cwd, cmd.text)
            pytest.skip("Graphviz `dot` is not installed: only the filepipe half of "
                        f"`{cmd.text}` ran (apt-get install graphviz)")
        stdout = bash(cmd.text, cwd).stdout
    else:
        stdout = invoke(args, cwd, cmd.text).stdout
    assert not answers_nothing(args, stdout), f"`{cmd.text}` shows nothing:\n{stdout}"
    for name in written_files(cmd):
        path = cwd / name
        assert path.is_file() and path.stat().st_size > 0, f"`{cmd.text}` did not write {name}"
    if args == ["reset", "--all"]:  # "rebuild one from the files": the next run does
        invoke(["run"], cwd, "filepipe run (after reset --all)")


def test_commands_are_found() -> None:
    """The extraction finds the commands of each place (a change of layout must not empty it)."""
    readme = [c.text for c in readme_commands()]
    helps = [c.text for c in help_commands()]
    for expected in ("pip install -e '.[dev]' && filepipe -p examples/sales/pipeline.py run",
                     "filepipe watch", "filepipe reset --all", "filepipe gc --keep-runs 100",
                     "filepipe tags", "filepipe init myproject", "cd myproject && filepipe run",
                     'filepipe tag month-end -m "sent to finance"'):
        assert expected in readme, readme
    assert len(readme) >= 25, readme
    for expected in ("filepipe run", "filepipe run --dry-run", "filepipe watch --poll --debounce 2",
                     "filepipe graph --format dot | dot -Tpng > pipeline.png", "filepipe gc --keep-days 90"):
        assert expected in helps, helps
    assert {c.where for c in help_commands()} >= {f"filepipe {n} --help" for n in
                                                   ("run", "watch", "show", "graph", "reset", "log", "diff",
                                                    "history", "tag", "restore", "gc")}


def test_known_wrong_commands_still_exist() -> None:
    """An entry of KNOWN_WRONG whose command is no longer written anywhere must go."""
    texts = {c.text for c in all_commands()}
    gone = sorted(set(KNOWN_WRONG) - texts)
    assert not gone, f"these commands were fixed or removed: delete their KNOWN_WRONG entries: {gone}"


def test_set_up_is_a_virtual_environment_then_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Set up"):]
    section = section[:section.index("\n## ", 1)]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block, section
    lines = [_COMMENT.sub("", line).strip() for line in block.group(1).splitlines() if line.strip()]
    assert lines == ["python3 -m venv .venv && . .venv/bin/activate",
                     "pip install -e '.[dev]' && filepipe -p examples/sales/pipeline.py run",
                     "pytest"], lines


# --- the install -------------------------------------------------------------------------

def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    assert match, req
    return _norm(match.group(1))


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def third_party_imports(paths: list[Path], own: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level names imported at run time (not under `if TYPE_CHECKING:`), outside the
    standard library and `own` → the files importing them."""
    found: dict[str, set[str]] = {}

    def visit(node: ast.AST, path: Path) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, path)
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in own:
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
        for child in ast.iter_child_nodes(node):
            visit(child, path)

    for path in paths:
        visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), path)
    return found


def _import_names() -> dict[str, set[str]]:
    """Installed distribution (normalised name) → the top-level names it provides."""
    provides: dict[str, set[str]] = {}
    for name, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            provides.setdefault(_norm(dist), set()).add(name)
    return provides


def test_runtime_dependencies_are_what_filepipe_imports() -> None:
    project = _pyproject()["project"]
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    imported = third_party_imports(sorted((ROOT / "filepipe").rglob("*.py")), own=("filepipe",))
    provides = _import_names()
    missing_dists = sorted(d for d in runtime if d not in provides)
    assert not missing_dists, f"runtime dependencies not installed here: {missing_dists}"
    # an extra users install for a feature (`dask`) may provide what that feature imports
    optional = {_requirement_name(r) for name, reqs in project["optional-dependencies"].items()
                if name != "dev" for r in reqs}
    by_module = {m: {d for d, names in provides.items() if m in names} for m in imported}
    undeclared = {m: sorted(by_module[m]) or "not installed" for m in imported
                  if not by_module[m] & (runtime | optional)}
    assert not undeclared, (f"filepipe/ imports these, but neither [project] dependencies nor an "
                            f"extra list their distribution: {undeclared} (imported in "
                            f"{ {m: sorted(imported[m]) for m in undeclared} })")
    unused = sorted(d for d in runtime if not provides[d] & set(imported))
    assert not unused, (f"runtime dependencies that filepipe/ never imports: {unused}; "
                        "if only tests or examples use them, they belong in an extra (`dev`, `api`)")
    # openpyxl: only the tests write and read workbooks with it
    assert "openpyxl" not in runtime and "openpyxl" in {_requirement_name(r) for r in
                                                        project["optional-dependencies"]["dev"]}


def _seed_serve_command() -> str:
    doc = ast.get_docstring(ast.parse(SEED.read_text(encoding="utf-8"))) or ""
    commands = [c for c in re.findall(r"``([^`]+)``", doc) if c.startswith("uvicorn ")]
    assert len(commands) == 1, doc
    return commands[0]


def test_api_extra_installs_what_the_seed_example_needs() -> None:
    project = _pyproject()["project"]
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    api = {_requirement_name(r) for r in extras["api"]}
    dev = {_requirement_name(r) for r in extras["dev"]}
    command = _seed_serve_command()
    assert shlex.split(command)[0] in api, (command, api)
    provides = _import_names()
    imported = third_party_imports([SEED], own=("filepipe", "examples"))
    for module in imported:
        dists = {d for d, names in provides.items() if module in names}
        assert dists & (runtime | api), f"examples/seed_events imports {module}: the api extra must install it"
    assert api <= dev, "dev installs the api extra too (tests/test_seed.py serves it)"
    assert "httpx" in dev and "httpx" not in api  # only the tests' TestClient needs it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_seed_examples_serve_command_serves_the_api(tmp_path: Path) -> None:
    """The docstring's command, from a folder holding `examples/` (its store.sqlite goes
    there), with only a free port added; one POST, then Ctrl-C."""
    command = _seed_serve_command()
    if shutil.which("uvicorn", path=str(BIN)) is None and shutil.which("uvicorn") is None:
        pytest.skip("uvicorn is not installed (pip install -e '.[api]' installs it)")
    shutil.copytree(EXAMPLES / "seed_events", tmp_path / "examples" / "seed_events",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(EXAMPLES / "__init__.py", tmp_path / "examples" / "__init__.py")
    port = _free_port()
    words = shlex.split(command)
    uvicorn = shutil.which("uvicorn", path=str(BIN)) or shutil.which("uvicorn")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([uvicorn, *words[1:], "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = json.dumps({"user_id": 1, "event_id": 1,
                           "event": {"event_type": "click", "ip": "10.0.0.1"}}).encode()
        deadline = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/update-data", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 200
                    assert json.loads(response.read()) == {"result": "ok"}
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "uvicorn did not answer in 60 s"
                time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "store.sqlite").is_file()


# --- the report --------------------------------------------------------------------------

def test_the_sales_report_shows_money_with_two_decimals(projects: Projects) -> None:
    import openpyxl

    assert "formats=" in (SALES / "pipeline.py").read_text(encoding="utf-8")
    project = projects.restore("fresh")
    invoke(["run"], project)
    book = openpyxl.load_workbook(project / "out" / "report.xlsx")
    money = {"Orders": ["unit_price", "amount"], "Customers": ["revenue"], "Products": ["revenue"]}
    for sheet, columns in money.items():
        rows = list(book[sheet].iter_rows())
        header = [c.value for c in rows[0]]
        for column in columns:
            shown = {row[header.index(column)].number_format for row in rows[1:]}
            assert shown == {MONEY}, (sheet, column, shown)


def test_the_readme_shows_the_formatted_report() -> None:
    png = ROOT / "docs" / "report.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) < 200_000, len(data)
    text = README.read_text(encoding="utf-8")
    assert "](docs/report.png)" in text
    # near the example's description, in the set-up section
    set_up = text[text.index("## Set up"):text.index("\n## ", text.index("## Set up") + 1)]
    assert "](docs/report.png)" in set_up
    assert (SALES / "report_png.sh").is_file()
