"""Resume without a shared filesystem: rank 0 chooses the checkpoint; a rank that lacks the file gets
the state broadcast from rank 0 (stad.engine.checkpoint.read_checkpoint_everywhere), 2 gloo ranks."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, folder: str, hide: bool) -> None:
    from stad.engine import checkpoint as ckpt
    from stad.engine.distributed import init_process_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = init_process_group(rank, 2, rank, "gloo", 60)
    mine = Path(folder) / f"rank{rank}"  # each rank's own result_path
    path = ckpt.latest_checkpoint(mine) if rank == 0 else Path("/nowhere/ignored.pth")
    if hide and rank == 1:  # this rank's disk does not have rank 0's file
        real = Path.is_file
        Path.is_file = lambda self: False if self.name.startswith("ckpt_") else real(self)  # type: ignore[method-assign]
    chosen, state = ckpt.read_checkpoint_everywhere(ctx, path)
    torch.save({"chosen": str(chosen), "step": state["mid_epoch"]["step"], "w": state["state_dict"]["w"]},
               Path(folder) / f"out{rank}.pt")
    torch.distributed.destroy_process_group()


def test_rank_without_the_file_receives_rank_0s_checkpoint(tmp_path):
    from stad.engine import checkpoint as ckpt

    model = torch.nn.Module()
    model.register_buffer("w", torch.arange(5.0))
    for name, step in (("ckpt_1.pth", None), ("ckpt_2_iter7.pth", 3)):
        ckpt.save_checkpoint(ckpt.checkpoint_dir(tmp_path / "rank0") / name, epoch=2, model=model,
                             mid_epoch={"step": step, "iteration": 7, "loss_total": 0.0, "boxes": 0} if step else None)
    for hide in (False, True):
        mp.start_processes(_rank, args=(_free_port(), str(tmp_path), hide), nprocs=2, start_method="spawn")
        outs = [torch.load(tmp_path / f"out{r}.pt") for r in (0, 1)]
        for out in outs:
            assert out["chosen"].endswith("rank0/checkpoints/ckpt_2_iter7.pth")  # rank 0's choice, the newest
            assert out["step"] == 3 and torch.equal(out["w"], torch.arange(5.0))
