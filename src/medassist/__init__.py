"""medassist: build, study and ship the models of an intelligent healthcare assistant."""

from __future__ import annotations

from medassist.errors import ChecksumError, DataError, MedAssistError

__version__ = "0.1.0"
__all__ = ["ChecksumError", "DataError", "MedAssistError", "__version__"]
