"""PNG plots for run reports: judge F1 vs K critiques, accuracy vs N candidates, accuracy per
iteration, judge F1 per training phase. matplotlib (Agg backend, no display) is imported only when
a plot is drawn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: workers and CI have no display
    import matplotlib.pyplot as plt

    return plt


def _check_series(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], what: str) -> None:
    if not series:
        raise ValueError(f"{what}: nothing to plot")
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys) or not xs:
            raise ValueError(f"{what}: series {name!r} has {len(xs)} x values and {len(ys)} y values")


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    out_path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    log2_x: bool = False,
    ylim: tuple[float, float] | None = (0, 100),
) -> Path:
    """One line with markers per series {name: (xs, ys)}; a single line gets its values written
    beside its points, several lines get a legend."""
    _check_series(series, title)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    try:
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", label=name)
            if len(series) > 1:
                continue  # labels of several lines overlap; the legend and grid carry them
            for x, y in zip(xs, ys, strict=True):
                ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        if log2_x:
            ax.set_xscale("log", base=2)
        xs_all = sorted({x for xs, _ in series.values() for x in xs})
        ax.set_xticks(xs_all)
        ax.set_xticklabels([f"{x:g}" for x in xs_all])
        ax.minorticks_off()
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        return _save(fig, out_path)
    finally:
        plt.close(fig)


def _save(fig: Any, out_path: str | Path) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def plot_f1_vs_k(ks: Sequence[int], f1s: Mapping[str, Sequence[float]], out_path: str | Path) -> Path:
    """Judge F1 (percent) against the number K of critiques per step; one line per judge/subset."""
    return line_plot(
        {name: (list(ks), list(v)) for name, v in f1s.items()},
        out_path,
        title="ProcessBench F1 vs critiques per step",
        xlabel="K (critiques per step)",
        ylabel="F1 (%)",
        log2_x=True,
    )


def plot_accuracy_vs_n(ns: Sequence[int], accuracies: Mapping[str, Sequence[float]], out_path: str | Path) -> Path:
    """Accuracy (percent) against the number N of candidates; one line per selector."""
    return line_plot(
        {name: (list(ns), list(v)) for name, v in accuracies.items()},
        out_path,
        title="Best-of-N accuracy vs N",
        xlabel="N (candidates per problem)",
        ylabel="accuracy (%)",
        log2_x=True,
    )


def plot_accuracy_per_iteration(
    iterations: Sequence[int], accuracies: Mapping[str, Sequence[float]], out_path: str | Path
) -> Path:
    """Accuracy (percent) of each self-rewarding iteration M_k; one line per benchmark/metric."""
    return line_plot(
        {name: (list(iterations), list(v)) for name, v in accuracies.items()},
        out_path,
        title="Accuracy per iteration",
        xlabel="iteration",
        ylabel="accuracy (%)",
    )


def plot_judge_f1_per_phase(phases: Sequence[str], f1s: Sequence[float], out_path: str | Path) -> Path:
    """Bar chart of judge F1 (percent) after each phase (e.g. base, SFT, DPO, DPO iter 2)."""
    if len(phases) != len(f1s) or not phases:
        raise ValueError(f"judge F1 per phase: {len(phases)} phases and {len(f1s)} values")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    try:
        bars = ax.bar(list(phases), list(f1s), color="tab:blue")
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in f1s], fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title("Judge ProcessBench F1 per phase")
        ax.set_xlabel("phase")
        ax.set_ylabel("F1 (%)")
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        return _save(fig, out_path)
    finally:
        plt.close(fig)


def plot_accuracy_vs_budget(series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                            out_path: str | Path) -> Path:
    """Accuracy (percent) against generated candidate steps per problem: search strategies
    compared at equal generation cost; {name: (steps per problem, accuracies)}."""
    return line_plot(series, out_path, title="Accuracy vs generated candidate steps",
                     xlabel="candidate steps generated per problem", ylabel="accuracy (%)")
