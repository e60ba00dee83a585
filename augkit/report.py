"""The report of a recipe run: report.md, and report.html made from the same text.

One Markdown text holds every number, so the two files cannot disagree. The HTML page is self-contained
(images embedded as data URIs, inline style, no scripts or network assets), so it can be mailed or
archived as one file.
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from pathlib import Path

from augkit import __version__, atomic

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f2f2f2}
code,pre{background:#f6f6f6;font-size:.9em}
pre{padding:.8em;overflow-x:auto}
img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd;margin:.3em 0}
figure{display:inline-block;margin:.4em 1em .4em 0;vertical-align:top}
figcaption{font-size:.85em;color:#555}
"""


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _image(alt: str, src: str, base: Path) -> str:
    path = (base / src) if not Path(src).is_absolute() else Path(src)
    if not path.is_file():
        return f"<p><em>missing image: {html.escape(src)}</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def markdown_to_html(text: str, base: Path, title: str) -> str:
    """The small Markdown subset augkit's reports use: headings, paragraphs, bullet lists, pipe tables,
    fenced code, **bold**, `code` and images (embedded from files relative to ``base``)."""
    body: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            body.append("<pre>" + html.escape("\n".join(lines[i + 1:j])) + "</pre>")
            i = j + 1
            continue
        if m := re.match(r"^(#{1,4}) (.*)$", line):
            level = len(m.group(1))
            body.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            head, *rest = rows
            body.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rest)
                        + "</table>")
            continue
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif images := re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", line):
            body.append("<div>" + "".join(_image(alt, src, base) for alt, src in images) + "</div>")
        elif line.strip():
            para = [line]
            while i + 1 < len(lines) and lines[i + 1].strip() and not re.match(r"^(#|\||- |```|!\[)", lines[i + 1]):
                i += 1
                para.append(lines[i])
            body.append(f"<p>{_inline(' '.join(para))}</p>")
        i += 1
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _demote(markdown: str) -> str:
    """Evaluation report headings one level down, its title dropped (it becomes a section)."""
    out = []
    for line in markdown.splitlines():
        if line.startswith("# "):
            continue
        out.append("#" + line if line.startswith("#") else line)
    return "\n".join(out)


def _quality_section(out: Path, steps: list[dict]) -> list[str]:
    """The "Generative quality" section: each step's quality/<id>/quality.json as tables and grids."""
    from augkit.quality.report import quality_markdown

    done = [s["id"] for s in steps if (out / "quality" / s["id"] / "quality.json").is_file()]
    if not done:
        return []
    lines = ["## Generative quality", "",
             "Features come from augkit's own classifier trained on the real training split, not from Inception "
             "(nothing is downloaded): the distances compare runs with the same extractor only, never published "
             "FID or KID values.", ""]
    for step in done:
        result = json.loads((out / "quality" / step / "quality.json").read_text())
        lines += [quality_markdown(result, f"Quality of {step}", level=3, images=f"quality/{step}/"), ""]
    return lines


