"""Metrics: streaming feature statistics, FID/KID/IS, and their extractors."""

from ganstack.metrics import measures  # noqa: F401  (registers the model measures)
from ganstack.metrics.evaluate import METRICS, evaluate

__all__ = ["METRICS", "evaluate"]
