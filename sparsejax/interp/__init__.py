"""Interpretability tools: attribution methods, faithfulness metrics, head metrics."""
