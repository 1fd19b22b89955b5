"""retrain: keep a day-trading model fresh."""

__version__ = "0.1.0"
