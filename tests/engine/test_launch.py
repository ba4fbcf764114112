"""Launcher: N gloo workers, failure propagation without hangs, port-in-use error."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from stad.engine.launch import LaunchError, LaunchSpec, check_port_free, launch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sum_ranks(ctx, out_dir):
    total = torch.tensor([float(ctx.rank + 1)])
    dist.all_reduce(total)
    Path(out_dir, f"rank{ctx.rank}.txt").write_text(f"{ctx.world_size} {total.item()} {torch.get_num_threads()}")


def _rank1_raises(ctx, out_dir):
    if ctx.rank == 1:
        raise ValueError("boom from rank 1")
    # rank 0 blocks in a collective its peer never joins: only the supervisor can end it
    dist.all_reduce(torch.zeros(1))
    time.sleep(60)


def test_two_workers_all_reduce(tmp_path):
    spec = LaunchSpec(nproc_per_node=2, master_port=_free_port(), threads_per_worker=1)
    assert launch(_sum_ranks, spec, (str(tmp_path),)) == 0
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "2 3.0 1"


def test_failing_worker_ends_job_with_its_traceback(tmp_path, capfd):
    spec = LaunchSpec(nproc_per_node=2, master_port=_free_port(), timeout_s=120, threads_per_worker=1)
    start = time.monotonic()
    code = launch(_rank1_raises, spec, (str(tmp_path),))
    elapsed = time.monotonic() - start
    err = capfd.readouterr().err
    assert code == 1
    assert elapsed < 40, f"job took {elapsed:.0f}s to fail"
    assert "worker rank 1 failed" in err
    assert "ValueError: boom from rank 1" in err


def test_port_in_use_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(LaunchError, match=f"master port {port} .* already in use.*--master_port"):
            check_port_free("127.0.0.1", port)
        with pytest.raises(LaunchError, match="already in use"):
            launch(_sum_ranks, LaunchSpec(nproc_per_node=2, master_port=port), ("unused",))


def test_bad_launch_arguments():
    with pytest.raises(LaunchError, match="node_rank 2"):
        LaunchSpec(nnodes=2, node_rank=2)
    with pytest.raises(LaunchError, match="gloo or nccl"):
        LaunchSpec(backend="mpi")


def _sleep_forever(ctx, out_dir):
    Path(out_dir, f"pid{ctx.rank}").write_text(str(os.getpid()))
    time.sleep(300)


def test_sigterm_to_launcher_stops_workers(tmp_path):
    here = str(Path(__file__).parent)
    script = (f"import sys; sys.path[:0] = {[here] + sys.path!r}\n"
              "from stad.engine.launch import LaunchSpec, launch\n"
              f"from {__name__} import _sleep_forever\n"
              f"sys.exit(launch(_sleep_forever, LaunchSpec(nproc_per_node=2, master_port={_free_port()}, "
              f"threads_per_worker=1), ({str(tmp_path)!r},)))\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("pid*"))) < 2 and parent.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [int(p.read_text()) for p in tmp_path.glob("pid*")]
    assert len(pids) == 2
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) != 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