def run_markdown(out: Path, recipe, state: dict) -> str:
    stages = state.get("stages", {})
    r = recipe.resolved
    lines = [f"# augkit run: {recipe.name}", ""]
    if r.get("description"):
        lines += [r["description"], ""]
    evaluation = out / "evaluate" / "metrics.json"
    summary = json.loads(evaluation.read_text()) if evaluation.is_file() else None
    if summary is not None:  # the verdict opens the report; stages, grids and provenance follow
        from augkit.evaluate.report import verdict_markdown

        lines += verdict_markdown(summary)
    curve_file = out / "evaluate" / "curve.json"
    if curve_file.is_file():
        from augkit.evaluate.curve import curve_markdown

        lines += curve_markdown(json.loads(curve_file.read_text()), image="evaluate/curve.png")
    data = r["data"]
    source = data["source"] + (f" ({data['demo_images']} images, seed {data['seed']})" if data["source"] == "demo" else "")
    lines += [
        f"Recipe `{recipe.path}` (fingerprint {recipe.fingerprint()}); augkit {__version__}; "
        f"report written {time.strftime('%Y-%m-%d %H:%M:%S')}.",
        f"Data: {source} at {data['image_size']} px; split {data['split']} (seed {data['seed']})"
        + (f"; fixed test set `{data['test']}`" if data.get("test") else "") + ".",
        "",
        "Commands (a resumed run lists each invocation):",
        "",
        "```",
        *[f"{c['command']}    # {c['started']}, {c['device']}" for c in state.get("commands", [])],
        "```",
        "",
        "## Stages",
        "",
        "| stage | wall time (s) | notes |",
        "|---|---|---|",
    ]
    for name, info in stages.items():
        note = ""
        if info.get("cache") == "hit":
            note = f"trained model reused from the cache ({info.get('cache_path', '')})"
        elif info.get("cache") == "miss":
            note = "trained here (now cached)"
        elif "rows" in info:
            note = f"{info['rows']} images"
        elif info.get("reused_runs"):
            note = "classifier runs reused from the cache: " + ", ".join(info["reused_runs"])
        elif name.startswith("quality ") and "copies" in info:
            note = "; ".join([f"{info['copies']} near copies"]
                             + ([f"collapsed: {', '.join(info['collapsed'])}"] if info.get("collapsed") else []))
        lines.append(f"| {name} | {info['seconds']:.1f} | {note} |")
    total = sum(info["seconds"] for info in stages.values())
    lines += ["", f"Total wall time of the stages: {total:.0f} s (the stages of an interrupted run count once).", ""]

    from augkit.recipe import run_ids

    # a step of several runs is one row (and one grid, filter and diversity table) per run
    steps = [{**s, "id": run_id, "seed": s["seed"] + k} for s in r["augment"]
             for k, run_id in enumerate(run_ids(s["id"], s.get("runs", 1)))]
    if steps:
        lines += ["## Augment steps", "", "| step | augmenter | amount | seed | images per class |", "|---|---|---|---|---|"]
        for s in steps:
            made = stages.get(f"generate {s['id']}", {}).get("per_class")
            per_class = ", ".join(f"{k} {v}" for k, v in made.items()) if made else "— (trains only)"
            amount = json.dumps(s["amount"]) if s["amount"] else "—"
            lines.append(f"| {s['id']} | {s['name']} | {amount} | {s['seed']} | {per_class} |")
        lines.append("")
        grids = [s for s in steps if (out / "shards" / f"{s['id']}.png").exists()]
        if grids:
            lines += ["### Sample grids (a row per class, in class order)", ""]
            lines += [" ".join(f"![{s['id']}](shards/{s['id']}.png)" for s in grids), ""]
        for s in steps:
            rates = stages.get(f"generate {s['id']}", {}).get("filter")
            if rates:
                f = s["filter"]
                selective = bool(f.get("manifold_k"))
                rule = f"keep p >= {f['threshold']}" + (f" and inside the real class's {f['manifold_k']}-NN manifold"
                                                         if selective else "")
                title = "Selective filter" if selective else "Class-consistency filter"
                lines += [f"### {title} of {s['id']} ({f['model']}, {rule})", "",
                          "| class | candidates | kept | acceptance |" + (" confident but off the manifold |"
                                                                         if selective else ""),
                          "|---|---|---|---|" + ("---|" if selective else "")]
                lines += [f"| {k} | {v['tried']} | {v['accepted']} | "
                          + ("—" if v["rate"] is None else f"{v['rate']:.1%}") + " |"
                          + (f" {v.get('outside_manifold', 0)} |" if selective else "") for k, v in rates.items()]
                lines.append("")
        for s in steps:
            table = out / "steps" / s["id"] / "diversity.md"
            if table.exists():
                text = table.read_text().split("\n", 1)[1].strip()
                lines += [f"### Diversity of {s['id']} (mean pairwise MS-SSIM, generated vs real, per class)", "",
                          text, ""]
        curves = sorted(out.glob("steps/*/**/losses.png"))
        if curves:
            lines += ["### Training losses", ""]
            lines += [" ".join(f"![{p.relative_to(out).parts[1]}]({p.relative_to(out).as_posix()})"
                               for p in curves), ""]
        scores = sorted(out.glob("steps/*/**/metrics.png"))
        if scores:
            lines += ["### Generator scores over training (the kept snapshot is the best by its metric)", ""]
            lines += [" ".join(f"![{p.relative_to(out).parts[1]}]({p.relative_to(out).as_posix()})"
                               for p in scores), ""]

    lines += _quality_section(out, steps)
    if summary is not None:
        from augkit.evaluate.report import markdown

        text = markdown(summary, verdict_first=False).replace("](val_curves.png)", "](evaluate/val_curves.png)")
        text = text.replace("Files: metrics.json", "Files in evaluate/: metrics.json")
        lines += ["## Evaluation", "", _demote(text), ""]
        pictures = ["![per-class Δ F1 with 95% CI](evaluate/deltas.png)"] if (out / "evaluate" / "deltas.png").exists() else []
        pictures += [f"![confusion: {p.stem.removeprefix('confusion_')}](evaluate/{p.name})"
                     for p in sorted((out / "evaluate").glob("confusion_*.png"))]
        if pictures:
            lines += ["### Charts", "", " ".join(pictures), ""]
    else:
        lines += ["## Evaluation", "", "This recipe has no [evaluate] table: no classifier was trained.", ""]
    lines += ["## Provenance", "", "The checked recipe (after --set), as it ran:", "", "```json",
              json.dumps(r, indent=1), "```", "",
              "Every HDF5 file in shards/ carries its own provenance (augmenter, parameters, seed, source "
              "fingerprint); `augkit data info FILE` shows it.", ""]
    return "\n".join(lines)


def write_run_report(out: Path, recipe, state: dict) -> list[Path]:
    """report.md and report.html in the run folder ``out``."""
    out = Path(out)
    text = run_markdown(out, recipe, state)
    md = out / "report.md"
    md.write_text(text, encoding="utf-8")
    page = atomic.write_text(out / "report.html", markdown_to_html(text, out, f"augkit run: {recipe.name}"))
    return [md, page]
