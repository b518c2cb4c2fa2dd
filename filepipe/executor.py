"""Where a step's function runs: in the calling thread, in local worker processes, or on a
dask.distributed cluster (``--executor``, ``FilepipeApp(executor=...)``).

An executor only runs the user's function on a batch's frames; the caller (the engine)
reads inputs and writes outputs and meta itself, in order. The contract:

* ``submit(func, frames, kwargs)`` returns a `concurrent.futures.Future` at once. Its
  ``result()`` is what ``func(*frames, **kwargs)`` returned, or raises what it raised
  (same type and message; the traceback names the user's file and line, as a local call
  would), or raises `WorkerLostError` when the process running it died on every attempt.
  Everything else that can go wrong (the function cannot be sent to a worker, its result
  cannot come back) also comes through ``result()``, never out of ``submit``.
* Futures complete in any order; keep at most ``slots`` batches submitted and not yet
  consumed, and consume them in submission order, so results are written in order (read
  ``slots`` once per step: dask's asks the scheduler, at most every 5 s).
* ``future.cancel()`` drops a batch that has not started; one already running finishes,
  and its result is dropped. ``close()`` cancels every batch not yet consumed, waits for
  the running ones, and stops the workers and clusters it started; the executors are also
  context managers. A worker process is reused from one batch, step and run to the next.

The function travels by value (cloudpickle) when its module is the user's pipeline file
loaded by path, or a module beside it, which a fresh interpreter could not import by name;
installed packages travel by reference. A worker keeps the functions it has loaded, so
module-level state the function keeps survives between its batches in that worker.

Local processes start from a fork server (a fresh interpreter that has imported pandas once;
never a fork of the caller, whose threads and database connections a fork would copy)
where the platform has one, otherwise by spawn. Dask is imported only when used.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import hashlib
import itertools
import logging
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import CodeType, ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from .errors import FilepipeError, PipelineError, StepOutputError, WorkerLostError

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

    import pandas as pd

#: how many more times a batch is run after the process running it died
RETRIES = 2

#: seconds to wait for a dask scheduler that does not answer
_CONNECT_TIMEOUT = 15

#: seconds a dask cluster may have no worker while batches wait for one, before they fail
NO_WORKERS_WAIT = 120.0

SPECS = ("inline (the default; also: in-process)", "processes", "processes:N",
         "dask://HOST:PORT", "tcp://HOST:PORT", "tls://HOST:PORT", "dask:local", "dask:local:N")


class BatchExecutor(Protocol):
    """Runs a step's function on a batch's frames somewhere; see the module's docstring."""

    name: str

    @property
    def slots(self) -> int:
        """How many batches to keep submitted and not yet consumed (1 runs them one by one)."""
        ...

    def submit(self, func: Callable[..., Any], frames: list[pd.DataFrame],
               kwargs: dict[str, Any]) -> cf.Future[Any]:
        """Run ``func(*frames, **kwargs)``; the future holds its result or its exception."""
        ...

    def close(self) -> None:
        """Cancel what was not consumed; stop the workers (and a cluster) this executor started."""
        ...


def executor_from(spec: str | BatchExecutor | None) -> BatchExecutor:
    """The executor a ``--executor`` text names (an executor is returned as it is, and stays
    its owner's to close; one made here is the caller's to close).

    ``None``, ``inline``, ``in-process``: the calling thread, no copies (the default).
    ``processes[:N]``: N local worker processes (default: as many as CPUs this process may use).
    ``dask://HOST:PORT`` or ``tcp://`` or ``tls://``: the dask.distributed scheduler there.
    ``dask:local[:N]``: a local dask cluster of N single-threaded worker processes.
    """
    if spec is None:
        return InlineExecutor()
    if not isinstance(spec, str):
        return spec
    text = spec.strip()
    if text.lower() in ("inline", "in-process", "inprocess"):
        return InlineExecutor()
    if m := re.fullmatch(r"processes(?::(\d+))?", text, re.IGNORECASE):
        return ProcessExecutor(_count(m.group(1), spec))
    if m := re.fullmatch(r"dask:local(?::(\d+))?", text, re.IGNORECASE):
        return DaskExecutor(None, workers=_count(m.group(1), spec))
    if m := re.fullmatch(r"(dask|tcp|tls)://([^/\s:]+|\[[0-9a-fA-F:]+\]):(\d+)/?", text, re.IGNORECASE):
        scheme = "tcp" if m.group(1).lower() == "dask" else m.group(1).lower()
        return DaskExecutor(f"{scheme}://{m.group(2)}:{m.group(3)}", name=text)
    raise PipelineError(f"unknown executor {spec!r}: use one of {', '.join(SPECS)}")


