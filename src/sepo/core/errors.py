"""The base of sepo's user-facing errors.

An error of this kind is a fact about the user's input (a value, a file, a folder), not a
bug: the command line prints its first line as ``error: …`` and exits with status 2,
with no traceback. New user-facing errors derive from :class:`SepoError`, so the command
line needs no list of them."""

from __future__ import annotations


class SepoError(Exception):
    """A user-facing error (bad input, an unusable file or folder)."""
