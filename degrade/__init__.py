"""degrade: the degradation problem of deep plain networks, and how residual connections fix it."""

__version__ = "0.1.0"
