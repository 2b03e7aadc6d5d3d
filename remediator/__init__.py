"""Remediator: acts on well-understood Alertmanager alerts, under strict limits, and reports."""

__version__ = "0.1.0"
