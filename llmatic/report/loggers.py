"""Per-generation metric loggers (config group ``logger``).

Every logger writes ``metrics.csv`` in the run directory (:class:`CSVLogger`); ``wandb`` and
``tensorboard`` send the same rows to their own sink as well, so figures, ``resume`` and
``llmatic-figures`` never depend on which logger a run chose.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from llmatic.rundir import METRICS, write_failed


class MetricsLogger:
    """Interface: ``start`` once, ``log_generation`` per generation, ``finish`` once."""

    def start(self, run_dir: Path, config: dict[str, Any], resumed: bool = False) -> None:
        """Open the sink."""

    def log_generation(self, metrics: dict[str, Any], step: int) -> None:
        """Record one generation's metrics."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Close the sink."""


class CSVLogger(MetricsLogger):
    """Appends one row per generation to ``metrics.csv`` in the run directory."""

    def __init__(self, *, filename: str = METRICS) -> None:
        self.filename = filename
        self.path: Path | None = None
        self.fields: list[str] | None = None

    def start(self, run_dir: Path, config: dict[str, Any], resumed: bool = False) -> None:
        """Remember where to write; on resume keep the existing header."""
        self.path = Path(run_dir) / self.filename
        if resumed and self.path.exists():
            with open(self.path, newline="") as fh:
                header = next(csv.reader(fh), None)
            self.fields = header

    def log_generation(self, metrics: dict[str, Any], step: int) -> None:
        """Append a row (the header is written with the first row)."""
        assert self.path is not None, "start() first"
        row = {"generation": step, **metrics}
        try:
            if self.fields is None:
                with open(self.path, "w", newline="") as fh:
                    csv.DictWriter(fh, list(row)).writeheader()
                self.fields = list(row)
            with open(self.path, "a", newline="") as fh:
                csv.DictWriter(fh, self.fields, extrasaction="ignore").writerow(row)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # a full disk: stop by name; resume cuts the rows back
            raise write_failed(self.path, exc, self.path.parent) from exc

    def truncate(self, generations: int) -> None:
        """Drop rows after ``generations`` (used when resuming from a checkpoint)."""
        if self.path is None or not self.path.exists():
            return
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= generations]
        with open(self.path, "w", newline="") as fh:
            csv.writer(fh).writerows(kept)


class _WithCSV(MetricsLogger):
    """A logger that also writes ``metrics.csv`` (what the README promises for every run)."""

    def _start_csv(self, run_dir: Path, resumed: bool) -> None:
        self.csv = CSVLogger()
        self.csv.start(run_dir, {}, resumed=resumed)

    def _log_csv(self, metrics: dict[str, Any], step: int) -> None:
        if getattr(self, "csv", None) is not None:
            self.csv.log_generation(metrics, step)

    def truncate(self, generations: int) -> None:
        """Drop ``metrics.csv`` rows after ``generations`` (on resume)."""
        if getattr(self, "csv", None) is not None:
            self.csv.truncate(generations)


class WandbLogger(_WithCSV):
    """Weights & Biases. ``mode=offline`` (or ``WANDB_MODE=offline``) needs no network."""

    #: The search draws the archive heatmaps at the end so they can be logged as images.
    wants_heatmaps = True

    def __init__(
        self,
        *,
        project: str = "llmatic",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        mode: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        self.kwargs = dict(project=project, entity=entity, group=group, name=name, mode=mode,
                           tags=list(tags or []))
        self.run = None

    def start(self, run_dir: Path, config: dict[str, Any], resumed: bool = False) -> None:
        """Start (or resume) a W&B run stored under the run directory (and metrics.csv)."""
        import wandb

        self._start_csv(run_dir, resumed)
        run_id_file = Path(run_dir) / "wandb_run_id.txt"
        run_id = run_id_file.read_text().strip() if run_id_file.exists() else None
        kwargs = {k: v for k, v in self.kwargs.items() if v is not None}
        self.run = wandb.init(
            dir=str(run_dir), config=config, id=run_id, resume="allow" if run_id else None,
            settings=wandb.Settings(init_timeout=60, silent=True), **kwargs,
        )
        run_id_file.write_text(self.run.id)

    def log_generation(self, metrics: dict[str, Any], step: int) -> None:
        """Log the generation's scalars (and a metrics.csv row)."""
        self._log_csv(metrics, step)
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the summary, the elites table and the archive heatmaps; close the run."""
        if self.run is None:
            return
        import wandb

        for key, value in summary.items():
            if isinstance(value, (int, float, str)):
                self.run.summary[key] = value
        for archive in ("network_archive", "prompt_archive"):
            for key, value in (summary.get(archive) or {}).items():
                self.run.summary[f"{archive}/{key}"] = value
        elites = summary.get("elites") or []
        if elites:
            names = list(elites[0]["descriptors"])
            columns = ["candidate_id", "generation", "fitness", "val_accuracy", "params",
                       "flops", *names]
            rows = [[e["candidate_id"], e["generation"], e["fitness"], e["val_accuracy"],
                     e["params"], e["flops"], *[e["descriptors"][n] for n in names]]
                    for e in elites]
            self.run.log({"elites": wandb.Table(columns=columns, data=rows)})
        for path in summary.get("heatmaps", []):
            self.run.log({Path(path).stem: wandb.Image(str(path))})
        self.run.finish()
        self.run = None


class TensorBoardLogger(_WithCSV):
    """TensorBoard event files under ``RUN_DIR/tensorboard`` (view: tensorboard --logdir)."""

    def __init__(self, *, subdir: str = "tensorboard") -> None:
        self.subdir = subdir
        self.writer = None

    def start(self, run_dir: Path, config: dict[str, Any], resumed: bool = False) -> None:
        """Open the event writer and record the config as text (and metrics.csv)."""
        from torch.utils.tensorboard import SummaryWriter

        self._start_csv(run_dir, resumed)
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / self.subdir))
        if not resumed:
            import json

            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def log_generation(self, metrics: dict[str, Any], step: int) -> None:
        """One scalar per metric and generation (and a metrics.csv row)."""
        self._log_csv(metrics, step)
        if self.writer is None:
            return
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        """Close the writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
