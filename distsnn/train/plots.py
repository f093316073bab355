"""PNG plots written at each evaluation: training curves and accuracy versus inference time step."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training(metrics: list[dict], path: Path) -> None:
    steps = [m for m in metrics if m.get("kind") == "step"]
    if not steps:
        return
    keys = sorted({k for m in steps for k in m.get("loss", {}) if "." not in k})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for k in keys:
        pts = [(m["step"], m["loss"][k]) for m in steps if k in m.get("loss", {})]
        axes[0].plot(*zip(*pts), label=k)
    axes[0].set(xlabel="step", ylabel="loss", title="training losses")
    axes[0].legend(fontsize=7)
    axes[1].plot([m["step"] for m in steps], [m["lr"] for m in steps])
    axes[1].set(xlabel="step", ylabel="learning rate", title="schedule")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_anytime(history: list[dict], path: Path) -> None:
    if not history:
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for rec in history[-4:]:
        t = range(1, len(rec["top1"]) + 1)
        ax.plot(t, rec["top1"], marker="o", label=f"epoch {rec['epoch']} top-1")
    ax.set(xlabel="inference time step t", ylabel="accuracy (%)", title="anytime accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
