"""The report of one or several expert-test sessions: a dict, JSON + CSV files and rich tables.

Several sessions (several experts, or one expert twice) are also pooled into one confusion matrix.
The pooled interval treats every answer as independent, which overstates the certainty when the
same images were shown to several experts; the per-session rows are there to see the spread.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from augkit import atomic
from augkit.expert.session import Session
from augkit.expert.stats import CONFIDENCE, POSITIVE, Confusion, Rate, breakdown

REPORT_JSON = "expert_report.json"
REPORT_CSV = "expert_report.csv"
CONVENTION = ("positive class: fake (generated). sensitivity = generated images called fake / generated "
              "images; specificity = real images called real / real images; 95% Wilson intervals")


def _block(overall: Confusion, per_class: dict[str, Confusion]) -> dict:
    return {"overall": overall.to_dict(), "per_class": {c: m.to_dict() for c, m in per_class.items()}}


def build_report(sessions: Sequence[Session]) -> dict:
    """Numbers of each session and, over all of them, the pooled ones."""
    entries, everything = [], []
    for s in sessions:
        judgements = s.judgements()
        everything += judgements
        entries.append({
            "name": s.name, "expert": s.expert, "folder": str(s.folder.resolve()), "answered": len(judgements),
            "total": s.total, "complete": len(judgements) == s.total, "seed": s.manifest["seed"],
            "real": s.manifest["real"], "fake": s.manifest["fake"], **_block(*breakdown(judgements)),
        })
    return {"positive_class": POSITIVE, "confidence": CONFIDENCE, "ci_method": "wilson", "convention": CONVENTION,
            "sessions": entries, "combined": _block(*breakdown(everything))}


_CSV_COLUMNS = ["scope", "session", "expert", "class", "n", "fake_called_fake", "fake_called_real",
                "real_called_real", "real_called_fake"] + [
    f"{m}{suffix}" for m in ("sensitivity", "specificity", "accuracy") for suffix in ("", "_ci_low", "_ci_high")]


def _csv_rows(scope: str, session: str, expert: str, block: dict):
    for class_name, m in [("all", block["overall"]), *block["per_class"].items()]:
        row = [scope, session, expert, class_name, m["n"], m["tp"], m["fn"], m["tn"], m["fp"]]
        for key in ("sensitivity", "specificity", "accuracy"):
            row += [m[key]["value"], m[key]["ci_low"], m[key]["ci_high"]]
        yield ["" if v is None else (f"{v:.6f}" if isinstance(v, float) else v) for v in row]


def report_csv(report: dict) -> str:
    """One row per session (or the pooled sessions) and class ("all" for every class together)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for s in report["sessions"]:
        writer.writerows(_csv_rows("session", s["name"], s["expert"], s))
    if len(report["sessions"]) > 1:
        writer.writerows(_csv_rows("combined", "", "", report["combined"]))
    return buffer.getvalue()


def write_report(report: dict, folder: str | Path) -> tuple[Path, Path]:
    """``expert_report.json`` and ``expert_report.csv`` in ``folder``, each written atomically."""
    folder = Path(folder)
    return (atomic.write_json(folder / REPORT_JSON, report),
            atomic.write_text(folder / REPORT_CSV, report_csv(report)))


def _rate(m: dict, key: str) -> str:
    return Rate(**m[key]).describe()


def _row(label: str, m: dict) -> list[str]:
    return [label, str(m["n"]), f"{m['tn']} / {m['fp']}", f"{m['fn']} / {m['tp']}",
            _rate(m, "sensitivity"), _rate(m, "specificity"), _rate(m, "accuracy")]


def _table(title: str, first: str) -> Table:
    return Table(first, "answers", "real: called real / fake", "fake: called real / fake",
                 "sensitivity [95% CI]", "specificity [95% CI]", "accuracy [95% CI]", title=title)


def report_tables(report: dict) -> list[Table]:
    """One row per session (and the pooled row), then the per-class breakdown of the pooled answers."""
    sessions = _table("expert test (positive class: fake)", "session (expert)")
    for s in report["sessions"]:
        label = s["name"] if s["expert"] == s["name"] else f"{s['name']} ({s['expert']})"
        if not s["complete"]:
            label += f"  [{s['answered']}/{s['total']} answered]"
        sessions.add_row(*_row(label, s["overall"]))
    if len(report["sessions"]) > 1:
        sessions.add_row(*_row("[bold]all sessions pooled", report["combined"]["overall"]))
    classes = _table("per class" + (" (all sessions pooled)" if len(report["sessions"]) > 1 else ""), "class")
    for name, m in report["combined"]["per_class"].items():
        classes.add_row(*_row(name, m))
    return [sessions, classes]
