"""The exceptions callscope raises, all at configuration time, never from inside a chain.

    CallscopeError
    └── ConfigError      an invalid argument to instrument() / attach(), named with its fix
"""

from __future__ import annotations

__all__ = ["CallscopeError", "ConfigError"]


class CallscopeError(Exception):
    """Base class of every exception callscope raises."""


class ConfigError(CallscopeError, ValueError):
    """Raised for an invalid setting passed as an argument, e.g.
    ``max_in_flight_runs must be a positive integer, got -1``.

    Invalid *environment* values never raise: they log a warning and fall back to the default.
    """
