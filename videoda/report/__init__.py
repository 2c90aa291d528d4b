"""The visual report (stage `report`); see ``build.py``. Its parts, by what they draw: ``charts.py`` (bar charts,
confusion matrices, class colours; matplotlib, shared with the paper tables), ``pseudo_figure.py`` (the
pseudo-label figure), ``video.py`` (the prediction video, OpenCV), ``panels.py`` (image panels, numpy)."""

from videoda.report.build import ReportInputs, build_report

__all__ = ["ReportInputs", "build_report"]
