"""The evaluation report: the verdict first, then tables, validation curves, confusion matrices and a
per-class delta chart.

An arm is called better or worse than the baseline only when the comparison can carry that word:
its interval excludes zero, every arm made the same optimiser steps per epoch, no run of the two arms
was still improving when it ended, and there were two or more training seeds (else the interval
covers test-set sampling only). Otherwise the report says which of these is missing. Comparisons of
two augmented arms (``versus``) are read by the same rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augkit.evaluate.arms import BASELINE, versus_key
from augkit.evaluate.metrics import SUMMARY_METRICS, seed_interval


NO_CLASS_CHANGE = "- none: no per-class change is distinguishable from noise after the correction."


def _mean_ci(values: list[float]) -> str:
    """Mean ± the half-width of the t-interval over seeds (a spread of seeds, not of test sampling)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return f"{v.mean():.4f}"
    mean, _, high = seed_interval(v[:, None])
    return f"{mean[0]:.4f} ± {high[0] - mean[0]:.4f}"


def _delta(d: dict) -> str:
    flag = " (CI includes 0)" if d["includes_zero"] else ""
    return f"{d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]{flag}"


def _epoch(value) -> str:
    """Epochs as the curve counts them (checks fall mid-epoch), or a dash where a run did not record it."""
    return "—" if value is None else f"{value:.1f}"


def _p(value: float | None) -> str:
    return "—" if value is None else (f"{value:.3f}" if value >= 0.001 else "< 0.001")


def flagged_runs(summary: dict) -> list[str]:
    """"<arm> seed <k>" of every run that may be under-trained: flagged by the trainer (still improving
    when it ended), or made before runs recorded the flag (convergence unknown, so not assumed)."""
    if "under_trained" in summary:
        return summary["under_trained"]
    return [f"{name} seed {r['seed']}" for name, arm in summary["arms"].items() for r in arm["runs"]
            if r.get("under_trained", True)]


def _why_flagged(summary: dict) -> str:
    if summary["config"].get("schedule") == "onecycle":
        return ("a fixed one-cycle schedule, which does not show convergence (its best check is its last, as "
                "annealed schedules' usually are)")
    return "may be under-trained (still improving when the run ended)"


def comparison_of(summary: dict, arm: str, reference: str = BASELINE) -> dict:
    """The compare_arms record of ``arm`` against ``reference`` (the baseline, or a --versus arm)."""
    if reference == BASELINE:
        return summary["deltas"][arm]
    return summary["versus"][versus_key(arm, reference)]


def caveats(summary: dict, arm: str, reference: str = BASELINE) -> list[str]:
    """Why a difference between ``arm`` and ``reference`` would not be a verdict (empty: it would be)."""
    out = []
    if not summary["config"].get("equal_steps", False):
        out.append("plain epochs: the augmented arm made more optimiser steps than the baseline")
    # arm names hold no spaces (arms.Arm.check), so "<arm> seed <k>" splits back unambiguously
    flagged = [r for r in flagged_runs(summary) if r.split(" seed ")[0] in (reference, arm)]
    if flagged:
        out.append(f"{', '.join(flagged)}: {_why_flagged(summary)}")
    if not comparison_of(summary, arm, reference).get("covers_training_noise", len(summary["seeds"]) > 1):
        out.append("one training seed: the interval covers test-set sampling, not training noise")
    return out


def verdict(summary: dict, arm: str, reference: str = BASELINE) -> tuple[str, list[str]]:
    """("better" | "worse" | "no reliable difference" | "not established", caveats) for ``arm`` against
    ``reference``."""
    d = comparison_of(summary, arm, reference)["weighted_f1"]
    why = caveats(summary, arm, reference)
    if d["includes_zero"]:
        return "no reliable difference", why
    if why:
        return "not established", why
    return ("better" if d["delta"] > 0 else "worse"), why


