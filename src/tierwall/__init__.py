"""tierwall: a three-tier hosting architecture for sensitive health data, as code."""

__version__ = "0.1.0"
