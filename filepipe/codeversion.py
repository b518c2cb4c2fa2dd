"""The code version of a step: a digest of its function, the project code it uses and its params.

Starting from the step's function, the digest folds in, recursively, every function and class
*of the user's project* the code reaches through the names it reads (globals, attribute
chains on project modules such as ``helpers.rate``, imports inside the body, closure cells,
default arguments), the canonical values of the constants it reads, and, for anything
outside the project (libraries, the standard library, filepipe), only its qualified name.
``docs/code-version.md`` lists exactly what is covered and what is not.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import dis
import enum
import fractions
import functools
import importlib
import importlib.util
import inspect
import math
import os
import pathlib
import re
import sys
import sysconfig
import textwrap
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import xxhash

__all__ = ["code_version"]

Read = tuple[str, ...]
"""A name the code reads and the attributes it takes from it: ``("g", "helpers", "rate")``.

The first item says where the name lives: ``g`` globals (then builtins), ``d`` a closure
cell, ``i`` a module imported inside the body (the name is then the module's, leading dots
for a relative import)."""

_LOADS = {"LOAD_GLOBAL": "g", "LOAD_NAME": "g", "LOAD_DEREF": "d", "LOAD_CLASSDEREF": "d"}
_ATTRIBUTES = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_STORES = frozenset({"STORE_FAST", "STORE_NAME", "STORE_DEREF"})
_PLAIN = (type(None), bool, int, float, complex, str, bytes)
_UNDEFINED = "<undefined>"

_analyses: weakref.WeakKeyDictionary[types.FunctionType, tuple[str, tuple[Read, ...]]] = (
    weakref.WeakKeyDictionary())
_versions: weakref.WeakKeyDictionary[types.FunctionType, str] = weakref.WeakKeyDictionary()
_class_sources: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()


def code_version(func: Callable, params: Mapping[str, Any] | None = None) -> str:
    """Stable hex digest (16 hex chars) of `func`, the project code it depends on, and `params`.

    `func` may be a function, a ``functools.partial`` (its function, args and keywords), a
    bound method or a callable instance (its class and its attributes). `params` (``None``
    counts as ``{}``) is canonicalised like a constant. The digest is the same in every
    process for the same code and values; it is computed once per function object.
    """
    digest = xxhash.xxh3_64()
    for part in (_dependencies(func), _Walk().text(dict(params or {}))):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _dependencies(func: Callable) -> str:
    """The canonical text of `func` and what it depends on (cached per function object)."""
    if type(func) is not types.FunctionType:
        return _Walk().text(func)
    text = _versions.get(func)
    if text is None:
        text = _versions[func] = _Walk().text(func)
    return text


class _Walk:
    """One traversal from a root value, breadth first.

    Project functions, classes and objects are ``#n`` in the text that refers to them, and
    described once as entry n, numbered in the order first met (names sorted): that bounds
    cycles (mutual recursion), needs no deep recursion, and keeps the text free of ids.
    """

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.queue: deque[tuple[int, Any, Callable[[Any], str]]] = deque()
        self.numbers: dict[int, int] = {}  # id(object) -> entry number
        self.texts: dict[int, str] = {}  # id(container) -> its text, once written
        self.alive: list[Any] = []  # what `numbers` and `texts` refer to, so ids stay unique
        self.open: set[int] = set()  # containers being written (one may hold itself)

    def text(self, root: Any) -> str:
        head = self.value(root)
        while self.queue:
            number, v, describe = self.queue.popleft()
            self.entries[number] = describe(v)
        return "\n".join([head, *self.entries])

    # --- values ---------------------------------------------------------------------
    def value(self, v: Any) -> str:
        """The canonical text of a value; project functions and classes are walked into."""
        kind = type(v)
        if kind in _PLAIN:
            return f"{kind.__name__}:{v!r}"
        if isinstance(v, enum.Enum):
            return f"{self.value(kind)}.{v.name}"
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(v, numpy.generic):
            return f"numpy.{v.dtype.str}:{v.item()!r}"
        if isinstance(v, (dt.date, dt.time)):  # datetime, pandas Timestamp and NaT too
            return f"{kind.__qualname__}:{v.isoformat()}:{getattr(v, 'tzinfo', None)}"
        if isinstance(v, (dt.timedelta, decimal.Decimal, fractions.Fraction, pathlib.PurePath)):
            return f"{kind.__qualname__}:{v}"
        if isinstance(v, (re.Pattern, range)):
            return repr(v)
        if isinstance(v, (tuple, list, set, frozenset, dict)):
            return self.container(v)
        if _is_data(v):
            return _data_text(v)
        if isinstance(v, types.FunctionType):
            return self.entry(v, self.function) if _is_project_function(v) else _name(v)
        if isinstance(v, type):
            return self.entry(v, self.klass) if _is_project_class(v) else _name(v)
        if isinstance(v, types.ModuleType):  # a project module's own name may be random
            file = _module_file(v) if _is_project_module(v) else None  # a project one has a file
            return f"module:{pathlib.Path(file).stem}" if file is not None else f"module:{v.__name__}"
        if isinstance(v, functools.partial):
            return f"partial({self.value(v.func)},{self.value(v.args)},{self.value(v.keywords)})"
        if isinstance(v, types.MethodType):
            return f"method({self.value(v.__func__)},{self.value(v.__self__)})"
        if dataclasses.is_dataclass(v) or _is_project_class(kind):
            return self.entry(v, self.instance)
        wrapped = getattr(v, "__wrapped__", None)  # functools.lru_cache and other wrappers
        if isinstance(wrapped, types.FunctionType):
            return f"{_name(kind)}({self.value(wrapped)})"
        if callable(v) and hasattr(v, "__name__"):  # builtins, ufuncs, method descriptors
            return _name(v)
        return f"<{_name(kind)}>"  # no canonical value: counted by its type only

    def container(self, v: tuple | list | set | frozenset | dict) -> str:
        key = id(v)
        if key in self.texts:
            return self.texts[key]
        if key in self.open:
            return "<cycle>"
        self.open.add(key)
        if isinstance(v, dict):
            items = sorted(f"{self.value(k)}:{self.value(x)}" for k, x in v.items())
        elif isinstance(v, (set, frozenset)):
            items = sorted(map(self.value, v))
        else:
            items = list(map(self.value, v))
        self.open.discard(key)
        self.alive.append(v)
        text = self.texts[key] = f"{type(v).__qualname__}[{','.join(items)}]"
        return text

    def entry(self, v: Any, describe: Callable[[Any], str]) -> str:
        """``#n`` for `v`; the first time, `describe(v)` is queued to become entry n."""
        key = id(v)
        if key not in self.numbers:
            self.numbers[key] = len(self.entries)
            self.queue.append((len(self.entries), v, describe))
            self.entries.append("")
            self.alive.append(v)
        return f"#{self.numbers[key]}"

    # --- entries --------------------------------------------------------------------
    def function(self, func: types.FunctionType) -> str:
        source, reads = _analysis(func)
        cells = dict(zip(func.__code__.co_freevars, func.__closure__ or ()))
        parts = [f"def {func.__qualname__}", source,
                 f"defaults={self.value(func.__defaults__)},{self.value(func.__kwdefaults__)}"]
        parts += (self.read(func, cells, read) for read in reads)
        return "\0".join(parts)

    def read(self, func: types.FunctionType, cells: dict[str, types.CellType], read: Read) -> str:
        """``name.attr=value``: attributes are followed as long as they are on project modules."""
        kind, name, *attributes = read
        found = _lookup(func, cells, kind, name)
        used = [kind, name]
        for attribute in attributes:
            if found is _MISSING or not _is_project_module(found):
                break
            try:
                found = getattr(found, attribute)
            except AttributeError:  # `from . import sub` imports a package's submodule
                package = hasattr(found, "__path__")
                found = _import(f"{found.__name__}.{attribute}", None) if package else _MISSING
            used.append(attribute)
        return f"{'.'.join(used)}={_UNDEFINED if found is _MISSING else self.value(found)}"

    def klass(self, cls: type) -> str:
        parts = [f"class {cls.__qualname__}", _class_source(cls),
                 f"bases={self.value(cls.__bases__)}"]
        for name, attribute in sorted(vars(cls).items()):
            methods = _functions_of(attribute)
            if methods:  # generated methods (a dataclass's __init__...) have no file: skipped
                parts += (f"{name}={self.value(m)}" for m in methods
                          if not m.__code__.co_filename.startswith("<"))
            elif not (name.startswith("__") and name.endswith("__")):
                parts.append(f"{name}={self.value(attribute)}")
        return "\0".join(parts)

    def instance(self, v: Any) -> str:
        kind = type(v)
        if dataclasses.is_dataclass(v):
            state = {f.name: getattr(v, f.name, None) for f in dataclasses.fields(v)}
        else:
            state = getattr(v, "__dict__", {})
        return f"{self.value(kind)}({self.value(dict(state))})"


