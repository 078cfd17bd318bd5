"""The report stage: matplotlib figures and a static offline HTML page for one or more studies."""

from mixatlas.report.html import build_report

__all__ = ["build_report"]
