"""The recipe's optional `tracking:` block: a run's metrics and plots in TensorBoard.

Each finished stage's numeric metrics become scalars tagged `<stage>/<metric>` (nested figures
flattened with `/`), at step = the stage's iteration (`iter_2/policy_eval` -> 2, `final/*` ->
iterations + 1), so a figure measured every iteration draws a curve; the stage's duration goes to
`time/<stage>`. When the report is written, its headline figures go in as text and its PNG plots
as images. Writing needs no server and no network: event files land in the tracking directory,
read by `tensorboard --logdir` (or any tool that reads TensorBoard event files).

TensorBoard rather than MLflow or W&B: its event files are a format the RL trainers this project
sits beside (TRL, OpenRLHF, verl) all write; it installs as a small wheel with no server to run
and nothing to sync. MLflow's local file store is in maintenance mode (a SQLite store is its
default since MLflow 3.7) and MLflow brings a web stack of dependencies; W&B's offline mode keeps
runs invisible until a later `wandb sync` to its service.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rprm_ray.config import Recipe


def scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a stage's metrics, nested keys joined with '/' (bools and text left out)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(scalars(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def stage_step(key: str, iterations: int) -> int:
    """The x position of a stage: its iteration number; final evaluations after the last one."""
    head = key.split("/", 1)[0]
    if head.startswith("iter_") and head[5:].isdigit():
        return int(head[5:])
    return iterations + 1 if head == "final" else 0


def tracking_dir(recipe: Recipe, run_dir: Path) -> Path:
    cfg = recipe.tracking
    assert cfg is not None
    if cfg.dir is None:
        return run_dir / "tensorboard"
    return cfg.dir if cfg.dir.is_absolute() else run_dir / cfg.dir


class Tracker:
    """One run's TensorBoard writer (torch's SummaryWriter, which writes TensorBoard's format)."""

    def __init__(self, recipe: Recipe, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.recipe = recipe
        self.run_dir = run_dir
        self.dir = tracking_dir(recipe, run_dir)
        self.writer = SummaryWriter(log_dir=str(self.dir))
        self.writer.add_text("recipe", "```yaml\n" + (run_dir / "recipe.yaml").read_text() + "\n```"
                             if (run_dir / "recipe.yaml").is_file() else json.dumps(recipe.model_dump(mode="json")))

    def log_stage(self, key: str, metrics: dict[str, Any], seconds: float) -> None:
        step = stage_step(key, self.recipe.loop.iterations)
        name = key.split("/", 1)[1] if "/" in key else key
        for tag, value in scalars(metrics).items():
            self.writer.add_scalar(f"{name}/{tag}", value, step)
        self.writer.add_scalar(f"time/{name}", seconds, step)
        self.writer.flush()

    def log_report(self) -> None:
        """The report's headline (metrics.json) as text and its plots as images."""
        from rprm_ray.report import headline_rows, target_rows

        summary_path = self.run_dir / "metrics.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            rows = headline_rows(summary) + target_rows(summary)
            if rows:
                self.writer.add_text("report", "\n".join(f"| {a} | {b} |" for a, b in [("figure", "value"), ("---", "---"), *rows]))
        if self.recipe.tracking is not None and self.recipe.tracking.log_plots:
            import matplotlib.image

            for png in sorted(self.run_dir.glob("*.png")):
                pixels = matplotlib.image.imread(png)[..., :3]  # RGBA floats in [0, 1] -> RGB
                self.writer.add_image(f"plots/{png.stem}", pixels, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def make_tracker(recipe: Recipe, run_dir: Path) -> Tracker | None:
    """The recipe's tracker, or None when it has no `tracking:` block."""
    return None if recipe.tracking is None else Tracker(recipe, run_dir)
