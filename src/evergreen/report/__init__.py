"""HTML run reports: one self-contained file per span (inline CSS and SVG, nothing fetched)."""

from evergreen.report.html import (
    load_record,
    record_path,
    report_for,
    save_run_report,
    write_report,
)

__all__ = ["load_record", "record_path", "report_for", "save_run_report", "write_report"]
