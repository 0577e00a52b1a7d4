"""Patch embedding: encoders and per-slide feature bags."""
