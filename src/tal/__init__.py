"""tal: temporal action localization on precomputed video features."""

__version__ = "0.1.0"
