"""`aiinfra-report`: what fired, when, how it was handled, as one self-contained HTML file.

sources (Prometheus, Alertmanager, the audit log) -> episodes and summary (counts, time to
resolve, remediation rows) -> html (the page, plots embedded) -> cli (one report, or one per
period with the last N kept, and an optional Slack summary).
"""