def _is_data(v: Any) -> bool:
    """A pandas DataFrame, Series or Index, or a numpy array (only if those are imported)."""
    pandas, numpy = sys.modules.get("pandas"), sys.modules.get("numpy")
    return ((pandas is not None and isinstance(v, (pandas.DataFrame, pandas.Series, pandas.Index)))
            or (numpy is not None and isinstance(v, numpy.ndarray)))


def _data_text(v: Any) -> str:
    """Type, shape, labels, dtypes, and a digest of the row hashes of the values and index."""
    import pandas as pd

    from .hashing import hash_rows

    labels: list[str] | str
    if isinstance(v, pd.DataFrame):
        frame, labels = v, [str(c) for c in v.columns]
    elif isinstance(v, pd.Series):
        frame, labels = v.to_frame(name=0), str(v.name)
    elif isinstance(v, pd.Index):
        frame, labels = v.to_frame(index=False), str(v.names)
    else:  # a numpy array: one row per first-axis item, one column per cell of that item
        frame, labels = pd.DataFrame(v.reshape(v.shape[0] if v.ndim else 1,
                                               math.prod(v.shape[1:]))), ""
    hashes = hash_rows(frame).tobytes() + hash_rows(frame.index.to_frame(index=False)).tobytes()
    dtypes = [str(d) for d in frame.dtypes]
    return f"{type(v).__qualname__}:{v.shape}:{labels}:{dtypes}:{xxhash.xxh3_64_hexdigest(hashes)}"


