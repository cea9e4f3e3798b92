"""rfstream — a real-time RF signal-detection daemon."""

__version__ = "0.1.0"
