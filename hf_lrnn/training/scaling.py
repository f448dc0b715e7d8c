"""Multi-GPU scaling of `scripts/train.py` runs: throughput against a one-GPU run, and the loss curves overlaid.

Each run is a finished output folder (`lm_compare.summarize_run` reads it). Scaling efficiency is the throughput
per GPU over the baseline's throughput per GPU: 1.0 when N GPUs train N times as many tokens per second. The
table also gives the tokens per step (the global batch), since the same global batch on more GPUs (strong scaling)
gives each GPU less work per step than the same per-device batch (weak scaling).
"""

from .lm_compare import summarize_run


def scaling_rows(runs: dict, baseline: str) -> list:
    """runs: {label: run folder}; baseline: the label of the one-GPU run. One dict per finished run."""
    summaries = {label: summarize_run(folder) for label, folder in runs.items()}
    missing = [label for label, s in summaries.items() if s is None]
    if missing:
        raise ValueError(f"runs {missing} have no results.json: not finished (folders {[runs[m] for m in missing]})")
    if baseline not in summaries:
        raise ValueError(f"baseline={baseline!r} is not one of the runs {list(summaries)}")
    base = summaries[baseline]
    base_per_gpu = base["tokens_per_s"] / base["num_processes"]
    rows = []
    for label, s in summaries.items():
        per_gpu = s["tokens_per_s"] / s["num_processes"]
        rows.append({"run": label, "gpus": s["num_processes"], "tokens_per_step": s["tokens_per_step"],
                     "steps": s["steps"], "tokens_per_s": s["tokens_per_s"], "tokens_per_s_per_gpu": per_gpu,
                     "speedup": s["tokens_per_s"] / base["tokens_per_s"], "scaling_efficiency": per_gpu / base_per_gpu,
                     "val_loss": s["val_loss"], "val_perplexity": s["val_perplexity"],
                     "curve": s["curve"], "train_curve": s["train_curve"]})
    return rows


def format_scaling_table(rows: list, baseline: str) -> str:
    lines = [f"| run | GPUs | tokens / step | steps | train tokens/s | per GPU | speedup vs {baseline} | "
             "scaling efficiency | final val loss | val perplexity |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['gpus']} | {r['tokens_per_step']:,.0f} | {r['steps']} | "
                     f"{r['tokens_per_s'] / 1e3:,.1f}K | {r['tokens_per_s_per_gpu'] / 1e3:,.1f}K | {r['speedup']:.2f}x | "
                     f"{r['scaling_efficiency']:.0%} | {r['val_loss']:.4f} | {r['val_perplexity']:.2f} |")
    return "\n".join(lines)


def plot_scaling(rows: list, png_path: str, title: str = "") -> None:
    """Training loss (lines) and validation loss (markers) of every run against training tokens, overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, r in enumerate(rows):
        color = f"C{i}"
        ax.plot([p["tokens"] / 1e6 for p in r["train_curve"]], [p["loss"] for p in r["train_curve"]], color=color,
                lw=1, alpha=0.8, label=f"{r['run']} ({r['gpus']} GPU{'s' if r['gpus'] > 1 else ''}) train")
        ax.plot([p["tokens"] / 1e6 for p in r["curve"]], [p["loss"] for p in r["curve"]], "o", color=color, ms=4,
                mfc="none", label=f"{r['run']} validation")
    ax.set(xlabel="training tokens (M)", ylabel="loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