def _count(digits: str | None, spec: str) -> int:
    n = int(digits) if digits is not None else _cpus()
    if n < 1:
        raise PipelineError(f"executor {spec!r}: the number of workers must be at least 1")
    return n


def _cpus() -> int:
    """The CPUs this process may use (its affinity mask, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on macOS nor Windows
        return os.cpu_count() or 1


class _Executor:
    """What every executor here shares: the context manager."""

    name: str

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class InlineExecutor(_Executor):
    """Runs the function in the calling thread, inside ``submit``: the future is done when
    ``submit`` returns. Nothing is copied; a KeyboardInterrupt stops ``submit`` itself."""

    name = "in-process"
    slots = 1

    def submit(self, func: Callable[..., Any], frames: list[pd.DataFrame],
               kwargs: dict[str, Any]) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        try:
            result = func(*frames, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the caller gets it from the future
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def close(self) -> None:
        pass


# --- the local process pool -------------------------------------------------------------

@dataclass(eq=False)
class _Task:
    """One submitted batch of a process pool: its future, what to send, how it went."""

    seq: int
    outer: cf.Future[Any]
    args: tuple[Any, ...]
    deaths: int = 0  # times its worker died while it was the only batch in the pool
    pool: ProcessPoolExecutor | None = field(default=None, repr=False)
    inner: cf.Future[Any] | None = field(default=None, repr=False)  # its future in `pool`


class ProcessExecutor(_Executor):
    """A `concurrent.futures.ProcessPoolExecutor` of `workers` processes that survives the
    death of a worker.

    A dead worker breaks the whole pool, and every batch in it fails with it; the pool is
    rebuilt and those batches are run again one at a time (new batches wait), so the one
    that kills its worker is found: a batch whose worker died while it ran alone is tried
    `retries` more times, then fails with `WorkerLostError`. The others run as usual.
    """

    def __init__(self, workers: int, retries: int = RETRIES) -> None:
        self.name = f"processes:{workers}"
        self.workers, self.retries = workers, retries
        self.slots = 2 * workers  # one running and one waiting in each worker
        self._ship = _Shipper()
        self._lock = threading.RLock()  # a future done at once calls back in submit's thread
        self._pool: ProcessPoolExecutor | None = None
        self._running: set[_Task] = set()  # in a pool, not yet called back
        self._suspects: deque[_Task] = deque()  # were in a pool that broke: rerun one by one
        self._waiting: deque[_Task] = deque()  # submitted, wait for the suspects
        self._seq = itertools.count()
        self._closed = False

    def submit(self, func: Callable[..., Any], frames: list[pd.DataFrame],
               kwargs: dict[str, Any]) -> cf.Future[Any]:
        outer, args = self._ship.packed(func, frames, kwargs)
        if args is None:
            return outer
        task = _Task(next(self._seq), outer, args)
        with self._lock:
            if self._closed:
                raise FilepipeError(f"executor {self.name} is closed")
            self._waiting.append(task)
            self._dispatch()
        outer.add_done_callback(functools.partial(self._cancelled, task))
        return outer

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, None
            left = [*self._running, *self._suspects, *self._waiting]
            self._running.clear()
            self._suspects.clear()
            self._waiting.clear()
        for task in left:
            task.outer.cancel()
        if pool is not None:
            if left:  # batches still running (Ctrl-C): their results are not wanted, and
                # workers never write, so stop them rather than wait for the batches to end
                for process in list((getattr(pool, "_processes", None) or {}).values()):
                    process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)

    # --- internals; `_lock` held unless said otherwise ---
    def _dispatch(self) -> None:
        """Start what may start: the next suspect alone, or else every waiting batch."""
        if self._closed:
            return
        if self._suspects:
            if not self._running:
                self._start(self._suspects.popleft())
            return
        while self._waiting and not self._suspects:
            self._start(self._waiting.popleft())

    def _start(self, task: _Task) -> None:
        from concurrent.futures.process import BrokenProcessPool

        for _ in range(2):
            try:
                pool = self._pool or self._new_pool()
                inner = pool.submit(_run, *task.args)
            except BrokenProcessPool:  # broke before its batches were called back
                self._pool = None
                continue
            except Exception as exc:  # noqa: BLE001 - no processes (no memory, no pipes...)
                _settle(task.outer, exc=exc)
                return
            task.pool, task.inner = pool, inner
            self._running.add(task)
            inner.add_done_callback(functools.partial(self._called_back, task))
            return
        _settle(task.outer, exc=WorkerLostError(f"{self.name}: the worker pool broke as it started"))

    def _new_pool(self) -> ProcessPoolExecutor:
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(self.workers, mp_context=_mp_context(),
                                         initializer=_watch_parent, initargs=(os.getpid(),))
        return self._pool

    def _called_back(self, task: _Task, inner: cf.Future[Any]) -> None:
        """`inner` is done (the pool's thread, or `_start`'s when it was done at once)."""
        from concurrent.futures.process import BrokenProcessPool

        with self._lock:
            if task not in self._running:  # handled with its broken pool, or closed
                return
            broken = not inner.cancelled() and isinstance(inner.exception(), BrokenProcessPool)
            if broken:
                self._pool_broke(task.pool)
            else:
                self._running.discard(task)
            self._dispatch()
        if not broken:
            _resolve(task.outer, inner)

    def _cancelled(self, task: _Task, outer: cf.Future[Any]) -> None:
        """Its caller cancelled `outer`: the batch is not run if it has not started."""
        if not outer.cancelled():
            return
        with self._lock:
            for queue in (self._waiting, self._suspects):
                if task in queue:
                    queue.remove(task)
            if task.inner is not None:
                task.inner.cancel()  # false once a worker has it: it runs, its result is dropped
            self._dispatch()

    def _pool_broke(self, pool: ProcessPoolExecutor | None) -> None:
        """A worker of `pool` died: every batch in it fails with it. The first call back of
        that pool sorts them all: a batch alone in it is to blame, the others are suspects."""
        group = sorted((t for t in self._running if t.pool is pool), key=lambda t: t.seq)
        self._running.difference_update(group)
        if self._pool is pool:
            self._pool = None
        wanted = [t for t in group if not t.outer.cancelled()]
        if len(group) == 1 and wanted:
            task = group[0]
            task.deaths += 1
            if task.deaths > self.retries:
                _settle(task.outer, exc=WorkerLostError(
                    f"the worker process running this batch died {task.deaths} times ({self.name}; "
                    "a crash, or the system killing it, often for lack of memory); not retried"))
                return
            self._suspects.appendleft(task)
            return
        self._suspects.extend(wanted)


def _resolve(outer: cf.Future[Any], inner: cf.Future[Any]) -> None:
    """Settle `outer` from what the worker sent back through `inner`."""
    if inner.cancelled():
        outer.cancel()
        return
    try:
        ok, value = _unpack(inner.result())
    except KeyboardInterrupt:  # a worker's own Ctrl-C: the coordinator decides about stopping
        ok, value = False, WorkerLostError("the worker process running this batch was interrupted")
    except BaseException as exc:  # noqa: BLE001 - the caller gets it (a SystemExit too)
        ok, value = False, exc
    _settle(outer, *((value, None) if ok else (None, value)))


def _settle(future: cf.Future[Any], value: Any = None, exc: BaseException | None = None) -> None:
    """Set a result once; a future its owner cancelled stays cancelled."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
    except cf.InvalidStateError:
        pass


