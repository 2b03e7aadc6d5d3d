"""aiinfra exporter: host and NVIDIA GPU metrics for Prometheus, collected at scrape time."""

__version__ = "0.1.0"
