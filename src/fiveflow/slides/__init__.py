"""Slide stage: open slides, mask tissue, tile by physical size, write coordinates and QC images."""