class _Missing:
    pass


_MISSING = _Missing()


def _lookup(func: types.FunctionType, cells: dict[str, types.CellType], kind: str,
            name: str) -> Any:
    """The object a read starts from, or `_MISSING`."""
    if kind == "d":
        try:
            return cells[name].cell_contents
        except (KeyError, ValueError):  # a cell not filled yet
            return _MISSING
    if kind == "i":
        return _import(name, func.__globals__.get("__package__"))
    if name in func.__globals__:
        return func.__globals__[name]
    return func.__builtins__.get(name, _MISSING)


def _import(name: str, package: str | None) -> Any:
    """A module a function body imports: already imported, or imported now if in the project."""
    try:
        absolute = importlib.util.resolve_name(name, package) if name.startswith(".") else name
    except ImportError:
        return _MISSING
    module = sys.modules.get(absolute)
    if module is not None:
        return module
    try:  # a lazy import of a library stays lazy: only project modules are imported here
        top = importlib.util.find_spec(absolute.partition(".")[0])
        if top is not None and top.origin is not None and _is_project_file(top.origin):
            return importlib.import_module(absolute)
    except Exception:  # noqa: BLE001 - the step itself will report a broken import
        return _MISSING
    return types.ModuleType(absolute)  # counts by its name, as it would once imported


# --- what the code reads ----------------------------------------------------------------


def _analysis(func: types.FunctionType) -> tuple[str, tuple[Read, ...]]:
    """(source text, sorted reads) of a function, cached per function object."""
    found = _analyses.get(func)
    if found is None:
        found = _analyses[func] = (_source(func), tuple(sorted(_reads(func.__code__))))
    return found


def _source(func: types.FunctionType) -> str:
    """The dedented source of the function's own code (decorators included, not unwrapped).

    A lambda's source line may hold other code, and some functions have no source: those
    are fingerprinted by bytecode, constants and names (stable across processes, not across
    Python minor versions)."""
    if func.__name__ != "<lambda>":
        try:
            return textwrap.dedent(inspect.getsource(func.__code__))
        except (OSError, TypeError):
            pass
    return _code_text(func.__code__)


def _class_source(cls: type) -> str:
    """The dedented source of a class, cached per class ("" without source: methods count)."""
    source = _class_sources.get(cls)
    if source is None:
        try:
            source = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):
            source = ""
        _class_sources[cls] = source
    return source


