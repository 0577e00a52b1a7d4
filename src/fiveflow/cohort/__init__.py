"""The embedded synthetic demo cohort (slides + raw reports) used by ``cohort.source: demo``.

See :mod:`fiveflow.cohort.demo` for the public API; rendering lives in ``scene``/``render``,
report wording in ``reports``. Importing this package is cheap (no numpy at import time).
"""

from .demo import DemoCase, demo_cases, demo_report_text, write_demo_slide, write_demo_tables

__all__ = ["DemoCase", "demo_cases", "demo_report_text", "write_demo_slide", "write_demo_tables"]
