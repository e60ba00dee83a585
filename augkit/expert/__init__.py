"""The expert test (thesis section 4.4): a person tells real from generated cell images on a local page.

``create_session`` draws and shuffles the images into a session folder, ``ExpertServer`` serves the
page that records every answer on the spot, and ``build_report`` turns one or several sessions into
confusion matrices, sensitivity, specificity and accuracy with Wilson intervals ("fake" is positive).
"""

from augkit.expert.report import build_report, report_csv, report_tables, write_report
from augkit.expert.server import ExpertServer
from augkit.expert.session import AnswerRejected, Item, Session, create_session
from augkit.expert.stats import Confusion, Judgement, Rate, breakdown

__all__ = [
    "AnswerRejected", "Confusion", "ExpertServer", "Item", "Judgement", "Rate", "Session", "breakdown",
    "build_report", "create_session", "report_csv", "report_tables", "write_report",
]
