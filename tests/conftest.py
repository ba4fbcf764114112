import os
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _restore_sigchld_handler():
    """Each test leaves the SIGCHLD handler as it found it.

    torch's DataLoader installs a process-wide Python SIGCHLD handler the first time it starts worker
    processes and never removes it. In a process that later ran OpenVINO inference, the exit of any
    child process then crashed the process (SIGSEGV in CPython, e.g. in `subprocess.run`): the xdist
    worker that ran `tests/data/test_decode_threads.py` before `tests/detect/test_runtimes.py` died.
    Reproduced without xdist: `pytest -p no:xdist tests/data/test_decode_threads.py::
    test_auto_threads_are_inline_in_workers 'tests/detect/test_runtimes.py::
    test_runtime_gives_the_torch_boxes[openvino]' tests/detect/test_runtimes.py::
    test_export_and_runtimes_never_touch_the_network_or_pip` exits with 139; with the handler
    restored after each test it passes.
    """
    before = signal.getsignal(signal.SIGCHLD)
    yield
    if signal.getsignal(signal.SIGCHLD) is not before:
        signal.signal(signal.SIGCHLD, before)
