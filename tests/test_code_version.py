"""The code version of a step covers the project code and constants it depends on (issue #8, 22).

Every test writes real modules to disk (a pipeline file and a local ``helpers.py``), imports
them as Python would, and compares the step's code version before and after one edit.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from filepipe.codeversion import code_version

ROOT = Path(__file__).resolve().parents[1]

PIPELINE = """
    import functools

    import pandas as pd

    import helpers
    from helpers import scale

    FACTOR = 2
    LABELS = {"b": (1, 2.5), "a": frozenset({"x", "y", "z"}), "c": {"p", "q"}}


    def local_helper(x):
        return x + 1


    def unrelated(x):
        # a note
        return x - 1


    def step(df, offset=helpers.OFFSET):
        total = scale(local_helper(df)) * FACTOR + helpers.RATE + offset
        return pd.concat([total]) if LABELS else total


    def make(rate):
        def closed(df):
            return df * rate
        return closed


    closed = make(5)


    class Pricer:
        def price(self, x):
            return x * 2


    def priced(df):
        return Pricer().price(df)


    @functools.lru_cache(maxsize=None)
    def cached_rate(n):
        return n * 7


    def uses_cached(df):
        return df * cached_rate(1)


    def imports_inside(df):
        from helpers import scale as sc
        return sc(df)


    def imports_module(df):
        import helpers as h
        return df * h.RATE


    TABLE = pd.DataFrame({"k": [1, 2], "v": ["a", "b"]})
    WEIGHTS = pd.Series([0.5, 0.5]).to_numpy()


    def lookup(df):
        return df.merge(TABLE) * WEIGHTS


    def even(n):
        return n == 0 or odd(n - 1)


    def odd(n):
        return n != 0 and even(n - 1)
"""

HELPERS = """
    RATE = 10
    OFFSET = 0
    BASE = 3


    def scale(x):
        return x * BASE


    def other(x):
        return x
