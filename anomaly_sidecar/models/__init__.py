"""Forecasting models; one module per `type`, loaded by name (see base.model_class)."""
