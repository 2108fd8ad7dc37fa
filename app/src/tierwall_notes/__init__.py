"""tierwall-notes: the reference application (see app/README.md)."""

__version__ = "0.1.0"
