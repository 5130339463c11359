"""Watchlist query language (parsed with lark): STUB - being implemented."""
from __future__ import annotations


class QuerySyntaxError(ValueError):
    """A query that does not parse. ``column`` is 1-based within ``query``."""

    def __init__(self, message: str, query: str, column: int):
        self.message = message
        self.query = query
        self.column = column
        super().__init__(f"{message} at column {column}")

    def caret(self) -> str:
        """The query with a caret under the bad spot (two lines)."""
        return f"{self.query}\n{' ' * (self.column - 1)}^"


def parse_query(text: str):
    raise NotImplementedError
