"""The text of a quality assessment: quality.json (every number) and quality.md (tables and grids).

The Markdown is also what the run report embeds as its "Generative quality" section, so the two never
disagree. Every text says which feature extractor was used: augkit's own classifier, not Inception.
"""

from __future__ import annotations

from pathlib import Path

from augkit import atomic
from augkit.quality.checks import EXPERT_ACCURACY, all_checks, number

__all__ = ["EXPERT_ACCURACY", "number", "quality_markdown", "row_flags", "write_quality_report"]


def row_flags(row: dict, emphasis: str = "") -> list[str]:
    """What is wrong with a class (or the overall row): its note, collapse, near copies."""
    flags = [row["note"]] if row.get("note") else []
    if row.get("collapsed"):
        flags.append(f"{emphasis}collapsed{emphasis}")
    if row.get("copies"):
        flags.append(f"{emphasis}near copies{emphasis}")
    return flags


def _checks_of(result: dict) -> list:
    """The registered checks this result ran, in its order (a check no longer installed is left out)."""
    registered = all_checks()
    return [registered[name] for name in result["checks"] if name in registered]


def _overall_rows(result: dict) -> list[str]:
    return [row for check in _checks_of(result) for row in check.overall_rows(result)]


def _class_table(result: dict) -> list[str]:
    columns = [column for check in _checks_of(result) for column in check.class_columns(result)]
    head = ["class", "n real / gen.", *(title for title, _ in columns), "flags"]
    rule = ["---", "---:", *("---:" for _ in columns), "---"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(rule) + "|"]
    for r in result["classes"]:
        cells = [str(r["class"]).replace("|", "/"), f"{r['real_n']} / {r['fake_n']}", *(cell(r) for _, cell in columns),
                 "; ".join(row_flags(r, "**")) or "ok"]
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
