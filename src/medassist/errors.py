"""The one exception type for problems a user can fix."""

from __future__ import annotations


class MedAssistError(Exception):
    """A problem with the user's input, data or settings.

    The message names the file, column or value at fault and says what to do about it.
    """


class DataError(MedAssistError):
    """Data that is missing, unreadable, or not what a study needs."""


class ChecksumError(DataError):
    """A file whose checksum does not match the expected one."""