def _verdict_line(summary: dict, arm: str) -> str:
    d = summary["deltas"][arm]["weighted_f1"]
    word, why = verdict(summary, arm)
    text = f"- **{arm}**: Δ weighted F1 {_delta(d)}: "
    if word in ("better", "worse"):
        return text + f"**{word}** than the baseline (95% CI excludes zero; compute-matched, converged, " \
                      f"{len(summary['seeds'])} seeds)."
    if word == "no reliable difference":
        return text + "no reliable difference from the baseline" + (f" ({'; '.join(why)})." if why else ".")
    direction = "gain" if d["delta"] > 0 else "loss"
    return text + f"a {direction} on this evaluation, **not established** as a verdict: {'; '.join(why)}."


def _class_changes(summary: dict, arm: str, reference: str = BASELINE) -> list[str]:
    """Per-class F1 changes that survive the multiple-comparison correction."""
    names = summary["class_names"]
    entries = comparison_of(summary, arm, reference)["f1"]
    return [f"{names[k]} F1 {e['delta']:+.4f} [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}] "
            f"(p {_p(e.get('p_value'))}, corrected {_p(e.get('p_holm'))})"
            for k, e in enumerate(entries) if e.get("significant")]


def _rows(arm: dict) -> str:
    """An arm's synthetic rows for a table: a mean where its seeds each have their own shards."""
    return f"{arm['synthetic_rows']}" + (" (mean over seeds)" if arm.get("shards_per_seed") else "")


def _names(arms: list[str]) -> str:
    return ("Arm " if len(arms) == 1 else "Arms ") + ", ".join(f"`{n}`" for n in arms)


def verdict_markdown(summary: dict, level: int = 2) -> list[str]:
    """The headline: arms, Δ weighted F1 with CI, corrected per-class verdicts, convergence, protocol."""
    h = "#" * level
    arms = summary["arms"]
    cfg = summary["config"]
    lines = [f"{h} Verdict", "",
             f"Protocol: {summary.get('protocol', '(not recorded)')}. Model `{cfg['model']}`, seeds "
             f"{summary['seeds']}, test set {summary['split']['sizes']['test']} images ({summary['test_source']}).", ""]
    if summary["deltas"]:
        method = next(iter(summary["deltas"].values()))["method"]
        lines += [f"Intervals: 95%, {method}."]
        # an arm whose seeds share one set of synthetic images says nothing of how much another generator
        # run or draw would move it (measured: docs/results.md); one whose seeds each have their own does
        augmented = [n for n in arms if n != BASELINE]
        own = [n for n in augmented if arms[n].get("shards_per_seed")]
        shared = [n for n in augmented if n not in own]
        if own:
            lines += [f"{_names(own)}: each seed trains on its own synthetic images (one shard set per seed, e.g. "
                      "separate generator runs): the intervals cover the variation between those sets together "
                      "with training noise."
                      + "".join(f" In `{n}`, {', '.join(Path(p).name for p in arms[n]['shards'])} is shared by all "
                                "seeds: one draw, not covered." for n in own if arms[n]["shards"])]
        if shared:
            lines += [("Each arm's" if not own else f"{_names(shared)}:") + " synthetic images are one draw, shared "
                      f"by {'its' if not own or len(shared) == 1 else 'their'} seeds: the intervals do not cover the "
                      "variation between generator runs or draws."]
        if len(summary["seeds"]) < 2:
            lines += ["**One training seed: the intervals do not cover training noise** (seed-to-seed variation); "
                      "a verdict needs `seeds` >= 2 (3 or more recommended)."]
        lines += [""]
    flagged = flagged_runs(summary)
    if flagged:
        advice = ("use `schedule = \"plateau\"`" if cfg.get("schedule") == "onecycle"
                  else "raise `epochs` (the cap)")
        lines += [f"**Convergence flag**: {len(flagged)} run(s) were still improving when they ended (best "
                  f"validation check = last, or the cap came before a plateau: {', '.join(flagged)}): they may be "
                  f"under-trained, and the verdict may reflect training length; {advice}.", ""]
    else:
        n = sum(len(a["runs"]) for a in arms.values())
        lines += [f"Convergence: all {n} runs stopped at a validation plateau before the cap." if cfg.get("schedule") != "onecycle"
                  else f"Convergence: none of the {n} runs had its best validation check at its last one.", ""]
    steps = {name: [r.get("optimizer_steps") for r in arm["runs"]] for name, arm in arms.items()}
    if all(v is not None for vs in steps.values() for v in vs):
        base_runs = arms["baseline"]["runs"]
        past_best = [r["optimizer_steps"] - r["best_step"] for r in base_runs if r.get("best_step") is not None]
        lines += ["Optimiser steps, mean over seeds: " + ", ".join(f"{n} {np.mean(v):,.0f}" for n, v in steps.items())
                  + (f". The baseline's runs went on {np.mean(past_best):,.0f} steps past their best check without "
                     "improving (the stopping rule's evidence that more steps would not have raised it); an arm that "
                     "trained longer did so because its validation score kept rising." if past_best and cfg.get("schedule") != "onecycle" else "."),
                  ""]
    lines += ["| arm | synthetic rows | weighted F1 [95% CI] | Δ weighted F1 vs baseline [95% CI] | p | verdict |",
              "|---|---|---|---|---|---|"]
    for name, arm in arms.items():
        ci = arm.get("weighted_f1_ci")
        wf1 = (f"{ci['mean']:.4f} [{ci['ci_low']:.4f}, {ci['ci_high']:.4f}]" if ci
               else _mean_ci([r["metrics"]["weighted_f1"] for r in arm["runs"]]))
        if name not in summary["deltas"]:
            lines.append(f"| {name} | {_rows(arm)} | {wf1} | — | | |")
            continue
        d = summary["deltas"][name]["weighted_f1"]
        lines.append(f"| {name} | {_rows(arm)} | {wf1} | {_delta(d)} | {_p(d.get('p_value'))} | "
                     f"{verdict(summary, name)[0]} |")
    if summary["deltas"]:
        lines += ["", *[_verdict_line(summary, n) for n in summary["deltas"]], ""]
        correction = next(iter(summary["deltas"].values())).get("correction", "no correction")
        lines += [f"Per-class F1 changes that survive the correction ({correction}):", ""]
        changes = [f"- {arm}: {c}" + (" — not established: the caveats of its arm above" if caveats(summary, arm) else "")
                   for arm in summary["deltas"] for c in _class_changes(summary, arm)]
        lines += changes or [NO_CLASS_CHANGE]
        lines += [""]
    return lines + _versus_markdown(summary)


