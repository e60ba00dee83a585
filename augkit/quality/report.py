"""The text of a quality assessment: quality.json (every number) and quality.md (tables and grids).

The Markdown is also what the run report embeds as its "Generative quality" section, so the two never
disagree. Every text says which feature extractor was used: augkit's own classifier, not Inception.
"""

from __future__ import annotations

from pathlib import Path

from augkit import atomic

__all__ = ["quality_markdown", "write_quality_report"]

EXPERT_ACCURACY = 0.71  # the thesis's haematologist telling real from AC-GAN images


def number(value, digits: int | str = 3) -> str:
    """A number with ``digits`` decimals, or ``"3g"``-style significant digits (KID spans decades)."""
    if value is None:
        return "–"
    return f"{value:.{digits}}" if isinstance(digits, str) else f"{value:.{digits}f}"


def row_flags(row: dict, emphasis: str = "") -> list[str]:
    """What is wrong with a class (or the overall row): its note, collapse, near copies."""
    flags = [row["note"]] if row.get("note") else []
    if row.get("collapsed"):
        flags.append(f"{emphasis}collapsed{emphasis}")
    if row.get("copies"):
        flags.append(f"{emphasis}near copies{emphasis}")
    return flags


def _overall_rows(result: dict) -> list[str]:
    o = result["overall"]
    rows = []
    if "fd" in o:
        rows.append(f"| Fréchet distance (features) | {number(o['fd'], 2)} | 0 = same mean and covariance; lower is better |")
        rows.append(f"| KID (features) | {number(o['kid'], '3g')} ± {number(o['kid_std'], '2g')} | ≈ 0 for one distribution |")
    if "precision" in o:
        rows += [f"| precision | {number(o['precision'])} | generated images inside the real manifold (fidelity) |",
                 f"| recall | {number(o['recall'])} | real images inside the generated manifold (variety) |",
                 f"| density | {number(o['density'])} | ≈ 1 when matched; > 1 crowded into dense real regions |",
                 f"| coverage | {number(o['coverage'])} | real neighbourhoods holding a generated image |"]
    if "fake_ms_ssim" in o:
        flag = "**collapsed**" if o["collapsed"] else "ok"
        rows.append(f"| mean pairwise MS-SSIM, real / generated | {number(o['real_ms_ssim'])} / {number(o['fake_ms_ssim'])} "
                    f"| higher = less diverse; {flag} |")
    if "copies" in o:
        m = result["memorisation"]
        held = m.get("held_out_real_copy_rate")
        rows.append(f"| near copies of training images | {m['copies']} of {m['checked']} ({o['copy_rate']:.1%}) | "
                    f"pixel RMS < {m['thresholds']['pixel']:.4f} and feature distance < "
                    f"{m['thresholds']['feature']:.3g} (each the {m['thresholds']['percentile']:g} % quantile of "
                    "real-to-nearest-other-real distances)"
                    + (f"; held-out real images: {held:.1%}" if held is not None else "") + " |")
    if "cas_accuracy" in o:
        ref = o.get("reference_accuracy")
        rows.append(f"| train on generated, test on real (CAS) | {number(o['cas_accuracy'])} | "
                    + (f"train on as many real images: {number(ref)} |" if ref is not None else "|"))
    elif isinstance(result.get("cas"), dict) and result["cas"].get("skipped"):
        rows.append(f"| train on generated, test on real (CAS) | – | {result['cas']['skipped']} |")
    if "real_vs_fake_accuracy" in o:
        t = result["two_sample"]
        rows.append(f"| real-vs-fake classifier, held-out accuracy | {number(t['accuracy'])} "
                    f"[{number(t['ci_low'])}, {number(t['ci_high'])}] | 0.5 = indistinguishable; the thesis's expert: "
                    f"{EXPERT_ACCURACY}; {t['test_images']} test images, p = {t['p_value']:.2g} |")
    return rows


