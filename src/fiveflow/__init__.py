"""fiveflow: FiVE whole-slide classification pipeline."""

__version__ = "0.1.0"
