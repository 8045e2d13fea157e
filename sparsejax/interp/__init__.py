"""Interpretability: attribution methods, faithfulness metrics, unit-level tools."""
