"""Interpretability: attribution methods, faithfulness metrics, unit-level tools and
attention-head metrics."""
