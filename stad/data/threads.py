"""Threads that load clips on several cores inside one process.

libjpeg-turbo (simplejpeg), ``cv2.imdecode``, ``cv2.resize``, ``cv2.split`` and ``os.read`` release
the GIL, so the clips of a batch (or the frames of one clip) are built in parallel threads of the
process that reads them - no DataLoader worker processes, no shared-memory transport of the decoded
clips. `ClipThreadPool` runs the shares of one batch; `prefetch` runs a whole main-process loader
in a background thread, a few batches ahead of the consumer.

The pool is created on first use **in each process**: an executor inherited through ``fork`` (a
DataLoader worker) has no live threads and would block forever, so a pool seen from another pid is
discarded and rebuilt; a pickled pool (spawned workers) travels without its threads. No torch here.
"""
from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

THREAD_NAME_PREFIX = "stad-decode"
MAX_AUTO_THREADS = 4


def resolve_decode_threads(decode_threads: int | None) -> int:
    """Threads that decode one clip: ``None`` (auto) -> ``min(4, cpu count)``; 0 and 1 -> 1 (inline).

    Raises ``ValueError`` for anything else than ``None`` or an int >= 0.
    """
    if decode_threads is None:
        return max(1, min(MAX_AUTO_THREADS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1))
    if isinstance(decode_threads, bool) or not isinstance(decode_threads, int) or decode_threads < 0:
        raise ValueError(f"decode_threads must be None (auto), 0/1 (inline) or a thread count > 1, "
                         f"got {decode_threads!r}")
    return max(1, decode_threads)


_LOCAL = threading.local()  # .in_share: this thread is running a share of some map()


class ClipThreadPool:
    """``map(fn, items)`` over ``threads`` threads: the caller runs one share of the items itself and
    ``threads - 1`` pool threads run the others, one task per thread (not per item: a task costs
    tens of microseconds of locking, a 320x240 JPEG decode ~0.3 ms).

    ``threads <= 1`` runs everything inline and never starts a thread. A ``map`` called from inside
    a share (a batch's clips on the threads, each clip reading its frames) runs inline: the threads
    are already busy, and waiting on the pool from a pool thread could deadlock.
    """

    def __init__(self, threads: int) -> None:
        self.threads = int(threads)
        self._executor: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # threads and locks stay in their process
        return {"threads": self.threads}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["threads"])  # type: ignore[misc]

    @property
    def started(self) -> bool:
        """Whether this process has live pool threads."""
        return self._executor is not None and self._pid == os.getpid()

    def _get_executor(self) -> ThreadPoolExecutor:
        if self._pid != os.getpid():  # forked: the parent's executor (and lock state) are not ours
            self._executor, self._pid, self._lock = None, os.getpid(), threading.Lock()
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads - 1, thread_name_prefix=THREAD_NAME_PREFIX)
            return self._executor

    def map(self, fn: Callable[[T], R], items: Sequence[T], contiguous: bool = False) -> list[R]:
        """``[fn(x) for x in items]``, in order, spread over the threads: item ``i`` goes to share
        ``i % shares``, or with ``contiguous`` the shares are consecutive runs of items. The first
        exception raised by ``fn`` is re-raised after every share has finished (no task outlives
        the call)."""
        shares = min(self.threads, len(items))
        if shares <= 1 or getattr(_LOCAL, "in_share", False):
            return [fn(x) for x in items]
        if contiguous:
            bounds = [len(items) * i // shares for i in range(shares + 1)]
            parts = [items[bounds[i]:bounds[i + 1]] for i in range(shares)]
        else:
            parts = [items[i::shares] for i in range(shares)]
        executor = self._get_executor()
        futures: list[Future] = [executor.submit(_run_share, fn, part) for part in parts[1:]]
        error: BaseException | None = None
        try:
            results = [_run_share(fn, parts[0])]
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once the pool threads are done
            error, results = exc, []
        for future in futures:
            try:
                results.append(future.result())
            except BaseException as exc:  # noqa: BLE001
                error = error or exc
        if error is not None:
            raise error
        if contiguous:
            return [r for share in results for r in share]
        out: list[R] = [None] * len(items)  # type: ignore[list-item]
        for i, share in enumerate(results):
            out[i::shares] = share
        return out

    def shutdown(self) -> None:
        """Stop this process's pool threads (waits for running tasks); the next ``map`` restarts them."""
        if self.started:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=True)  # type: ignore[union-attr]
        elif self._pid != os.getpid():
            self._executor = None

    def __del__(self) -> None:
        try:
            self.shutdown()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _run_share(fn: Callable[[T], R], share: Sequence[T]) -> list[R]:
    _LOCAL.in_share = True
    try:
        return [fn(x) for x in share]
    finally:
        _LOCAL.in_share = False


PREFETCH_THREAD_NAME = "stad-prefetch"
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield the items of ``iterable``, produced ``depth`` items ahead by a background thread.

    For a DataLoader without worker processes: its batches (decode threads included) are built
    while the caller consumes the previous one - normalisation, the model - which mostly runs
    without the GIL. An error raised while producing is re-raised in the caller at that item;
    leaving the loop early (``break``, an exception, ``close()``) stops and joins the thread.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth!r}")
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(value, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in iterable:
                if not put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put(_Failure(error))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name=PREFETCH_THREAD_NAME, daemon=True)
    thread.start()
    try:
        while True:
            value = buffer.get()
            if value is _DONE:
                return
            if isinstance(value, _Failure):
                raise value.error
            yield value
    finally:
        stop.set()
        thread.join()