"""


@pytest.fixture
def load_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., ModuleType]:
    """Write a project to a fresh folder and import it: every ``*.py`` but the pipeline under
    its own name (as ``import helpers`` would), then ``pipeline.py`` under a unique name."""
    counter = itertools.count()

    def load(pipeline: str = PIPELINE, modules: dict[str, str] | None = None) -> ModuleType:
        folder = tmp_path / f"v{next(counter)}"
        sources = {"helpers.py": HELPERS, **(modules or {})}
        for relative, text in {**sources, "pipeline.py": pipeline}.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_text(textwrap.dedent(text))
        for relative in sources:
            import_file(folder / relative, Path(relative).stem)
        return import_file(folder / "pipeline.py", f"pipeline_{folder.name}")

    def import_file(path: Path, name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load


def versions(module: ModuleType) -> dict[str, str]:
    names = ["step", "closed", "priced", "uses_cached", "imports_inside", "imports_module",
             "lookup", "even", "unrelated"]
    return {name: code_version(getattr(module, name)) for name in names}


@pytest.mark.parametrize(
    ("edit", "changed"),
    [
        # a helper's body: in the same file, then in a local module
        ({"pipeline": ("return x + 1", "return x + 2")}, {"step"}),
        ({"helpers": ("return x * BASE", "return BASE * x")}, {"step", "imports_inside"}),
        # module constants: read by the function, by a helper, through `helpers.RATE`
        ({"pipeline": ("FACTOR = 2", "FACTOR = 3")}, {"step"}),
        ({"helpers": ("BASE = 3", "BASE = 4")}, {"step", "imports_inside"}),
        ({"helpers": ("RATE = 10", "RATE = 11")}, {"step", "imports_module"}),
        ({"pipeline": ('"c": {"p", "q"}', '"c": {"p", "r"}')}, {"step"}),
        # module-level data: a DataFrame, a numpy array
        ({"pipeline": ('"v": ["a", "b"]', '"v": ["a", "c"]')}, {"lookup"}),
        ({"pipeline": ("[0.5, 0.5]", "[0.5, 0.25]")}, {"lookup"}),
        # a default argument's value (the step's source text is unchanged)
        ({"helpers": ("OFFSET = 0", "OFFSET = 1")}, {"step"}),
        # a closure variable (the inner function's source text is unchanged)
        ({"pipeline": ("make(5)", "make(6)")}, {"closed"}),
        # a method of a project class, a helper behind a decorator, one side of a recursion
        ({"pipeline": ("return x * 2", "return x * 3")}, {"priced"}),
        ({"pipeline": ("return n * 7", "return n * 8")}, {"uses_cached"}),
        ({"pipeline": ("return n != 0 and", "return n > 0 and")}, {"even"}),
        # not a dependency of any of them: nothing changes
        ({"pipeline": ("return x - 1", "return x - 2")}, {"unrelated"}),
        ({"pipeline": ("# a note", "# another note")}, {"unrelated"}),
        ({"helpers": ("return x\n", "return -x\n")}, set()),
    ],
    ids=["local-helper", "module-helper", "constant", "helper-constant", "helpers.RATE",
         "set-constant", "dataframe", "array", "default", "closure", "class-method", "decorated-helper", "recursion",
         "unrelated-function", "unrelated-comment", "unrelated-module-function"],
)
def test_a_step_version_follows_exactly_the_code_it_depends_on(
    load_project: Callable[..., ModuleType], edit: dict[str, tuple[str, str]], changed: set[str]
) -> None:
    before = versions(load_project())
    sources = {"pipeline": PIPELINE, "helpers": HELPERS}
    for name, (old, new) in edit.items():
        assert old in sources[name]
        sources[name] = sources[name].replace(old, new)
    after = versions(load_project(sources["pipeline"], {"helpers.py": sources["helpers"]}))
    assert {name for name in before if before[name] != after[name]} == changed


def test_a_library_outside_the_project_counts_by_name_only(
    load_project: Callable[..., ModuleType],
) -> None:
    library = """
        LIMIT = 5


        def clip(x):
            return min(x, LIMIT)
    """
    pipeline = """
        import fakelib


        def step(df):
            return fakelib.clip(df)
    """
    first = load_project(pipeline, {"site-packages/fakelib.py": library})
    second = load_project(pipeline, {"site-packages/fakelib.py": library.replace("5", "6")})
    assert first.fakelib.__file__ != second.fakelib.__file__
    assert "site-packages" in Path(second.fakelib.__file__).parts
    assert code_version(first.step) == code_version(second.step)
    renamed = load_project(pipeline.replace("fakelib.clip", "fakelib.clamp"),
                           {"site-packages/fakelib.py": textwrap.dedent(library) + "\nclamp = clip\n"})
    assert code_version(renamed.step) != code_version(first.step)


def test_objects_without_a_canonical_value_count_by_type(
    load_project: Callable[..., ModuleType],
) -> None:
    pipeline = """
        import threading

        LOCK = threading.Lock()
        TABLE = {1: object()}


        def step(df):
            with LOCK:
                return df * len(TABLE)
    """
    first, second = load_project(pipeline), load_project(pipeline)
    assert code_version(first.step) == code_version(second.step)  # no address in the digest
    assert code_version(first.step) != code_version(
        load_project(pipeline.replace("{1: object()}", "{1: object(), 2: object()}")).step)


E2E_PIPELINE = """
    import collections
    import dataclasses
    import datetime
    import decimal
    import enum
    import re
    import threading

    import pandas as pd

    import helpers
    from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
    from filepipe.stores import TableStoreCSV


    class Color(enum.Enum):
        RED = 1
        BLUE = "b"


    @dataclasses.dataclass(frozen=True)
    class Settings:
        rate: float = 0.5
        tags: frozenset = frozenset({"a", "b", "c", "d"})


    Point = collections.namedtuple("Point", "x y")
    CONSTANTS = {
        "color": Color.RED, "settings": Settings(), "point": Point(1, 2.5),
        "when": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
        "price": decimal.Decimal("1.10"), "pattern": re.compile(r"[0-9]+"),
        "lock": threading.Lock(), "words": {"alpha", "beta", "gamma", "delta"},
        ("tuple", "key"): [None, True, float("nan"), b"raw"],
        "frame": pd.DataFrame({"k": ["x", "y"], "v": [1.5, None]}).set_index("k"),
    }


    def price(orders):
        out = orders[["order_id"]].copy()
        out["amount"] = helpers.amount(orders["qty"])
        return out


    def check(orders):
        return orders[["order_id"]] if CONSTANTS and Settings().rate else orders


    catalog = Catalog({
        "orders": Table(TableStoreCSV("orders.csv", primary_keys=["order_id"])),
        "priced": Table(TableStoreCSV("out/priced.csv", primary_keys=["order_id"])),
        "checked": Table(TableStoreCSV("out/checked.csv", primary_keys=["order_id"])),
    })
    app = FilepipeApp(catalog, Pipeline([
        BatchTransform(price, inputs=["orders"], outputs=["priced"]),
        BatchTransform(check, inputs=["orders"], outputs=["checked"]),
    ]))