def _code_text(code: types.CodeType) -> str:
    """Bytecode, constants (nested code objects recursively) and names of a code object."""
    consts = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            consts.append(_code_text(const))
        elif isinstance(const, frozenset):  # iteration order depends on the string hash seed
            consts.append(f"frozenset({sorted(map(repr, const))})")
        else:
            consts.append(repr(const))
    return f"{code.co_code.hex()}\0{consts!r}\0{code.co_names!r}"


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    """`code` and the code nested in it: comprehensions, lambdas, inner functions and classes."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _reads(code: types.CodeType) -> set[Read]:
    """The names the code reads, each with the attribute chain taken from it."""
    found: set[Read] = {("d", name) for name in code.co_freevars}
    for each in _code_objects(code):
        chain: list[str] | None = None
        imported: dict[str, list[str]] = {}  # local name bound by an import -> its read
        last_import: list[str] | None = None
        consts: list[Any] = [0, None]
        for ins in dis.get_instructions(each):
            op = ins.opname
            if op == "EXTENDED_ARG":
                continue
            if chain is not None and op in _ATTRIBUTES:
                chain.append(ins.argval)
                continue
            if chain is not None:
                found.add(tuple(chain))
                chain = None
            if op in _LOADS:
                chain = [_LOADS[op], ins.argval]
            elif op == "LOAD_FAST" and ins.argval in imported:
                chain = list(imported[ins.argval])
            elif op == "IMPORT_NAME":
                level, fromlist = consts[-2:]
                target = "." * (level or 0) + ins.argval
                # `import a.b` binds the package `a`; `from a.b import c` takes c from a.b
                last_import = ["i", target if fromlist is not None or level else
                               ins.argval.partition(".")[0]]
                found.add(tuple(last_import))
            elif op == "IMPORT_FROM" and last_import is not None:
                last_import = [*last_import[:2], ins.argval]
                found.add(tuple(last_import))
            elif op in _STORES and last_import is not None:
                imported[ins.argval] = last_import
                last_import = None
            if op == "LOAD_CONST":
                consts.append(ins.argval)
        if chain is not None:
            found.add(tuple(chain))
    return found


# --- inside or outside the project ------------------------------------------------------


@functools.cache
def _outside_roots() -> tuple[str, ...]:
    """Folders whose code is not the project's: the standard library, site-packages, filepipe."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.add(os.path.dirname(os.path.abspath(__file__)))
    return tuple(sorted(os.path.realpath(r) for r in roots))


@functools.lru_cache(maxsize=4096)
def _is_project_file(filename: str) -> bool:
    if filename.startswith("<"):  # <frozen os> is the standard library; <string>, <stdin>...
        return not filename.startswith("<frozen")
    path = os.path.realpath(filename)
    if {"site-packages", "dist-packages"} & set(pathlib.PurePath(path).parts):
        return False
    return not any(path == root or path.startswith(root + os.sep) for root in _outside_roots())


def _module_file(module: types.ModuleType) -> str | None:
    file = getattr(module, "__file__", None)
    if file is None:  # a namespace package
        file = next(iter(getattr(module, "__path__", None) or ()), None)
    return file


def _is_project_module(value: Any) -> bool:
    if not isinstance(value, types.ModuleType):
        return False
    file = _module_file(value)
    return file is not None and _is_project_file(file)


def _is_project_function(func: types.FunctionType) -> bool:
    filename = func.__code__.co_filename
    if filename.startswith("<") and not filename.startswith("<frozen"):
        file = func.__globals__.get("__file__")  # exec'd code counts as its module does
        return file is None or _is_project_file(file)
    return _is_project_file(filename)


def _class_file(cls: type) -> str | None:
    """The file a class is defined in: its module's, else its first method's."""
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if file is None:
        file = next((m.__code__.co_filename for a in vars(cls).values() for m in _functions_of(a)),
                    None)
    return file


def _is_project_class(cls: type) -> bool:
    file = _class_file(cls)
    return file is not None and _is_project_file(file)


def _functions_of(attribute: Any) -> list[types.FunctionType]:
    """The plain functions behind a class attribute (method, static/class method, property)."""
    inner = [attribute] + [getattr(attribute, n, None)
                           for n in ("__func__", "fget", "fset", "fdel", "func")]
    return [f for f in inner if isinstance(f, types.FunctionType)]


def _name(v: Any) -> str:
    """The qualified name of something outside the project."""
    module = getattr(v, "__module__", None) or ""
    name = getattr(v, "__qualname__", None) or getattr(v, "__name__", None) or type(v).__qualname__
    return f"{module}.{name}"