def _class_table(result: dict) -> list[str]:
    checks = result["checks"]
    head, rule = ["class", "n real / gen."], ["---", "---:"]
    cols = []
    if "distances" in checks:
        cols += [("FD", "fd", 2), ("KID", "kid", "3g")]
    if "manifold" in checks:
        cols += [("precision", "precision", 3), ("recall", "recall", 3), ("density", "density", 3),
                 ("coverage", "coverage", 3)]
    for title, _, _ in cols:
        head.append(title)
        rule.append("---:")
    if "diversity" in checks:
        head.append("MS-SSIM real / gen.")
        rule.append("---:")
    if "memorisation" in checks:
        head.append("copies")
        rule.append("---:")
    if "cas" in checks and "cas_accuracy" in result["overall"]:
        head.append("CAS recall (real-trained)")
        rule.append("---:")
    head.append("flags")
    rule.append("---")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(rule) + "|"]
    for r in result["classes"]:
        cells = [str(r["class"]).replace("|", "/"), f"{r['real_n']} / {r['fake_n']}"]
        cells += [number(r.get(key), digits) for _, key, digits in cols]
        if "diversity" in checks:
            cells.append(f"{number(r.get('real_ms_ssim'))} / {number(r.get('fake_ms_ssim'))}")
        if "memorisation" in checks:
            cells.append("–" if "copies" not in r else str(r["copies"]))
        if "cas" in checks and "cas_accuracy" in result["overall"]:
            cells.append(f"{number(r.get('cas_recall'))} ({number(r.get('reference_recall'))})")
        cells.append("; ".join(row_flags(r, "**")) or "ok")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def quality_markdown(result: dict, title: str, level: int = 1, images: str = "") -> str:
    """The assessment as Markdown under a heading of ``level``; image links get the prefix ``images``."""
    h = "#" * level
    x = result["extractor"]
    lines = [f"{h} {title}", "",
             f"Feature space: {x['description']}.",
             f"Real: {result['real_images']} training images; generated: {result['fake_images']} images"
             + (" (an unconditional generator: overall numbers only)." if result["overall_only"] else ".")
             + f" Feature metrics use up to {result['settings']['n_per_class']} images per class and side "
             f"(seed {result['settings']['seed']}); a class needs {result['min_class_images']} on each side.", "",
             "| overall | value | reading |", "|---|---:|---|", *_overall_rows(result), ""]
    if result["classes"]:
        lines += [f"{h}# Per class", "", *_class_table(result), ""]
    grids = [f"![{w['class']} (FD {w['fd']:.1f}): generated above, real below]({images}{w['grid']})"
             for w in result.get("worst_classes", [])]
    if grids:
        lines += [f"{h}# Worst classes by Fréchet distance (generated top row, real bottom row)", "", " ".join(grids), ""]
    if result.get("samples_grid"):
        lines += [f"![generated (top) and real (bottom)]({images}{result['samples_grid']})", ""]
    if "memorisation" in result:
        m = result["memorisation"]
        lines += [f"{h}# Closest generated-real pairs (generated top row, nearest real training image below)", "",
                  f"![closest pairs]({images}{m['grid']})", "",
                  "Pixel RMS distances, closest first: "
                  + ", ".join(f"{c['pixel_distance']:.4f}" + (" (copy)" if c["copy"] else "") for c in m["closest"])
                  + f". Median over all checked: {m['median_pixel_distance']:.4f} (pixels), "
                  f"{m['median_feature_distance']:.3f} (features); below the pixel threshold: {m['pixel_close']}, "
                  f"below the feature threshold: {m['feature_close']}, below both (near copies): {m['copies']}.", ""]
    return "\n".join(lines)


def write_quality_report(result: dict, out_dir: str | Path, title: str) -> list[Path]:
    """quality.json and quality.md in ``out_dir`` (each written atomically)."""
    out_dir = Path(out_dir)
    return [atomic.write_json(out_dir / "quality.json", {"title": title, **result}),
            atomic.write_text(out_dir / "quality.md", quality_markdown(result, title) + "\n")]
