"""The version results are written with (``tool_version``); kept apart so that any layer may read it."""

__version__ = "0.1.0"
