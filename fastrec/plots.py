"""PNG charts of a run: the loss curve and the ranking metrics by K."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed
import matplotlib.pyplot as plt  # noqa: E402

from .files import temporary_sibling


def _save(figure: Any, path: Path) -> None:
    """Save ``figure`` as a PNG through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_sibling(path, ".png")
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        if os.path.exists(tmp):
            os.unlink(tmp)


def plot_loss_curve(history: list[dict[str, Any]], path: str | Path) -> None:
    """Plot the training loss and validation NDCG@10 per epoch."""
    epochs = [row["epoch"] for row in history]
    figure, loss_axis = plt.subplots(figsize=(6, 3.6))
    loss_axis.plot(
        epochs, [row["train_loss"] for row in history], "o-", label="train loss"
    )
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("cross-entropy")
    valid = [
        (row["epoch"], row["valid"]["NDCG@10"]) for row in history if "valid" in row
    ]
    if valid:
        ndcg_axis = loss_axis.twinx()
        ndcg_axis.plot(*zip(*valid), "s--", color="tab:orange", label="valid NDCG@10")
        ndcg_axis.set_ylabel("NDCG@10")
        ndcg_axis.legend(loc="center right")
    loss_axis.legend(loc="upper right")
    loss_axis.set_title("training")
    _save(figure, Path(path))


def plot_metrics_by_k(results: dict[str, Any], path: str | Path) -> None:
    """Plot HR, NDCG and MRR against K for the model and each baseline."""
    names = [n for n, v in results.items() if isinstance(v, dict) and "users" in v]
    ks = results["ks"]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for axis, metric in zip(axes, ("HR", "NDCG", "MRR")):
        for name in names:
            axis.plot(
                ks, [results[name][f"{metric}@{k}"] for k in ks], "o-", label=name
            )
        axis.set_xlabel("K")
        axis.set_title(f"{metric}@K")
        axis.set_xscale("log")
        axis.set_xticks(ks, [str(k) for k in ks])
    axes[0].legend()
    figure.suptitle(f"{results['part']} rows ({results['split']} split)")
    _save(figure, Path(path))
