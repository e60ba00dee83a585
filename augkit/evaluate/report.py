"""The evaluation report: Markdown tables, row-normalised confusion matrices and a per-class delta chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augkit.evaluate.metrics import SUMMARY_METRICS


def _mean_ci(values: list[float]) -> str:
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return f"{v.mean():.4f}"
    from scipy import stats

    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():.4f} ± {half:.4f}"


def _delta(d: dict) -> str:
    flag = " (CI includes 0)" if d["includes_zero"] else ""
    return f"{d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]{flag}"


def _verdict(name: str, d: dict) -> str:
    if d["includes_zero"]:
        return (f"- **{name}**: weighted F1 {_delta(d)}: the 95% CI includes zero, so this evaluation shows "
                "no reliable difference from the baseline.")
    word = "better" if d["delta"] > 0 else "worse"
    return f"- **{name}**: weighted F1 {_delta(d)}: {word} than the baseline with 95% confidence."


def markdown(summary: dict) -> str:
    names = summary["class_names"]
    arms = summary["arms"]
    cfg = summary["config"]
    lines = [
        "# augkit evaluation",
        "",
        f"Data `{summary['data']}` (fingerprint {summary['fingerprint'][:12]}); model `{cfg['model']}`, "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, lr {cfg['lr']}, input aug `{cfg['input_aug']}`, "
        f"device {summary['device']}; seeds {summary['seeds']}.",
        f"Split: {summary['split']['method']} (seed {summary['split']['seed']}), sizes {summary['split']['sizes']}; "
        f"test set: {summary['test_source']}. Model selection: best validation weighted F1; numbers are on test.",
        "",
        "## Headline",
        "",
        "| arm | synthetic rows | weighted F1 | macro F1 | accuracy | balanced acc. | Δ weighted F1 vs baseline [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, arm in arms.items():
        cols = [_mean_ci([r["metrics"][m] for r in arm["runs"]]) for m in SUMMARY_METRICS]
        delta = _delta(summary["deltas"][name]["weighted_f1"]) if name in summary["deltas"] else "—"
        lines.append(f"| {name} | {arm['synthetic_rows']} | " + " | ".join(cols) + f" | {delta} |")
    lines += ["", "Mean ± half-width of the 95% t-interval over seeds where there are several."]
    if summary["deltas"]:
        method = next(iter(summary["deltas"].values()))["method"]
        lines += ["", "## Verdict", "", f"Confidence intervals: {method}.", ""]
        lines += [_verdict(n, d["weighted_f1"]) for n, d in summary["deltas"].items()]
        for name, d in summary["deltas"].items():
            lines += ["", f"## Per-class deltas: {name} − baseline", "",
                      "| class | test images | Δ recall (per-class accuracy) | Δ precision | Δ F1 |", "|---|---|---|---|---|"]
            support = arms[name]["runs"][0]["metrics"]["per_class"]["support"]
            for k, cls in enumerate(names):
                lines.append(f"| {cls} | {support[k]} | {_delta(d['recall'][k])} | {_delta(d['precision'][k])} | "
                             f"{_delta(d['f1'][k])} |")
    lines += ["", "## Per-class F1 by arm (mean over seeds)", "", "| class | " + " | ".join(arms) + " |",
              "|---|" + "---|" * len(arms)]
    for k, cls in enumerate(names):
        vals = [np.mean([r["metrics"]["per_class"]["f1"][k] for r in arm["runs"]]) for arm in arms.values()]
        lines.append(f"| {cls} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    lines += ["", "## Runs", "", "| arm | seed | best epoch | weighted F1 | train s | train img/s |",
              "|---|---|---|---|---|---|"]
    for name, arm in arms.items():
        for r in arm["runs"]:
            ips = f"{r['train_images_per_s']:.0f}" if r["train_images_per_s"] else "—"
            lines.append(f"| {name} | {r['seed']} | {r['best_epoch']} | {r['metrics']['weighted_f1']:.4f} | "
                         f"{r['train_seconds']:.0f} | {ips} |")
    lines += ["", "Files: metrics.json (every number with its seed), confusion_<arm>.png, deltas.png, split.json, runs/."]
    return "\n".join(lines) + "\n"


def plots(summary: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = summary["class_names"]
    written = []
    for arm_name, arm in summary["arms"].items():
        cm = np.sum([np.asarray(r["metrics"]["confusion"], dtype=np.float64) for r in arm["runs"]], axis=0)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 0.8 + 0.6 * len(names)))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_title(f"{arm_name}: row-normalised confusion ({len(arm['runs'])} seed(s))")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        path = out_dir / f"confusion_{arm_name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if summary["deltas"]:
        fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(names), 4))
        width = 0.8 / len(summary["deltas"])
        for a, (arm_name, d) in enumerate(summary["deltas"].items()):
            mean = np.array([e["delta"] for e in d["f1"]])
            err = np.array([[e["delta"] - e["ci_low"] for e in d["f1"]], [e["ci_high"] - e["delta"] for e in d["f1"]]])
            ax.bar(np.arange(len(names)) + a * width, mean, width, yerr=err, capsize=3, label=arm_name)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
        ax.set_ylabel("Δ F1 vs baseline (95% CI)")
        ax.legend()
        fig.tight_layout()
        path = out_dir / "deltas.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_report(summary: dict, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    plots(summary, out_dir)
    path = out_dir / "report.md"
    path.write_text(markdown(summary))
    return path
