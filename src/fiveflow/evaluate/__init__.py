"""Evaluation: metrics over prediction tables, summary tables."""
