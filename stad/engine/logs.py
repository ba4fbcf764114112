"""Logging for a run: text log and console on rank 0, TensorBoard scalars, tqdm progress bars."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

LOGGER_NAME = "stad.engine"


def setup_logger(result_path: str | Path | None, is_main: bool) -> logging.Logger:
    """Rank 0 logs INFO to the console and ``result_path/log.txt``; other ranks log warnings only."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if is_main and result_path is not None:
        Path(result_path).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(result_path) / "log.txt", encoding="utf-8")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


class ScalarWriter:
    """TensorBoard scalars under ``result_path/tb`` on rank 0; a no-op elsewhere."""

    def __init__(self, result_path: str | Path, enabled: bool) -> None:
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(result_path) / "tb"))

    def add(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def progress(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on rank 0 (``enabled``), else None."""
    if not enabled:
        return None
    # redirected to a file: a line every 30 s instead of a carriage-return stream
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False, file=sys.stderr,
                mininterval=0.1 if interactive else 30.0)
