"""The visual report (stage `report`); see ``build.py``. Its parts, by what they draw: ``charts.py`` (bar charts,
confusion matrices, class colours; matplotlib, shared with the paper tables), ``pseudo_figure.py`` (the
pseudo-label figure), ``video.py`` (the prediction video, OpenCV), ``panels.py`` (image panels, numpy)."""

from videoda.report.build import ReportConfig, build_report, report_config

__all__ = ["ReportConfig", "build_report", "report_config"]
