"""The one error the upload parsers raise: the API turns it into a 415 (pickle) or 422 naming the field."""

from __future__ import annotations


class FormatError(ValueError):
    """An uploaded file is not what it claims to be. `field` names the offending part for the API's problem."""

    def __init__(self, reason: str, field: str | None = None, pickle: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.pickle = pickle
