"""Where training reports to: rich progress bars, ``metrics.jsonl``, and TensorBoard when installed.

One :class:`Tracker` per run. ``metrics.jsonl`` gets one JSON object per logged step and per epoch,
tagged with the stage id (``seed0/align-cromotex-multilabel``), so ``trainer report`` draws the
training curves from it. Only rank 0 tracks; other ranks get a silent tracker.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from trainer.checkpoint import json_safe

log = logging.getLogger(__name__)


class Tracker:
    """Progress bars and metric logs of one run directory."""

    def __init__(self, run_dir: Path | None, *, progress: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self._file = None
        self._tb = None
        self._tb_enabled = tensorboard and run_dir is not None
        self._progress: Progress | None = None
        self._seen: set[Any] = set()
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if progress and run_dir is not None:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                      console=Console(stderr=True), transient=False)
            self._progress.start()

    # --- progress ------------------------------------------------------------------------------------
    def task(self, description: str, total: int, completed: int = 0) -> Any:
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total, completed=completed, info="")

    def advance(self, task: Any, info: str = "", steps: int = 1) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, advance=steps, info=info)

    def finish(self, task: Any, info: str = "") -> None:
        if self._progress is not None and task is not None:
            t = self._progress.tasks[[x.id for x in self._progress.tasks].index(task)]
            self._progress.update(task, completed=t.total, info=info)

    def message_once(self, key: Any, text: str) -> None:
        """:meth:`message`, only the first time ``key`` is given in this run."""
        if key not in self._seen:
            self._seen.add(key)
            self.message(text)

    def message(self, text: str) -> None:
        """A line above the bars (or to the log when there are none)."""
        if self._progress is not None:
            self._progress.console.print(text)
        elif self.run_dir is not None:
            log.info(text)

    # --- metrics -------------------------------------------------------------------------------------
    def log(self, stage: str, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl (and TensorBoard scalars for its numbers)."""
        if self._file is None:
            return
        row = json_safe({"time": round(time.time(), 3), "stage": stage, **record})
        self._file.write(json.dumps(row, sort_keys=True, allow_nan=False) + "\n")
        self._file.flush()
        writer = self._writer()
        if writer is not None:
            step = int(record.get("global_step", record.get("epoch", 0)))
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("global_step", "epoch", "step"):
                    writer.add_scalar(f"{stage}/{record.get('split', 'train')}/{key}", value, step)

    def _writer(self) -> Any:
        if not self._tb_enabled:
            return None
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
            except ImportError:
                self._tb_enabled = False
                return None
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._tb

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def silent() -> Tracker:
    """A tracker that reports nothing (ranks other than 0, library use)."""
    return Tracker(None, progress=False, tensorboard=False)
