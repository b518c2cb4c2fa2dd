"""filepipe.executor: batches run in worker processes and on a dask cluster give what they give
in-process — results, the user's exceptions (type, message, place), and a worker that dies is
retried, then reported, never lost.

Real pools: one ``processes:2`` executor and one ``dask:local:2`` cluster for the module, and
a pipeline file in a temporary folder loaded by path the way ``filepipe run`` loads one (its
module cannot be imported by name in a fresh interpreter, nor can the helper module beside it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from filepipe.app import _import_file
from filepipe.errors import FilepipeError, PipelineError, StepOutputError, WorkerLostError
from filepipe.executor import RETRIES, BatchExecutor, InlineExecutor, ProcessExecutor, executor_from
from filepipe.steps.base import error_text

WAIT = 60  # seconds any one result may take (worker restarts included) before the test fails
killing = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="kills its workers with SIGKILL")

HELPERS = '''
FACTOR = 3


def scale(values):
    return values * FACTOR
'''

PIPELINE = '''
import os
import signal
import threading
import time
from pathlib import Path

from fp_exec_helpers import scale

LOCK = threading.Lock()


class BadAmount(ValueError):
    pass


class NeedsTwo(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def enrich(orders, customers, *, offset=0):
    out = orders.merge(customers, on="customer", how="left")
    out["score"] = scale(out["amount"]) + offset
    return out, customers.assign(n=len(orders))


def make_adder(k):
    return lambda df: df.assign(amount=df["amount"] + k)


def refuse(df):
    bad = df["amount"].iloc[0]
    raise BadAmount(f"amount {bad} is negative")


def refuse_oddly(df):
    raise NeedsTwo("x", "y")


def uses_lock(df):
    with LOCK:
        return df


def returns_lock(df):
    return threading.Lock()


def slow(df, *, seconds):
    time.sleep(seconds)
    return df


def logged(df, *, log, seconds):
    with open(log, "a") as f:
        f.write("ran\\n")
    time.sleep(seconds)
    return df


def die_once(df, *, marker):
    """Killed on its first attempt (no marker yet), fine on the next."""
    marker = Path(marker)
    with open(str(marker) + ".attempts", "a") as f:
        f.write(f"{os.getpid()}\\n")
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return df.assign(amount=df["amount"] * 2)


def die_always(df, *, marker):
    with open(str(marker) + ".attempts", "a") as f:
        f.write(f"{os.getpid()}\\n")
    os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    folder = tmp_path_factory.mktemp("project")
    (folder / "fp_exec_helpers.py").write_text(HELPERS)
    (folder / "pipeline.py").write_text(PIPELINE)
    module = _import_file((folder / "pipeline.py").resolve())
    assert str(folder) not in sys.path  # as after `filepipe run`: neither is importable by name
    return module


@pytest.fixture(scope="module")
def processes() -> Iterator[BatchExecutor]:
    with executor_from("processes:2") as ex:
        yield ex


@pytest.fixture(scope="module")
def dask_local() -> Iterator[BatchExecutor]:
    pytest.importorskip("distributed")
    with executor_from("dask:local:2") as ex:
        yield ex


@pytest.fixture(params=["processes", "dask"])
def remote(request: pytest.FixtureRequest) -> BatchExecutor:
    return request.getfixturevalue("processes" if request.param == "processes" else "dask_local")


def frames(n: int = 50, seed: int = 0) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    orders = pd.DataFrame({
        "order": np.arange(n, dtype=np.int64),
        "customer": pd.Series([f"c{i % 7}" for i in range(n)], dtype="str"),
        "amount": np.where(rng.random(n) < 0.1, np.nan, rng.normal(100, 30, n)),
        "at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**6, n), "s"),
    })
    customers = pd.DataFrame({"customer": pd.Series([f"c{i}" for i in range(7)], dtype="str"),
                              "region": pd.Categorical(["north", "south"] * 3 + ["east"])})
    return [orders, customers]


def assert_same(got: Any, expected: Any) -> None:
    assert type(got) is type(expected)
    if isinstance(expected, tuple):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            pd.testing.assert_frame_equal(g, e)
    else:
        pd.testing.assert_frame_equal(got, expected)


# --- results ---------------------------------------------------------------------------

def test_results_equal_in_process_ones(remote: BatchExecutor, pipeline: ModuleType) -> None:
    inline = InlineExecutor()
    calls = [(pipeline.enrich, frames(), {"offset": 1.5}),
             (pipeline.enrich, frames(200, seed=1), {}),
             (pipeline.make_adder(10), frames()[:1], {}),  # a closure: a lambda over `k`
             (lambda df: df[df["amount"] > 100], frames()[:1], {})]  # a lambda of this test module
    futures = [remote.submit(f, fr, kw) for f, fr, kw in calls]
    for future, (f, fr, kw) in zip(futures, calls):
        assert_same(future.result(timeout=WAIT), inline.submit(f, fr, kw).result())
    assert len(calls[0][1][0]) == 50  # the caller's frames are not changed


def test_many_batches_in_flight_come_back_each_to_its_future(remote: BatchExecutor,
                                                              pipeline: ModuleType) -> None:
    # later batches finish first; each future still holds its own batch's result
    batches = [frames(5, seed=i)[0] for i in range(3 * remote.slots)]
    futures = [remote.submit(pipeline.slow, [b], {"seconds": 0.05 * (i % 3 == 0)})
               for i, b in enumerate(batches)]
    for future, batch in zip(futures, batches):
        pd.testing.assert_frame_equal(future.result(timeout=WAIT), batch)


def test_user_exception_keeps_type_message_and_place(remote: BatchExecutor, pipeline: ModuleType) -> None:
    df = frames()[0].assign(amount=-5.0)
    future = remote.submit(pipeline.refuse, [df], {})
    exc = future.exception(timeout=WAIT)
    assert isinstance(exc, pipeline.BadAmount)  # the very class, not a copy of it
    assert isinstance(exc, ValueError)
    assert str(exc) == "amount -5.0 is negative"
    local = InlineExecutor().submit(pipeline.refuse, [df], {}).exception()
    assert error_text(exc) == error_text(local)  # recorded just as a local failure would be
    line = PIPELINE.splitlines().index('    raise BadAmount(f"amount {bad} is negative")') + 1
    assert f"pipeline.py:{line} in refuse)" in error_text(exc), error_text(exc)


def test_exception_that_cannot_be_rebuilt_keeps_name_and_message(remote: BatchExecutor,
                                                                  pipeline: ModuleType) -> None:
    exc = remote.submit(pipeline.refuse_oddly, frames()[:1], {}).exception(timeout=WAIT)
    assert type(exc).__name__ == "NeedsTwo" and str(exc) == "x and y"
    assert error_text(exc).startswith("NeedsTwo: x and y (at ")


def test_function_that_cannot_be_sent_fails_its_batch_clearly(remote: BatchExecutor,
                                                              pipeline: ModuleType) -> None:
    future = remote.submit(pipeline.uses_lock, frames()[:1], {})
    with pytest.raises(PipelineError, match=r"uses_lock cannot be sent to a worker process.*lock"):
        future.result(timeout=WAIT)
    back = remote.submit(pipeline.returns_lock, frames()[:1], {})
    with pytest.raises(StepOutputError, match="returns_lock returned something that cannot be sent back"):
        back.result(timeout=WAIT)


# --- workers that die ----------------------------------------------------------------------

def attempts(marker: Path) -> int:
    path = Path(str(marker) + ".attempts")
    return len(path.read_text().splitlines()) if path.exists() else 0


@killing
@pytest.mark.parametrize("neighbours", [False, True], ids=["alone", "with-neighbours"])
def test_worker_killed_mid_batch_is_retried_once(remote: BatchExecutor, pipeline: ModuleType,
                                                 tmp_path: Path, neighbours: bool) -> None:
    marker = tmp_path / "die-once"
    df = frames()[0]
    others = [frames(20, seed=i)[0] for i in range(remote.slots)] if neighbours else []
    futures = [remote.submit(pipeline.slow, [b], {"seconds": 0.02}) for b in others[:2]]
    killed = remote.submit(pipeline.die_once, [df], {"marker": str(marker)})
    futures += [remote.submit(pipeline.slow, [b], {"seconds": 0.02}) for b in others[2:]]
    pd.testing.assert_frame_equal(killed.result(timeout=WAIT), df.assign(amount=df["amount"] * 2))
    assert attempts(marker) == 2  # killed once, then run once more: one result
    for future, batch in zip(futures, others):  # the batches beside it are not lost
        pd.testing.assert_frame_equal(future.result(timeout=WAIT), batch)


@killing
def test_worker_that_always_dies_gives_worker_lost_error(remote: BatchExecutor, pipeline: ModuleType,
                                                         tmp_path: Path) -> None:
    marker = tmp_path / "die-always"
    future = remote.submit(pipeline.die_always, frames()[:1], {"marker": str(marker)})
    with pytest.raises(WorkerLostError, match="died"):
        future.result(timeout=WAIT)
    assert RETRIES >= 1 and attempts(marker) == RETRIES + 1
    # and the executor goes on working
    pd.testing.assert_frame_equal(remote.submit(pipeline.slow, frames()[:1], {"seconds": 0}).result(timeout=WAIT),
                                  frames()[0])


@killing
def test_process_pool_blames_only_the_batch_that_kills_its_worker(pipeline: ModuleType, tmp_path: Path) -> None:
    # innocent batches in the pool when it breaks are rerun, one at a time, and succeed
    marker = tmp_path / "die-always"
    with ProcessExecutor(2, retries=1) as ex:
        batches = [frames(10, seed=i)[0] for i in range(5)]
        futures = [ex.submit(pipeline.slow, [b], {"seconds": 0.1}) for b in batches[:2]]
        killer = ex.submit(pipeline.die_always, frames()[:1], {"marker": str(marker)})
        futures += [ex.submit(pipeline.slow, [b], {"seconds": 0.1}) for b in batches[2:]]
        with pytest.raises(WorkerLostError):
            killer.result(timeout=WAIT)
        for future, batch in zip(futures, batches):
            pd.testing.assert_frame_equal(future.result(timeout=WAIT), batch)
        assert 2 <= attempts(marker) <= 3  # twice alone (retries=1), once more if not alone at first


# --- the executors themselves ---------------------------------------------------------------

def test_inline_runs_in_the_calling_thread_at_once(pipeline: ModuleType) -> None:
    ex = executor_from(None)
    assert isinstance(ex, InlineExecutor) and ex.slots == 1 and ex.name == "in-process"
    seen: list[int] = []
    future = ex.submit(lambda df: seen.append(threading.get_ident()) or df, frames()[:1], {})
    assert future.done() and seen == [threading.get_ident()]
    assert isinstance(ex.submit(pipeline.refuse, frames()[:1], {}).exception(), pipeline.BadAmount)
    assert executor_from("inline").name == executor_from("in-process").name == "in-process"
    assert executor_from(ex) is ex


def test_slots_and_names(dask_local: BatchExecutor) -> None:
    with executor_from("processes:3") as ex:
        assert (ex.name, ex.slots) == ("processes:3", 6)
    with executor_from("processes") as ex:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        assert ex.slots == 2 * (cpus or 1)
    assert (dask_local.name, dask_local.slots) == ("dask:local:2", 4)


@pytest.mark.parametrize("spec", ["process:2", "processes:0", "processes:two", "threads", "dask",
                                  "dask:remote", "dask://scheduler", "http://host:8786", ""])
def test_bad_specs_say_what_is_accepted(spec: str) -> None:
    with pytest.raises(PipelineError) as info:
        executor_from(spec)
    text = str(info.value)
    assert repr(spec) in text
    if spec != "processes:0":
        assert "processes:N" in text and "dask://HOST:PORT" in text and "dask:local" in text


def test_dask_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(PipelineError, match=r"pip install 'filepipe\[dask\]'"):
        executor_from("dask://localhost:8786")


def test_unreachable_scheduler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr("filepipe.executor._CONNECT_TIMEOUT", 1)
    with pytest.raises(FilepipeError, match=r"cannot reach the dask scheduler at tcp://127\.0\.0\.1:1\b"):
        executor_from("dask://127.0.0.1:1")


def test_a_cluster_without_workers_fails_the_waiting_batches(pipeline: ModuleType) -> None:
    """A scheduler whose workers all went (or never came) would keep a batch waiting
    forever: after `no_workers_wait` seconds without a worker, the batches waiting fail
    with WorkerLostError saying so, and the executor still closes."""
    distributed = pytest.importorskip("distributed")
    from filepipe.executor import DaskExecutor

    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster:
        ex = DaskExecutor(cluster.scheduler_address, no_workers_wait=1.0)
        try:
            started = time.monotonic()
            waiting = [ex.submit(pipeline.enrich, frames(seed=i), {}) for i in range(3)]
            for future in waiting:
                with pytest.raises(WorkerLostError, match=r"no worker for 1 s.*start workers"):
                    future.result(timeout=WAIT)
            assert time.monotonic() - started < 20
            late = ex.submit(pipeline.enrich, frames(), {})  # still none: fails at once
            with pytest.raises(WorkerLostError, match=r"no worker"):
                late.result(timeout=0.5)
            cluster.scale(1)  # a worker comes: batches run again
            cluster.wait_for_workers(1, timeout=WAIT)
            time.sleep(1)  # the executor looks every quarter of `no_workers_wait`
            assert_same(ex.submit(pipeline.enrich, frames(), {}).result(timeout=WAIT),
                        pipeline.enrich(*frames()))
        finally:
            ex.close()


def test_close_cancels_what_was_not_consumed(pipeline: ModuleType) -> None:
    ex = ProcessExecutor(1)
    futures = [ex.submit(pipeline.slow, frames()[:1], {"seconds": 0.3}) for _ in range(4)]
    start = time.monotonic()
    ex.close()
    assert time.monotonic() - start < WAIT
    assert any(f.cancelled() for f in futures)
    assert all(f.done() for f in futures)
    with pytest.raises(FilepipeError, match="closed"):
        ex.submit(pipeline.slow, frames()[:1], {"seconds": 0})
    ex.close()  # twice is fine


def test_cancelled_batches_are_not_run(remote: BatchExecutor, pipeline: ModuleType, tmp_path: Path) -> None:
    # as the engine does when a step stops early: the batches it will not write are cancelled
    log = tmp_path / "log"
    futures = [remote.submit(pipeline.logged, frames()[:1], {"log": str(log), "seconds": 0.3})
               for _ in range(8)]
    time.sleep(0.1)
    assert all(f.cancel() for f in futures[6:])  # not yet started anywhere
    for f in futures[4:6]:
        f.cancel()
    for f in futures[:4]:
        if not f.cancelled():
            f.result(timeout=WAIT)
    time.sleep(1)  # what was cancelled would have run by now
    runs = len(log.read_text().splitlines())
    assert runs <= 6, runs
    assert remote.submit(pipeline.slow, frames()[:1], {"seconds": 0}).result(timeout=WAIT) is not None


@killing
def test_workers_of_a_coordinator_killed_hard_exit(tmp_path: Path) -> None:
    # otherwise they wait forever on their task queue (each holding its own end of it open)
    script = tmp_path / "coordinator.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        import pandas as pd
        from filepipe.executor import executor_from

        def pid(df):
            time.sleep(0.2)
            return os.getpid()

        if __name__ == "__main__":
            ex = executor_from("processes:2")
            futures = [ex.submit(pid, [pd.DataFrame()], {}) for _ in range(6)]
            print(*sorted({f.result() for f in futures}), flush=True)
            ex.submit(pid, [pd.DataFrame()], {})
            time.sleep(WAIT)
    """).replace("WAIT", str(WAIT)))
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(workers) >= 1
    finally:
        proc.kill()
        proc.wait(timeout=WAIT)

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        stat = Path(f"/proc/{pid}/stat")  # a zombie nobody reaped has exited
        return not (stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z")

    deadline = time.monotonic() + 15
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if alive(w)]


def test_importing_the_module_imports_nothing_heavy() -> None:
    code = textwrap.dedent("""
        import sys
        import filepipe.executor
        ex = filepipe.executor.executor_from("processes:2")
        heavy = {"dask", "distributed", "cloudpickle", "pandas", "multiprocessing"} & set(sys.modules)
        print(sorted(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@killing
def test_worker_killed_by_the_system_is_not_fatal_to_an_idle_pool(pipeline: ModuleType) -> None:
    # a worker that dies between batches (killed from outside) breaks the pool: the next
    # batch starts a new one
    with ProcessExecutor(1) as ex:
        assert ex.submit(pipeline.slow, frames()[:1], {"seconds": 0}).result(timeout=WAIT) is not None
        pid = ex.submit(lambda df: os.getpid(), frames()[:1], {}).result(timeout=WAIT)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        pd.testing.assert_frame_equal(ex.submit(pipeline.slow, frames()[:1], {"seconds": 0}).result(timeout=WAIT),
                                      frames()[0])
