"""Anomaly sidecar: forecasts PromQL series and publishes expected values and anomaly scores."""

__version__ = "0.1.0"
