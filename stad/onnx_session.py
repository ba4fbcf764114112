"""One ONNX Runtime CPU session setup for every exported network (the person detector, the action model).

No torch import; onnxruntime is imported when a session is made.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def onnx_cpu_session(path: str | Path, threads: int = 1) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU with ``threads`` intra-op threads, sequential
    execution and every graph optimisation; with one thread it runs in the calling thread."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads > 1:  # idle pool threads spinning at every op steal the cores of a shared machine
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
