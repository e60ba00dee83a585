"""The data-efficiency curve: weighted F1 of every arm against the number of real training images.

Each point is one evaluation (every arm, every seed) on a nested stratified fraction of the real training
split, with generators trained on that fraction only. The question it answers is the one a lab asks:
how many real images are these synthetic images worth? An arm's synthetic images at a fraction are worth
the real images the baseline needs to reach the arm's weighted F1 there (the baseline's curve read
backwards, linearly in log(real images) between measured fractions), minus the real images the arm had;
they are worth none when the arm is not better than the baseline at that fraction with 95% confidence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augkit import atomic
from augkit.evaluate.arms import BASELINE
from augkit.evaluate.report import caveats


def _real_images(summary: dict) -> int:
    return int(summary["split"]["sizes"]["train"])


def _matching_real_images(points: list[tuple[int, float]], target: float) -> float | None:
    """Real images at which the baseline's curve (sorted by images) first reaches ``target``; None if it
    never does within the measured range. The curve is read as its running maximum: a dip between two
    fractions (noise) must not make fewer images look as good as more."""
    best, monotone = float("-inf"), []
    for n, f in points:
        best = max(best, f)
        monotone.append((n, best))
    if monotone and monotone[0][1] >= target:
        return float(monotone[0][0])
    for (n0, f0), (n1, f1) in zip(monotone, monotone[1:]):
        if f1 >= target > f0:
            t = (target - f0) / (f1 - f0)
            return float(np.exp(np.log(n0) + t * (np.log(n1) - np.log(n0))))
    return None


def efficiency_curve(summaries: dict[float, dict]) -> dict:
    """Per fraction and arm: real images, weighted F1 (mean over seeds, with its interval), and the
    delta against the baseline; plus, per arm, what its synthetic images are worth in real images."""
    fractions = sorted(summaries)
    points: dict[str, list[dict]] = {}
    for f in fractions:
        s = summaries[f]
        for name, arm in s["arms"].items():
            wf1 = [r["metrics"]["weighted_f1"] for r in arm["runs"]]
            ci = arm.get("weighted_f1_ci", {})
            points.setdefault(name, []).append({
                "fraction": f, "real_images": _real_images(s), "synthetic_rows": arm["synthetic_rows"],
                "weighted_f1": float(np.mean(wf1)), "ci_low": ci.get("ci_low"), "ci_high": ci.get("ci_high"),
                "delta": s["deltas"].get(name, {}).get("weighted_f1")})
    base = [(p["real_images"], p["weighted_f1"]) for p in points[BASELINE]]
    largest = summaries[fractions[-1]]
    worth: dict[str, str] = {}
    for name, series in points.items():
        if name == BASELINE:
            continue
        parts = []
        for p, f in zip(series, fractions):
            d = p["delta"]
            where = f"at fraction {p['fraction']:g} ({p['real_images']} real images)"
            if d["ci_low"] <= 0:
                word = "no better than" if d["ci_high"] >= 0 else "worse than"
                parts.append(f"{where}: worth none (weighted F1 {p['weighted_f1']:.4f}, {word} the baseline, "
                             f"Δ {d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}])")
                p["worth_real_images"] = 0
                continue
            # a gain whose comparison could not carry a verdict is reported with what it lacks
            why = caveats(summaries[f], name) if "config" in summaries[f] else []
            unsure = f"; not established: {'; '.join(why)}" if why else ""
            # only more real images than the arm had can match it: the baseline below them is not the question
            n = _matching_real_images([b for b in base if b[0] >= p["real_images"]], p["weighted_f1"])
            if n is None:
                parts.append(f"{where}: worth more than the curve measures (weighted F1 {p['weighted_f1']:.4f} "
                             f"is above the baseline's with all {base[-1][0]} real images{unsure})")
                p["worth_real_images"] = None
                continue
            extra = max(0, round(n - p["real_images"]))
            p["worth_real_images"] = extra
            parts.append(f"{where}: its {p['synthetic_rows']} synthetic images are worth about {extra} real images "
                         f"(the baseline reaches its weighted F1 {p['weighted_f1']:.4f} at about {round(n)}{unsure})")
        worth[name] = f"{name}: " + "; ".join(parts) + "."
    return {"fractions": fractions, "points": points, "worth": worth,
            "seeds": largest["seeds"], "protocol": largest.get("protocol"),
            "generators": "every step's generator was trained on its fraction's real training images only"}


def curve_markdown(curve: dict, image: str | None = "curve.png", level: int = 2) -> list[str]:
    h = "#" * level
    lines = [f"{h} Data-efficiency curve", "",
             f"Every arm trained on nested stratified fractions {curve['fractions']} of the real training split "
             f"(seeds {curve['seeds']}; {curve['generators']}). Weighted F1, mean over seeds [95% CI over seeds and "
             "test images]:", "",
             "| arm | " + " | ".join(f"{f:g} ({curve['points'][BASELINE][k]['real_images']} real)"
                                   for k, f in enumerate(curve["fractions"])) + " |",
             "|---|" + "---|" * len(curve["fractions"])]
    for name, series in curve["points"].items():
        cells = []
        for p in series:
            ci = f" [{p['ci_low']:.4f}, {p['ci_high']:.4f}]" if p["ci_low"] is not None else ""
            cells.append(f"{p['weighted_f1']:.4f}{ci}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "What the synthetic images are worth in real images:", ""]
    lines += [f"- {text}" for text in curve["worth"].values()] or ["- (no augmented arms)"]
    lines += [""]
    if image:
        lines += [f"![data-efficiency curve]({image})", ""]
    return lines


def plot_curve(curve: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, series in curve["points"].items():
        xs = np.array([p["real_images"] for p in series], dtype=float)
        ys = np.array([p["weighted_f1"] for p in series])
        if all(p["ci_low"] is not None for p in series):
            err = np.array([[y - p["ci_low"] for y, p in zip(ys, series)], [p["ci_high"] - y for y, p in zip(ys, series)]])
        else:
            err = None
        style = {"color": "black", "linewidth": 2.0} if name == BASELINE else {"linewidth": 1.2}
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name, **style)
    ax.set_xscale("log")
    ax.set_xlabel("real training images")
    ax.set_ylabel("test weighted F1")
    ax.set_title("data-efficiency curve (95% CI)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_curve(summaries: dict[float, dict], out_dir: Path) -> dict:
    """curve.json, curve.png and curve.md in ``out_dir``."""
    out_dir = Path(out_dir)
    curve = efficiency_curve(summaries)
    atomic.write_json(out_dir / "curve.json", curve)
    plot_curve(curve, out_dir / "curve.png")
    atomic.write_text(out_dir / "curve.md", "\n".join(curve_markdown(curve)) + "\n")
    return curve
