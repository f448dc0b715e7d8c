"""PNG plots of training runs (matplotlib, headless)."""

import json


def read_jsonl(path: str) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_training_curves(metrics_path: str, png_path: str, title: str = "") -> None:
    """Training loss (left) and evaluation accuracy per test split (right) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(metrics_path)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train")
    for split in sorted({r["split"] for r in evals}):
        rows = [r for r in evals if r["split"] == split]
        steps = [r["step"] for r in rows]
        ax_loss.plot(steps, [r["loss"] for r in rows], "o-", ms=3, lw=1, label=f"{split} loss")
        ax_acc.plot(steps, [r["accuracy"] for r in rows], "o-", ms=3, lw=1, label=split)
    ax_loss.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="loss")
    ax_acc.set(xlabel="step", ylabel="token accuracy", ylim=(-0.02, 1.02), title="accuracy (scored positions)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
