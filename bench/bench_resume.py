"""Time to resume from a mid-epoch checkpoint (train.save_every_iters), through main.py.

1. A fresh run (`save_every_iters=1`) is started and killed with SIGKILL (launcher and workers) as soon
   as the checkpoint after global step ``--kill-at`` exists: the time from launch to its first
   checkpoint is the *fresh start to first step*.
2. ``main.py --resume`` is started on the same result_path: *resume to "resumed from"* is the time
   until the log says it restored the checkpoint (process start, imports, data preflight, model build,
   reading + broadcasting decision, optimizer/schedule/RNG restore); *resume to first step* is the time
   until the first checkpoint after the resumed step exists (one more step, plus the sampler skip:
   no clips are decoded for the skipped steps). Then the resumed run is killed too.
3. In-process: checkpoint size, `save_checkpoint` (atomic write + fsync) and `read_checkpoint` times.

    python bench/bench_resume.py --data /tmp/toyS [--config configs/toy/demo_acar.yaml] [--nproc 2]
                                 [--kill-at 3] [--repeats 2] [--append]
"""
from __future__ import annotations

import argparse
import datetime
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(config: Path, data: Path, result: Path, nproc: int, *extra: str) -> list[str]:
    sets = [f"result_path={result}", f"train.root_path={data}/frames", f"train.annotation_path={data}/annotations/train.pkl",
            f"val.root_path={data}/frames", f"val.annotation_path={data}/annotations/val.pkl",
            f"val.eval_mAP.labelmap={data}/labelmap.pbtxt", f"val.eval_mAP.groundtruth={data}/val.csv",
            f"val.eval_mAP.exclusions={data}/val_excluded_timestamps.csv",
            "train.n_epochs=3", "train.val_freq=100", "train.save_freq=100", "train.save_every_iters=1",
            "train.batch_size=1"]
    cmd = [sys.executable, "main.py", "--config", str(config), "--nproc_per_node", str(nproc),
           "--master_port", str(_free_port()), *extra]
    for item in sets:
        cmd += ["--set", item]
    return cmd


def _wait(predicate, proc: subprocess.Popen, timeout: float = 600) -> float:
    start = time.monotonic()
    while not predicate():
        if proc.poll() is not None or time.monotonic() - start > timeout:
            raise RuntimeError(f"main.py ended (exit {proc.returncode}) or timed out before the event")
        time.sleep(0.01)
    return time.monotonic()


def _run_once(config: Path, data: Path, nproc: int, kill_at: int) -> dict:
    from stad.engine import checkpoint as ckpt

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory(prefix="bench_resume_") as tmp:
        result = Path(tmp) / "run"
        names = lambda: {p.name for p in ckpt.list_checkpoints(result)}  # noqa: E731

        def popen(*extra: str) -> subprocess.Popen:
            return subprocess.Popen(_command(config, data, result, nproc, *extra), cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                    stdin=subprocess.DEVNULL)

        t0 = time.monotonic()
        proc = popen()
        t_first = _wait(lambda: bool(names()), proc) - t0
        _wait(lambda: any(n.endswith(f"_iter{kill_at}.pth") for n in names()), proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        latest = ckpt.latest_checkpoint(result)
        before = names()
        log = result / "log.txt"
        size = log.stat().st_size
        t0 = time.monotonic()
        proc = popen("--resume")
        t_restored = _wait(lambda: "resumed from" in log.read_text()[size:], proc) - t0
        t_step = _wait(lambda: bool(names() - before), proc) - t0
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # in-process: read and write of the same checkpoint
        t = time.perf_counter()
        state = ckpt.read_checkpoint(latest)
        t_read = time.perf_counter() - t
        import torch

        t = time.perf_counter()
        with open(Path(tmp) / "copy.pth", "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        t_write = time.perf_counter() - t
        return {"checkpoint": latest.name, "mb": latest.stat().st_size / 2**20, "fresh_first_step": t_first,
                "resume_restored": t_restored, "resume_first_step": t_step, "read": t_read, "write": t_write,
                "step": state["mid_epoch"]["step"] if state.get("mid_epoch") else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a toy set (python -m stad.data.toy --out DIR)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "toy" / "demo_acar.yaml")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--kill-at", type=int, default=3, help="global step whose checkpoint triggers the kill")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--append", action="store_true", help="append the table to bench/RESULTS.md")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if line.startswith("Model name")), "?")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for i in range(args.repeats):
        load = os.getloadavg()
        r = _run_once(args.config, args.data, args.nproc, args.kill_at)
        rows.append(f"| {i + 1} | {load[0]:.2f} | {r['checkpoint']} (step {r['step']} of its epoch) | {r['mb']:.1f} | "
                    f"{r['fresh_first_step']:.1f} | {r['resume_restored']:.1f} | {r['resume_first_step']:.1f} | "
                    f"{r['read']:.3f} | {r['write']:.3f} |")
        print(rows[-1], flush=True)
    command = " ".join(["python bench/bench_resume.py", "--data", str(args.data), "--config",
                        str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
                        "--nproc", str(args.nproc), "--kill-at", str(args.kill_at), "--repeats", str(args.repeats)])
    text = "\n".join([
        f"\n## bench_resume: time to resume from a mid-epoch checkpoint — {now}\n",
        f"`{command}` on {cpu} ({os.cpu_count()} cores); main.py with {args.nproc} gloo processes, OMP_NUM_THREADS=1, "
        "`train.save_every_iters=1`, batch 1. Seconds of wall time; load = 1-min load average before the run.\n",
        "| run | load | resumed from | MB | fresh start → first step | resume → restored | resume → first step | "
        "read ckpt | write ckpt |",
        "|---|---|---|---|---|---|---|---|---|", *rows, ""])
    print(text)
    if args.append:
        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
