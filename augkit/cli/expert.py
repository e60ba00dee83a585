"""`augkit expert-test`: an expert tells real from generated images; the report of the answers."""

from __future__ import annotations

from pathlib import Path

import click

from augkit.cli.common import err, out, out_path
from augkit.errors import UserError


@click.command("expert-test")
@click.argument("sessions", nargs=-1, metavar="[SESSION...]")
@click.option("--real", "real_path", type=click.Path(path_type=Path), default=None,
              help="Dataset (.h5) whose rows of origin 'real' are shown (a full dataset is fine).")
@click.option("--fake", "fake_path", type=click.Path(path_type=Path), default=None,
              help="Shard (.h5) whose generated rows are shown.")
@click.option("--n", "n", type=click.IntRange(min=1), default=None,
              help="Images per source: n real and n generated.  [default: 50]")
@click.option("--show-class", is_flag=True, help="Show each image's class (a generated image's intended class).")
@click.option("--session", "name", default=None,
              help="Session name (default: date and time); an existing session is resumed.")
@click.option("--sessions-dir", type=click.Path(path_type=Path), default=Path("expert-sessions"), show_default=True,
              help="Folder holding the sessions.")
@click.option("--expert", default=None, help="Who answers, for the report (default: the session name).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the draw and order (default: random, recorded).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on; only this machine reaches the page unless you change it.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="Port to serve on (0: any free port).")
@click.option("--report", "report_only", is_flag=True,
              help="Print and save the report of SESSION... (folders or names in --sessions-dir), combined.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="With --report: folder for expert_report.json/.csv (default: the one session's folder).")
@click.option("--force", is_flag=True, help="With --report --out: replace report files there.")
def expert_test_cmd(sessions, real_path, fake_path, n, show_class, name, sessions_dir, expert, seed, host, port,
                    report_only, out_dir, force):
    """Serve a page on which an expert tells real from generated images; or, with --report, the numbers."""
    if report_only:
        _expert_report(sessions, sessions_dir, out_dir, force)
    elif sessions:
        raise UserError("SESSION arguments go with --report; to answer, give --session NAME")
    else:
        _expert_serve(real_path, fake_path, n, show_class, name, sessions_dir, expert, seed, host, port)


def _expert_serve(real_path, fake_path, n, show_class, name, sessions_dir, expert, seed, host, port):
    from datetime import datetime

    from augkit.expert import ExpertServer, Session, build_report
    from augkit.expert.session import check_name, open_or_create

    name = check_name(name or datetime.now().strftime("%Y%m%d-%H%M%S"))
    folder = sessions_dir / name
    made = open_or_create(folder, real_path, fake_path, n, seed=seed, show_class=show_class, expert=expert)
    say = f"new session '{name}'" if made else f"resuming session '{name}'"

    def finished(s):
        path = _show_report(build_report([s]), s.folder)[0]
        out.print(f"all {s.total} images answered; report: {path} (and .csv)")

    resume = f"augkit expert-test --session {name}" + ("" if sessions_dir == Path("expert-sessions")
                                                      else f" --sessions-dir {sessions_dir}")
    with Session(folder, writer=True) as session:
        server = ExpertServer(session, host, port, on_complete=finished)
        out.print(f"{say} in {folder}: {session.answered} of {session.total} images answered")
        if session.done:
            out.print(f"(all answered: `augkit expert-test --report {folder}` gives the numbers; the page allows undo)")
        out.print(f"open [bold]{server.url}[/] in a browser; Ctrl-C stops (every answer is already saved)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:  # also on `kill`, which main() turns into SystemExit
            server.server_close()
            out.print(f"stopped with {session.answered} of {session.total} answered; continue with: {resume}",
                      highlight=False)


def _show_report(report: dict, folder: Path) -> tuple[Path, Path]:
    """Print an expert-test report's tables and save it (JSON and CSV) in ``folder``."""
    from augkit.expert import report_tables, write_report

    for table in report_tables(report):
        out.print(table)
    return write_report(report, folder)


def _expert_report(sessions, sessions_dir, out_dir, force):
    from augkit.expert import Session, build_report
    from augkit.expert.report import REPORT_CSV, REPORT_JSON
    from augkit.expert.session import find_sessions

    folders = find_sessions(list(sessions), sessions_dir)
    report = build_report([Session(folder) for folder in folders])
    if out_dir is None:
        if len(folders) > 1:
            raise UserError("--out DIR is needed to save a report of several sessions")
        out_dir = folders[0]
    else:
        if not out_dir.is_dir():
            raise UserError(f"{out_dir}: output folder does not exist")
        for existing in (out_dir / REPORT_JSON, out_dir / REPORT_CSV):
            out_path(existing, force)
    json_path, csv_path = _show_report(report, out_dir)
    for s in report["sessions"]:
        if not s["complete"]:
            err.print(f"[yellow]note:[/] session '{s['name']}' has {s['answered']} of {s['total']} answers; "
                      "its numbers cover those only", highlight=False)
    out.print(f"wrote {json_path} and {csv_path}")
