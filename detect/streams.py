"""Concurrent inference streams: a detector's batches run on N model replicas, results in input order.

On a CPU, torch's intra-op parallelism splits every convolution across threads and waits at a
barrier after each one. yolov8n's layers are small, so much of that time is spent waiting, and a
core taken by another process stalls every layer. Running N independent single-threaded streams,
each on its own batches, keeps every core busy instead (inter-op parallelism). Torch ops release
the GIL, so plain Python threads suffice.

Each stream owns a replica of the detector (`PersonDetector.replica`): ultralytics' Detect head
caches anchors for the last input shape, so one module shared between threads is not safe.
Results come back in submission order whatever the number of streams, so the output is the same.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Auto mode never starts more streams than this: every stream holds a model replica and a batch of
# activations (~0.1-0.3 GB at 640 px, batch 16), and one decoding thread feeds them all.
MAX_AUTO_STREAMS = 4
CPU_BATCH, ACCELERATOR_BATCH = 4, 16
CPU_BATCH_EXPORTED = 2  # onnx/openvino runtimes on a CPU


def usable_cpus() -> int:
    """CPUs this process may run on (affinity mask / cgroup cpuset aware where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def plan_streams(device: str, streams: int = 0, threads: int = 0) -> tuple[int, int]:
    """``(streams, threads per stream)`` for a run.

    ``threads``: CPU threads in total (0: every usable CPU). ``streams``: concurrent
    inference streams (0: auto). Auto is one stream on an accelerator (batching is what helps
    there), and on a CPU one single-threaded stream per core up to `MAX_AUTO_STREAMS`, the rest of
    the threads shared out between them. The same plan serves every network runtime
    (`detect.runtimes`; measured in bench/RESULTS.md): threads per stream are that runtime's
    intra-op threads.
    """
    if streams < 0 or threads < 0:
        raise ValueError(f"streams and threads must be >= 0, got streams={streams}, threads={threads}")
    total = threads or usable_cpus()
    if streams == 0:
        streams = 1 if not str(device).startswith("cpu") else min(total, MAX_AUTO_STREAMS)
    return streams, max(1, total // streams)


def plan_batch(device: str, batch: int = 0, runtime: str = "torch") -> int:
    """Keyframes per forward pass: ``batch``, or with 0 (auto) 16 on an accelerator, and on a CPU
    4 for the torch runtime and `CPU_BATCH_EXPORTED` for onnx/openvino.

    On a CPU a single-threaded yolov8n forward costs least per image at batch 2-8 in torch, at
    batch 1-2 in ONNX Runtime and OpenVINO (bench/RESULTS.md), and small batches leave the
    streams evenly loaded at the end of a run.
    """
    if batch < 0:
        raise ValueError(f"--batch must be >= 0 (0: auto), got {batch}")
    if not str(device).startswith("cpu"):
        return batch or ACCELERATOR_BATCH
    return batch or (CPU_BATCH if runtime == "torch" else CPU_BATCH_EXPORTED)


def _set_thread_torch_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)  # OpenMP's thread count is per calling thread: this stream only


class StreamPool:
    """Run ``fn(replica, item)`` for a stream of items on ``streams`` replicas concurrently.

    ``make_replica()`` builds one independent worker state per stream (called here, up front).
    With one stream everything runs in the calling thread, with ``replicas[0]``.
    """

    def __init__(self, make_replica: Callable[[], Any], streams: int, threads_per_stream: int = 1) -> None:
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        self.streams, self.threads_per_stream = int(streams), int(threads_per_stream)
        self.replicas = [make_replica() for _ in range(self.streams)]

    def map(self, fn: Callable[[Any, T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        """Yield ``(item, fn(replica, item))`` in the order of ``items``.

        At most two items per stream are in flight (bounded memory). An error raised by ``fn``
        is re-raised here, and the items not started yet are cancelled.
        """
        if self.streams == 1:
            for item in items:
                yield item, fn(self.replicas[0], item)
            return
        free = list(self.replicas)
        lock = threading.Lock()
        local = threading.local()

        def start_stream() -> None:
            _set_thread_torch_threads(self.threads_per_stream)
            with lock:
                local.replica = free.pop()

        def run(item: T) -> R:
            return fn(local.replica, item)

        previous = _torch_threads()
        pending: deque[tuple[T, Future]] = deque()
        pool = ThreadPoolExecutor(self.streams, thread_name_prefix="inference-stream", initializer=start_stream)
        try:
            for item in items:
                if len(pending) >= 2 * self.streams:
                    done_item, future = pending.popleft()
                    yield done_item, future.result()
                pending.append((item, pool.submit(run, item)))
            while pending:
                done_item, future = pending.popleft()
                yield done_item, future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            # torch.set_num_threads in a stream also sets the default of threads started later;
            # give the caller back the count it had.
            _set_thread_torch_threads(previous)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