def _versus_markdown(summary: dict) -> list[str]:
    """The --versus comparisons: each arm against another arm, read as the baseline comparisons are."""
    versus = summary.get("versus") or {}
    if not versus:
        return []
    lines = ["Against other arms (each run paired by seed with the reference arm's, as with the baseline):", "",
             "| arm | reference | Δ weighted F1 [95% CI] | p | verdict |", "|---|---|---|---|---|"]
    for c in versus.values():
        d = c["weighted_f1"]
        lines.append(f"| {c['arm']} | {c['reference']} | {_delta(d)} | {_p(d.get('p_value'))} | "
                     f"{verdict(summary, c['arm'], c['reference'])[0]} |")
    changes = [f"- {c['arm']} − {c['reference']}: {change}" for c in versus.values()
               for change in _class_changes(summary, c["arm"], c["reference"])]
    lines += ["", f"Per-class F1 changes that survive the correction ({next(iter(versus.values()))['correction']}):",
              "", *(changes or [NO_CLASS_CHANGE]),
              ""]
    return lines


def markdown(summary: dict, verdict_first: bool = True) -> str:
    names = summary["class_names"]
    arms = summary["arms"]
    cfg = summary["config"]
    lines = ["# augkit evaluation", ""]
    if verdict_first:
        lines += verdict_markdown(summary)
    lines += [
        "## Setup",
        "",
        f"Data `{summary['data']}` (fingerprint {summary['fingerprint'][:12]}); model `{cfg['model']}`, batch "
        f"{cfg['batch_size']}, lr {cfg['lr']}, weight decay {cfg['weight_decay']}, input aug `{cfg['input_aug']}`, "
        f"device {summary['device']}; seeds {summary['seeds']}.",
        f"Split: {summary['split']['method']} (seed {summary['split']['seed']}), sizes {summary['split']['sizes']}; "
        f"test set: {summary['test_source']}. Model selection: best validation weighted F1; numbers are on test.",
        "",
        "## All metrics by arm",
        "",
        "| arm | synthetic rows | weighted F1 | macro F1 | accuracy | balanced acc. | Δ weighted F1 vs baseline [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, arm in arms.items():
        cols = [_mean_ci([r["metrics"][m] for r in arm["runs"]]) for m in SUMMARY_METRICS]
        delta = _delta(summary["deltas"][name]["weighted_f1"]) if name in summary["deltas"] else "—"
        lines.append(f"| {name} | {_rows(arm)} | " + " | ".join(cols) + f" | {delta} |")
    lines += ["", "Mean ± half-width of the 95% t-interval over seeds where there are several."]
    compared = [(name, BASELINE, d) for name, d in summary["deltas"].items()]
    compared += [(c["arm"], c["reference"], c) for c in (summary.get("versus") or {}).values()]
    for name, reference, d in compared:
        lines += ["", f"## Per-class deltas: {name} − {reference}", "",
                  "| class | test images | Δ recall (per-class accuracy) | Δ precision | Δ F1 | p (F1) | corrected p (F1) |",
                  "|---|---|---|---|---|---|---|"]
        support = arms[name]["runs"][0]["metrics"]["per_class"]["support"]
        for k, cls in enumerate(names):
            f1 = d["f1"][k]
            mark = "**" if f1.get("significant") else ""
            lines.append(f"| {cls} | {support[k]} | {_delta(d['recall'][k])} | {_delta(d['precision'][k])} | "
                         f"{mark}{_delta(f1)}{mark} | {_p(f1.get('p_value'))} | {_p(f1.get('p_holm'))} |")
    lines += ["", "## Per-class F1 by arm (mean over seeds)", "", "| class | " + " | ".join(arms) + " |",
              "|---|" + "---|" * len(arms)]
    for k, cls in enumerate(names):
        vals = [np.mean([r["metrics"]["per_class"]["f1"][k] for r in arm["runs"]]) for arm in arms.values()]
        lines.append(f"| {cls} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    lines += ["", "## Training runs", "",
              "| arm | seed | best epoch | epochs trained | ended by | optimiser steps | weighted F1 | train s | "
              "train img/s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, arm in arms.items():
        for r in arm["runs"]:
            ips = f"{r['train_images_per_s']:.0f}" if r.get("train_images_per_s") else "—"
            ended = {"plateau": "plateau", "budget": "cap"}.get(r.get("stopped"), "—")
            if r.get("under_trained"):
                ended += " (**best = last**)"
            if r.get("synthetic_until_step") is not None:
                ended += f"; real images alone from step {r['synthetic_until_step']}"
            lines.append(f"| {name} | {r['seed']} | {_epoch(r['best_epoch'])} | {_epoch(r.get('epochs_trained'))} | {ended} | "
                         f"{r.get('optimizer_steps', '—')} | {r['metrics']['weighted_f1']:.4f} | "
                         f"{r['train_seconds']:.0f} | {ips} |")
    lines += ["", "![validation curves](val_curves.png)", "",
              "Files: metrics.json (every number with its seed), val_curves.png, confusion_<arm>.png, deltas.png, "
              "split.json, runs/."]
    return "\n".join(lines) + "\n"


def _validation_curves(summary: dict, ax) -> None:
    """Validation weighted F1 against epochs, every run; the baseline drawn thick and black."""
    colours = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"])
    for name, arm in summary["arms"].items():
        style = {"color": "black", "linewidth": 2.0} if name == "baseline" else {"color": next(colours, "grey"),
                                                                                  "linewidth": 1.0}
        for k, r in enumerate(arm["runs"]):
            xs = [h["epoch"] for h in r["history"]]
            ys = [h["val_weighted_f1"] for h in r["history"]]
            ax.plot(xs, ys, label=name if k == 0 else None, alpha=0.85, **style)
            best = r["history"][[h["epoch"] for h in r["history"]].index(r["best_epoch"])]
            ax.plot([best["epoch"]], [best["val_weighted_f1"]], "o", color=style["color"], markersize=4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation weighted F1")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


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
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    _validation_curves(summary, ax)
    ax.set_title("validation curves (dot: the selected check)")
    fig.tight_layout()
    path = out_dir / "val_curves.png"
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
