"""Herald: report scheduling and delivery."""

__version__ = "0.1.0"