def _watch_parent(parent: int) -> None:
    """In a new worker: leave Ctrl-C to the coordinator (a terminal sends it to the whole
    process group), and exit when the process that started the pool is gone. (Killed hard,
    it leaves its workers waiting forever on a queue they themselves hold open.)"""
    _ignore_ctrl_c()
    if os.name != "posix":
        return

    def watch() -> None:
        while True:
            time.sleep(1)
            try:
                os.kill(parent, 0)
            except (ProcessLookupError, PermissionError):  # gone (its number perhaps reused)
                os._exit(70)

    threading.Thread(target=watch, name="filepipe-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only critical messages of `logger` meanwhile."""
    log = logging.getLogger(logger)
    before = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(before)


def _ignore_ctrl_c() -> None:
    """In a worker: SIGINT does nothing; the coordinator stops (or closes) its workers."""
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def dask_setup(worker: Any) -> None:
    """dask's preload hook, run in each worker of a `dask:local` cluster: as `_watch_parent`,
    Ctrl-C is the coordinator's (a worker dying of it would leave its batch waiting); and the
    worker's own log stays quiet (a batch's failure comes back through its future; the
    connection errors of a cluster closing are no news)."""
    import logging

    _ignore_ctrl_c()
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


#: imported once by the fork server, so that a new worker starts in milliseconds
_PRELOAD = ["__main__", "filepipe.executor", "cloudpickle", "numpy", "pandas", "pyarrow"]


def _mp_context() -> Any:
    """The fork server where the platform has one (a clean process, safe with the caller's
    threads), else spawn. Never fork."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)  # used when the server starts (once per process)
        return ctx
    return multiprocessing.get_context("spawn")


# --- dask ------------------------------------------------------------------------------

class DaskExecutor(_Executor):
    """Batches as tasks of a dask.distributed cluster: the scheduler at `address`, or a new
    local cluster of `workers` single-threaded processes (closed by ``close``).

    Dask reruns a task whose worker died; when a task was on `allowed-failures` + 1 workers
    that died (the scheduler's setting; `RETRIES` on a local cluster) it gives up, and the
    batch fails with `WorkerLostError`. So do the batches waiting when the cluster has had
    no worker for `no_workers_wait` seconds (dask would wait for one forever). The workers
    need the packages the function imports by name, and filepipe (the same versions as here).
    """

    def __init__(self, address: str | None, workers: int | None = None, retries: int = RETRIES,
                 name: str | None = None, no_workers_wait: float = NO_WORKERS_WAIT) -> None:
        try:
            import dask
            import distributed
        except ImportError as exc:
            raise PipelineError(f"the dask executor needs dask.distributed ({exc}): "
                                "pip install 'filepipe[dask]'") from exc
        self._ship = _Shipper()
        self._lock = threading.Lock()
        self._inflight: dict[str, tuple[Any, cf.Future[Any]]] = {}
        self._slots: tuple[float, int] | None = None
        self._closed = False
        self._cluster: Any = None
        self._no_workers_wait = no_workers_wait
        self._workerless = False  # no worker for `no_workers_wait` s: batches fail at once
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        if address is None:  # our own cluster: its start and stop are no news on stderr
            logging.getLogger("distributed").setLevel(logging.WARNING)
            n = workers or _cpus()
            with dask.config.set({"distributed.scheduler.allowed-failures": retries}):
                self._cluster = distributed.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                    # no dashboard; the scheduler's HTTP server (health, metrics): any free
                    # local port, not 8787, which another cluster may have
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    preload=["filepipe.executor"])  # its `dask_setup`: Ctrl-C is ours
            address = str(self._cluster.scheduler_address)
            name = name or f"dask:local:{n}"
        self.name = name or address
        try:
            self._client = distributed.Client(address, set_as_default=False, timeout=_CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            if self._cluster is not None:
                self._cluster.close()
            raise FilepipeError(f"cannot reach the dask scheduler at {address}: {exc}") from exc

    @property
    def slots(self) -> int:
        """Twice the cluster's worker threads (at least 2), looked up at most every 5 s."""
        now = time.monotonic()
        if self._slots is None or (now - self._slots[0] > 5 and not self._closed):
            workers = self._client.scheduler_info().get("workers", {})
            threads = sum(int(w.get("nthreads", 1)) for w in workers.values())
            self._slots = (now, max(2, 2 * threads))
        return self._slots[1]

    def submit(self, func: Callable[..., Any], frames: list[pd.DataFrame],
               kwargs: dict[str, Any]) -> cf.Future[Any]:
        outer, args = self._ship.packed(func, frames, kwargs)
        if args is None:
            return outer
        if self._workerless:
            _settle(outer, exc=self._no_workers())
            return outer
        name = re.sub(r"[^\w.]", "_", getattr(func, "__name__", "") or "batch")
        with self._lock:
            if self._closed:
                raise FilepipeError(f"executor {self.name} is closed")
            task = self._client.submit(_run, *args, key=f"{name}-{uuid.uuid4().hex}", pure=False)
            self._inflight[str(task.key)] = (task, outer)  # a dask future forgotten is a task cancelled
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch_workers, name="filepipe-dask-workers",
                                                  daemon=True)
                self._watchdog.start()
        task.add_done_callback(functools.partial(self._called_back, outer))
        outer.add_done_callback(lambda f: task.cancel() if f.cancelled() and not task.done() else None)
        return outer

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            left = list(self._inflight.values())
            self._inflight.clear()
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join()
        for _, outer in left:
            outer.cancel()
        quiet = _quiet("distributed") if self._cluster is not None else contextlib.nullcontext()
        with quiet:  # closing our cluster: its connections closing under it are expected
            try:
                self._client.close()
            finally:
                if self._cluster is not None:
                    self._cluster.close()

    def _watch_workers(self) -> None:
        """While batches wait: once the cluster has had no worker for `no_workers_wait`
        seconds (a remote cluster whose workers all went, or never came), fail them with
        WorkerLostError, and fail new ones at once until a worker comes. A cluster that
        cannot be asked is left to the tasks' own errors."""
        every = min(5.0, self._no_workers_wait / 4)
        since: float | None = None
        while not self._stop.wait(every):
            with self._lock:
                waiting = list(self._inflight.values())
            if not waiting and not self._workerless:
                since = None
                continue
            try:
                staffed = bool(self._client.nthreads())
            except Exception:  # noqa: BLE001 - a lost connection fails the tasks themselves
                staffed = True
            if staffed:
                since, self._workerless = None, False
                continue
            if since is None:
                since = time.monotonic()
            if time.monotonic() - since >= self._no_workers_wait:
                self._workerless = True
                for task, outer in waiting:
                    _settle(outer, exc=self._no_workers())
                    task.cancel()

    def _no_workers(self) -> WorkerLostError:
        return WorkerLostError(f"{self.name} has had no worker for {self._no_workers_wait:g} s: start "
                               "workers (`dask worker SCHEDULER`) and run again")

    def _called_back(self, outer: cf.Future[Any], task: Any) -> None:
        """`task` is no longer pending (dask's callback thread). If it is "lost" (its result
        was on a worker that died), `result()` waits while dask computes it again."""
        from distributed import KilledWorker

        try:
            outcome = task.result()
        except KilledWorker as exc:
            lost = WorkerLostError(f"the worker running this batch died on every attempt ({self.name}: {exc})")
            lost.__cause__ = exc
            _settle(outer, exc=lost)
        except cf.CancelledError as exc:
            _settle(outer, exc=WorkerLostError(f"{self.name} cancelled this batch ({exc}; the scheduler, "
                                               "or the connection to it, was lost?)"))
        except BaseException as exc:  # noqa: BLE001 - not the function's (its errors come as outcomes)
            _settle(outer, exc=exc)
        else:
            try:
                ok, value = _unpack(outcome)
            except Exception as exc:  # noqa: BLE001 - the caller gets it from the future
                ok, value = False, exc
            _settle(outer, *((value, None) if ok else (None, value)))
        finally:
            with self._lock:
                self._inflight.pop(str(task.key), None)
            task.release()  # the cluster may forget it now


# --- what travels: the function by value where it must, frames and results pickled ------

class _Shipper:
    """Packs a call for a worker: the function pickled once per function (cloudpickle),
    the frames and kwargs per batch."""

    def __init__(self) -> None:
        self._funcs: dict[int, tuple[Callable[..., Any], tuple[str, bytes, tuple[str, ...]]]] = {}

    def packed(self, func: Callable[..., Any], frames: Sequence[Any],
               kwargs: dict[str, Any]) -> tuple[cf.Future[Any], tuple[Any, ...] | None]:
        """A new future for a batch, and what `pack` makes of it; None when it cannot be
        packed, the future then holding why."""
        outer: cf.Future[Any] = cf.Future()
        try:
            return outer, self.pack(func, frames, kwargs)
        except Exception as exc:  # noqa: BLE001 - the caller gets it from the future
            outer.set_exception(exc)
            return outer, None

    def pack(self, func: Callable[..., Any], frames: Sequence[Any], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """``(token, function bytes, folders for the worker's sys.path, batch bytes)``."""
        cloudpickle = _cloudpickle()

        known = self._funcs.get(id(func))
        if known is None or known[0] is not func:
            modules, folder = _project_modules(func)
            for module in modules:
                cloudpickle.register_pickle_by_value(module)
            try:
                blob = cloudpickle.dumps(func, protocol=5)
            except Exception as exc:
                raise PipelineError(f"the step function {_name(func)} cannot be sent to a worker process: "
                                    f"{type(exc).__name__}: {exc} (does it use an open connection, a lock "
                                    "or a file from the pipeline's module?)") from exc
            token = hashlib.blake2b(blob, digest_size=16).hexdigest()
            known = (func, (token, blob, (folder,) if folder else ()))
            if len(self._funcs) >= 32:
                self._funcs.pop(next(iter(self._funcs)))
            self._funcs[id(func)] = known
        token, blob, folders = known[1]
        try:
            batch = cloudpickle.dumps((list(frames), kwargs), protocol=5)
        except Exception as exc:
            raise PipelineError(f"the batch for {_name(func)} cannot be sent to a worker process: "
                                f"{type(exc).__name__}: {exc}") from exc
        return token, blob, folders, batch


def _name(func: Callable[..., Any]) -> str:
    return str(getattr(func, "__qualname__", None) or type(func).__qualname__)


def _project_modules(func: Callable[..., Any]) -> tuple[list[ModuleType], str | None]:
    """When `func` comes from a module a fresh interpreter cannot import by name (the pipeline
    file, loaded by path): that module and the others loaded from its folder (the project's
    helpers; not installed packages), which are to travel by value, and the folder."""
    target: Any = func
    while isinstance(target, functools.partial):
        target = target.func
    modname = getattr(target, "__module__", None) or type(target).__module__
    module = sys.modules.get(modname)
    file = getattr(module, "__file__", None)
    if module is None or not file or modname == "__main__" or _importable(module):
        return [], None
    folder = os.path.dirname(os.path.realpath(file))
    installed = _installed_folders()
    found = []
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        name = getattr(m, "__name__", "")
        if not f or not isinstance(m, ModuleType) or name == "__main__" or name.split(".")[0] == "filepipe":
            continue
        real = os.path.realpath(f)
        if _within(real, folder) and not any(_within(real, d) for d in installed) and \
                not {"site-packages", "dist-packages"} & set(real.split(os.sep)):
            found.append(m)
    return found, folder


def _importable(module: ModuleType) -> bool:
    """Would an interpreter with this `sys.path` import `module` by its name, from its file?"""
    from importlib.machinery import PathFinder

    top = module.__name__.partition(".")[0]
    try:
        spec = PathFinder.find_spec(top, sys.path)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if top != module.__name__:
        return True
    file = getattr(module, "__file__", None)
    return bool(spec.origin and file and os.path.realpath(spec.origin) == os.path.realpath(file))


@functools.cache
def _installed_folders() -> tuple[str, ...]:
    import sysconfig

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, *sysconfig.get_paths().values()}
    return tuple(sorted({os.path.realpath(p) for p in paths if p}))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _cloudpickle() -> Any:
    """cloudpickle (a dependency of filepipe's, and of dask's), imported when first used."""
    import cloudpickle  # type: ignore[import-untyped]  # no type information

    return cloudpickle


# --- in the worker ------------------------------------------------------------------------

#: the functions this worker has loaded, by token (the newest 32)
_LOADED: dict[str, Callable[..., Any]] = {}


def _run(token: str, blob: bytes, folders: tuple[str, ...], batch: bytes) -> tuple[bool, Any]:
    """In a worker: load the function (once) and the batch, call it. ``(True, result bytes)``,
    or ``(False, what _failure packs)`` when it raised (or could not be loaded)."""
    cloudpickle = _cloudpickle()

    try:
        for folder in folders:
            if folder not in sys.path and os.path.isdir(folder):
                sys.path.append(folder)  # for imports the function makes when it runs
        func = _LOADED.get(token)
        if func is None:
            func = cloudpickle.loads(blob)
            while len(_LOADED) >= 32:
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[token] = func
        frames, kwargs = cloudpickle.loads(batch)
    except Exception as exc:  # noqa: BLE001 - sent back to the caller
        return False, _failure(PipelineError(
            f"the step function cannot be loaded in worker process {os.getpid()}: "
            f"{type(exc).__name__}: {exc}"))
    try:
        result = func(*frames, **kwargs)
    except Exception as exc:  # noqa: BLE001 - sent back to the caller
        return False, _failure(exc)
    try:
        return True, cloudpickle.dumps(result, protocol=5)
    except Exception as exc:  # noqa: BLE001 - sent back to the caller
        return False, _failure(StepOutputError(
            f"{_name(func)} returned something that cannot be sent back from a worker process: "
            f"{type(exc).__name__}: {exc}"))


_HERE = os.path.realpath(__file__)


def _failure(exc: Exception) -> tuple[bytes | None, str, str, str, list[tuple[str, int, str]]]:
    """What is sent back for `exc`: the exception pickled (None if it cannot be), its type's
    module and name, its message, and its traceback's frames below this module."""
    cloudpickle = _cloudpickle()

    try:
        blob: bytes | None = cloudpickle.dumps(exc, protocol=5)
    except Exception:  # noqa: BLE001 - sent back as its name and message instead
        blob = None
    frames = []
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        file = frame.f_code.co_filename
        if file == "<dynamic-code>":  # cloudpickle's name for code it sent by value
            file = frame.f_globals.get("__file__") or file
        if os.path.realpath(file) != _HERE:
            frames.append((file, lineno or 1, frame.f_code.co_name))
    return blob, type(exc).__module__, type(exc).__qualname__, str(exc), frames


def _unpack(outcome: tuple[bool, Any]) -> tuple[bool, Any]:
    """In the caller: ``(True, the function's result)`` or ``(False, its exception)``."""
    cloudpickle = _cloudpickle()

    ok, payload = outcome
    if ok:
        return True, cloudpickle.loads(payload)
    blob, module, qualname, message, frames = payload
    exc: BaseException | None = None
    if blob is not None:
        try:
            exc = cloudpickle.loads(blob)
        except Exception:  # noqa: BLE001 - rebuilt from its name and message below
            exc = None
    if not isinstance(exc, BaseException):
        # the same name and message, for the run's record
        exc = type(qualname.rpartition(".")[2], (Exception,), {"__module__": module})(message)
    # dask pickles tracebacks too (tblib); theirs name cloudpickle's <dynamic-code>, not files
    return False, _with_traceback(exc.with_traceback(None), frames)


def _with_traceback(exc: BaseException, frames: list[tuple[str, int, str]]) -> BaseException:
    """`exc` with a traceback through `frames` (file, line, function; outermost first), so
    that it reads, and is recorded, as if it had been raised here: by code objects compiled
    with those names and line numbers, each executing the next."""
    code: CodeType | None = None
    scope: dict[str, Any] = {"__exc__": exc}
    for filename, lineno, name in reversed(frames[-50:]):
        body = "raise __exc__" if code is None else "exec(__code__, __scope__)"
        compiled = compile("\n" * (max(lineno, 1) - 1) + body, filename, "exec")
        compiled = compiled.replace(co_name=name, co_qualname=name)
        scope = {"__exc__": exc} if code is None else {"__code__": code, "__scope__": scope}
        code = compiled
    if code is None:
        return exc
    try:
        exec(code, scope)
    except BaseException as raised:  # noqa: BLE001 - it is `exc`, now with its traceback
        tb: TracebackType | None = raised.__traceback__
        return raised.with_traceback(tb.tb_next if tb is not None else None)
    return exc
