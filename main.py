"""Train or evaluate an action detector: ``python main.py --config configs/x.yaml --nproc_per_node N``.

Flags follow ACAR-Net's main.py; ``--set a.b=c`` overrides config keys, ``--resume`` continues from
the newest checkpoint in ``result_path``. Also runs one rank per process under torchrun or srun (SLURM).
"""
from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Spatio-temporal action detection: training and evaluation")
    parser.add_argument("--config", required=True, help="YAML config (see docs/engine.md)")
    parser.add_argument("--nproc_per_node", type=int, default=1, help="worker processes on this node")
    parser.add_argument("--backend", choices=("nccl", "gloo"), default=None,
                        help="process-group backend (default: nccl with CUDA, gloo on CPU)")
    parser.add_argument("--master_addr", default=None,
                        help="address of the rank-0 node (default: MASTER_ADDR, else under srun the step's first "
                             "node, else 127.0.0.1)")
    parser.add_argument("--master_port", type=int, default=None,
                        help="port of the rank-0 node (default: MASTER_PORT, else under srun 15000 + SLURM_JOB_ID "
                             "mod 15000, else 31114)")
    parser.add_argument("--nnodes", type=int, default=1, help="number of nodes (under srun: from SLURM)")
    parser.add_argument("--node_rank", type=int, default=0, help="rank of this node (under srun: from SLURM)")
    parser.add_argument("--launcher", choices=("auto", "local", "slurm"), default="auto",
                        help="auto: torchrun's or srun's variables when present, else spawn --nproc_per_node "
                             "workers here; local: ignore SLURM's variables; slurm: require them")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in result_path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.n_epochs=3 (repeatable)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds any rank may wait for its peers (default: config dist.timeout_s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from stad.config import ConfigError, load_config

    try:
        config = load_config(args.config, args.overrides)
        from stad.engine.config_check import check_config

        check_config(config)  # every kwargs mapping against its target, before any worker starts
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2

    from stad.engine.launch import LaunchError, LaunchSpec, launch
    from stad.engine.storage import run_checked  # each rank: can it read its inputs? then runner.run

    try:
        spec = LaunchSpec(nproc_per_node=args.nproc_per_node, backend=args.backend, master_addr=args.master_addr,
                          master_port=args.master_port, nnodes=args.nnodes, node_rank=args.node_rank,
                          timeout_s=args.timeout or config.dist.timeout_s, launcher=args.launcher)
        return launch(run_checked, spec, (config, args.resume))
    except LaunchError as err:
        print(f"launch error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
