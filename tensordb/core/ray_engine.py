"""``engine="ray"``: a query's scan divided over Ray tasks, merged on the driver.

The driver pins one snapshot, plans each query over it (reading nothing) and asks
query_lang's :mod:`~query_lang.distributed` how to divide it. It sends every task the
same work order, put into Ray's object store once: the snapshot's address (store
location and chunk keys, never chunk data), the queries, the TQL functions they call
that a worker would not know, and what those functions read of the dataset beyond its
columns (``Function.shared_state``: for Deep Memory, the driver's model). Each task opens
the snapshot itself, runs its part over a range of chunk units and sends back only that
part's best rows and keys; the driver merges them into exactly the local answer.

A task whose worker dies is retried by Ray (``TASK_RETRIES`` times); if it still fails,
the query raises :class:`~tensordb.errors.WorkerFailedError`. An error inside a task (a
bad query, a damaged file) surfaces as itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from query_lang import (
    Function,
    Plan,
    function_names,
    get_function,
    parse,
    plan_query,
    register_function,
    unregister_function,
)
from query_lang.ast import Query
from query_lang.distributed import Part, called_functions, divide, merge, run_parts
from query_lang.executor import QueryResult, execute_many, vector_groups

from ..errors import SampleError, WorkerFailedError
from .engines import import_ray
from .scan import Selection, TableSource, selection_of, storage_errors_surface
from .snapshot_address import SnapshotAddress, snapshot_address

if TYPE_CHECKING:
    from .table import Table

#: How many times Ray reruns a task whose worker died before the query fails.
TASK_RETRIES = 2
#: Modules whose TQL functions every worker registers itself (by importing tensordb).
BUILTIN_MODULES = ("query_lang", "tensordb")


@dataclass(frozen=True)
class WorkOrder:
    """What every task of one call is sent (once, through Ray's object store)."""

    address: SnapshotAddress
    queries: list[Query]
    exact: bool
    search_params: dict[str, Any]
    #: TQL functions the queries call that a worker does not register by importing tensordb.
    functions: list[Function] = field(default_factory=list)
    #: What the functions the queries call read of the dataset beyond columns (``Function.shared_state``).
    shared_states: dict[str, Any] = field(default_factory=dict)

    def source(self) -> TableSource:
        """The snapshot, opened in this (worker) process, as a query source computing as the driver does."""
        _install_functions(self.functions)
        table = self.address.open()
        for name, state in self.shared_states.items():
            get_function(name).use_shared_state(table._root, state)
        return TableSource(table, self.exact, self.search_params)


def run_queries_on_ray(table: Table, texts: Sequence[str | Query], exact: bool,
                       search_params: Mapping[str, Any] | None, num_workers: int | None) -> list[Selection]:
    """Run the queries over ``table`` on Ray; the selections equal those of a local run."""
    ray = import_ray("engine='ray'")
    if not ray.is_initialized():
        ray.init()  # as Ray Data does: no cluster given, a local one
    pinned = table.snapshot() if table is table._root else table  # planning and workers: one snapshot
    driver_source = TableSource(pinned, exact, search_params)
    queries = [parse(t) if isinstance(t, str) else t for t in texts]
    with storage_errors_surface():
        plans = [plan_query(q, driver_source) for q in queries]
    called = set().union(*(called_functions(q) for q in queries))
    order = WorkOrder(snapshot_address(pinned, "engine='ray'"), queries, exact, dict(search_params or {}),
                      _shipped_functions(ray, called), _shared_states(called, pinned._root))
    parts = _worker_count(ray, num_workers)
    divisions = [divide(plan, driver_source, parts) for plan in plans]
    results = _Dispatch(ray, order, divisions, _whole_tasks(plans, divisions, parts)).run()
    with storage_errors_surface():
        merged = [r if isinstance(r, QueryResult) else merge(plans[i], driver_source, r)
                  for i, r in enumerate(results)]
    return [selection_of(driver_source, r) for r in merged]


def _worker_count(ray: Any, num_workers: int | None) -> int:
    if num_workers is not None:
        return int(num_workers)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _shipped_functions(ray: Any, called: set[str]) -> list[Function]:
    """The called TQL functions a worker would not know, each checked to travel (pickled) to it."""
    shipped = []
    for name in sorted(called & set(function_names())):
        fn = get_function(name)
        if type(fn).__module__.startswith(BUILTIN_MODULES):
            continue
        try:
            ray.cloudpickle.dumps(fn)
        except Exception as e:  # noqa: BLE001 - any failure to pickle means it cannot reach a worker
            raise SampleError(f"engine='ray': the TQL function {name!r} cannot be sent to the Ray workers "
                              f"({type(e).__name__}: {e}); make it picklable, or query with engine='local'"
                              ) from None
        shipped.append(fn)
    return shipped


def _shared_states(called: set[str], owner: object) -> dict[str, Any]:
    states = {}
    for name in sorted(called & set(function_names())):
        state = get_function(name).shared_state(owner)
        if state is not None:
            states[name] = state
    return states


#: Names of the functions the last work order in this (worker) process installed.
_INSTALLED: set[str] = set()


def _install_functions(functions: list[Function]) -> None:
    """Register exactly the functions a work order ships, replacing what an earlier order installed."""
    for name in _INSTALLED - {fn.name for fn in functions}:
        unregister_function(name)
    for fn in functions:
        register_function(fn, replace=True)
    _INSTALLED.clear()
    _INSTALLED.update(fn.name for fn in functions)


def _whole_tasks(plans: list[Plan], divisions: list[list[tuple[int, int]]], parts: int) -> list[list[int]]:
    """The queries that run whole, dealt out over up to ``parts`` tasks; top-k searches that a local run
    would batch (one shared scan or index search) stay together, so that they compute alike."""
    whole = [i for i, d in enumerate(divisions) if not d]
    grouped = [[whole[j] for j in members] for members in vector_groups([plans[i] for i in whole])]
    in_group = {i for group in grouped for i in group}
    items = grouped + [[i] for i in whole if i not in in_group]
    tasks: list[list[int]] = [[] for _ in range(min(parts, len(items)))]
    for n, item in enumerate(items):
        tasks[n % len(tasks)] += item
    return [sorted(t) for t in tasks]


class _Dispatch:
    """The tasks of one call: the whole queries in a few tasks, and each range of the divided ones in one."""

    def __init__(self, ray: Any, order: WorkOrder, divisions: list[list[tuple[int, int]]],
                 whole_tasks: list[list[int]]) -> None:
        self.ray = ray
        self.divisions = divisions
        self.whole_tasks = whole_tasks
        # Queries divided alike share their tasks (several top-k searches then share one scan per range).
        self.ranges = sorted({r for d in divisions for r in d})
        self.order_ref = ray.put(order)

    def run(self) -> list[QueryResult | list[Part]]:
        whole_task, part_task = _remote_tasks(self.ray)
        refs, labels = [], []
        for members in self.whole_tasks:
            refs.append(whole_task.remote(self.order_ref, members))
            labels.append(f"queries {members} (whole)")
        for lo, hi in self.ranges:
            refs.append(part_task.remote(self.order_ref, self._members(lo, hi), (lo, hi)))
            labels.append(f"rows {lo}..{hi}")
        return self._assembled(_gathered(self.ray, refs, labels))

    def _members(self, lo: int, hi: int) -> list[int]:
        return [i for i, d in enumerate(self.divisions) if (lo, hi) in d]

    def _assembled(self, answers: list[Any]) -> list[QueryResult | list[Part]]:
        out: list[Any] = [None] * len(self.divisions)
        for members, results in zip(self.whole_tasks, answers, strict=False):
            for i, result in zip(members, results, strict=True):
                out[i] = result
        for (lo, hi), parts in zip(self.ranges, answers[len(self.whole_tasks):], strict=True):
            for i, part in zip(self._members(lo, hi), parts, strict=True):
                out[i] = [*(out[i] or []), part]
        return out


_REMOTE_TASKS: list[Any] = []


def _remote_tasks(ray: Any) -> tuple[Any, Any]:
    """The two Ray tasks, made once per process (each new remote function is exported to the cluster again)."""
    if not _REMOTE_TASKS:
        options = {"max_retries": TASK_RETRIES, "retry_exceptions": False}
        _REMOTE_TASKS.extend([ray.remote(_run_whole).options(**options), ray.remote(_run_parts).options(**options)])
    return _REMOTE_TASKS[0], _REMOTE_TASKS[1]


#: Ray's errors that mean a task's worker (or its node) is gone, not that the task failed.
WORKER_DEATHS = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OutOfMemoryError")


def _gathered(ray: Any, refs: list[Any], labels: list[str]) -> list[Any]:
    """The tasks' answers; a task's own error surfaces as itself, any failure of Ray's as WorkerFailedError."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        _cancel(ray, refs)
        cause = e.cause
        if isinstance(cause, BaseException):
            raise cause from None
        raise
    except ray.exceptions.RayError as e:
        failed = _failed_label(ray, refs, labels)
        _cancel(ray, refs)
        what = (f"died, and so did its {TASK_RETRIES} retries" if type(e).__name__ in WORKER_DEATHS
                else "failed in Ray")
        raise WorkerFailedError(f"engine='ray': the worker running {failed} {what} ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}); no result is returned") from None


def _failed_label(ray: Any, refs: list[Any], labels: list[str]) -> str:
    """The first task that has failed (those still running are passed over)."""
    for ref, label in zip(refs, labels, strict=True):
        try:
            ray.get(ref, timeout=0)
        except ray.exceptions.GetTimeoutError:
            continue
        except Exception:  # noqa: BLE001 - the first task that failed is the one named
            return label
    return "a task"


def _cancel(ray: Any, refs: list[Any]) -> None:
    for ref in refs:
        try:
            ray.cancel(ref)
        except Exception:  # noqa: BLE001 - a finished or lost task cannot be cancelled, which is fine
            pass


def _run_whole(order: WorkOrder, members: list[int]) -> list[QueryResult]:
    """Task: queries that run whole, as a local run of them (``execute_many``) runs them."""
    source = order.source()
    with storage_errors_surface():
        return execute_many([order.queries[i] for i in members], source)


def _run_parts(order: WorkOrder, members: list[int], rows_range: tuple[int, int]) -> list[Part]:
    """Task: the queries' parts over one range of rows."""
    source = order.source()
    with storage_errors_surface():
        return run_parts([order.queries[i] for i in members], source, rows_range)