"""

E2E_HELPERS = """
    RATE = 2


    def amount(qty):
        return qty * RATE
"""


def write_e2e_project(folder: Path) -> None:
    folder.mkdir()
    (folder / "pipeline.py").write_text(textwrap.dedent(E2E_PIPELINE))
    (folder / "helpers.py").write_text(textwrap.dedent(E2E_HELPERS))
    pd.DataFrame({"order_id": [1, 2, 3], "qty": [1, 2, 5]}).to_csv(folder / "orders.csv",
                                                                   index=False)


def run_python(code: str, cwd: Path, seed: str = "0") -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_code_versions_are_the_same_in_every_process(tmp_path: Path) -> None:
    write_e2e_project(tmp_path / "project")
    script = f"""
        from filepipe.app import load_app
        app = load_app({str(tmp_path / "project" / "pipeline.py")!r})
        print(*[s.code_version for s in app.steps])
    """
    first, second = (run_python(script, ROOT, seed) for seed in ("1", "2"))
    assert first == second
    assert len(set(first.split())) == 2


def test_a_changed_helper_constant_recomputes_every_key(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_e2e_project(project)
    run = """
        from filepipe.app import load_app
        load_app("pipeline.py").run()
    """
    run_python(run, project)
    priced = pd.read_csv(project / "out" / "priced.csv").sort_values("order_id")
    assert priced["amount"].tolist() == [2, 4, 10]

    helpers = project / "helpers.py"
    helpers.write_text(helpers.read_text().replace("RATE = 2", "RATE = 3"))
    pd.DataFrame({"order_id": [1, 2, 3], "qty": [1, 2, 6]}).to_csv(project / "orders.csv",
                                                                   index=False)
    run_python(run, project)
    priced = pd.read_csv(project / "out" / "priced.csv").sort_values("order_id")
    assert priced["amount"].tolist() == [3, 6, 18]  # new logic for every row, not only order 3


def test_relative_imports_inside_a_package_are_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = """
        def step(df):
            from . import helpers
            from .rates import RATE as rate
            return df * helpers.BASE + rate
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    packages = {"cvpkg_a": ("1", "1"), "cvpkg_b": ("1", "1"), "cvpkg_c": ("2", "1"),
                "cvpkg_d": ("1", "2")}
    try:
        found = {}
        for name, (base, rate) in packages.items():
            (tmp_path / name).mkdir()
            (tmp_path / name / "__init__.py").write_text("")
            (tmp_path / name / "helpers.py").write_text(f"BASE = {base}\n")
            (tmp_path / name / "rates.py").write_text(f"RATE = {rate}\n")
            (tmp_path / name / "pipe.py").write_text(textwrap.dedent(step))
            found[name] = code_version(importlib.import_module(f"{name}.pipe").step)
    finally:
        for name in [n for n in sys.modules if n.startswith("cvpkg_")]:
            del sys.modules[name]
    assert found["cvpkg_a"] == found["cvpkg_b"]
    assert len({found["cvpkg_a"], found["cvpkg_c"], found["cvpkg_d"]}) == 3


def test_a_long_chain_of_helpers_is_walked_without_deep_recursion(
    load_project: Callable[..., ModuleType],
) -> None:
    chain = "".join(f"\n\ndef link_{i}(x):\n    return link_{i + 1}(x) + 1\n" for i in range(1500))
    last = "\n\ndef link_1500(x):\n    return x * helpers.RATE\n"
    first = load_project("import helpers\n" + chain + last)
    second = load_project("import helpers\n" + chain + last,
                          {"helpers.py": HELPERS.replace("RATE = 10", "RATE = 11")})
    assert code_version(first.link_0) != code_version(second.link_0)


def test_dozens_of_steps_get_their_versions_fast(load_project: Callable[..., ModuleType]) -> None:
    steps = "".join(
        f"\n\ndef step_{i}(df):\n    return helpers.scale(df) * FACTOR + {i} + ring_{(i + 1) % 60}(df)\n"
        f"\n\ndef ring_{i}(df):\n    return step_{i}(df) if df is None else df\n"
        for i in range(60)
    )
    module = load_project("import helpers\n\nFACTOR = {'a': list(range(100))}\n" + steps)
    started = time.perf_counter()
    found = {code_version(getattr(module, f"step_{i}"), {"i": i}) for i in range(60)}
    elapsed = time.perf_counter() - started
    assert len(found) == 60
    assert elapsed < 0.5, f"60 code versions took {elapsed:.2f} s"
