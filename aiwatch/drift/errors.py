"""The one error every drift module raises for bad profiles and bad input data."""

from __future__ import annotations


class ProfileError(ValueError):
    """A profile could not be built, loaded or merged; the message names the problem."""
