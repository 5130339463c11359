"""Watchlist query language: parse a boolean query into a small immutable AST.

Rules (grammar in ``query.lark``, parsed with lark's LALR parser):

- Operators ``AND``, ``OR``, ``NOT`` are uppercase keywords; ``and``/``or``/``not`` in any
  other case are ordinary terms. Precedence: ``NOT`` > ``AND`` > ``OR``; parentheses group.
  Juxtaposition is ``AND``: ``north korea`` == ``north AND korea``.
- A bare term or a ``"quoted phrase"`` is split into words exactly as the matcher splits
  text (:func:`words_of`: case-folded runs of Unicode ``\\w``), so ``test-fire`` and ``U.S.``
  become the phrases ``"test fire"`` and ``"u s"``.
- A ``*`` directly after the last word makes it a prefix: ``launch*``, ``"ballistic missil*"``.
  ``*`` anywhere else is an error.
- A query must require at least one term to be present (``NOT foo`` or ``a OR NOT b``
  would match an empty item, i.e. nearly everything), and is rejected otherwise.
- Every error is a :class:`QuerySyntaxError` with a 1-based column into the query text.

The AST (:class:`Term`, :class:`And`, :class:`Or`, :class:`Not`) is flattened (no ``And``
directly inside an ``And``), and ``str(node)`` is a canonical query that parses back to an
equal node.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

from lark import Lark, Token
from lark.exceptions import UnexpectedInput, UnexpectedToken, VisitError

#: A word is a run of Unicode word characters, as ``re``'s ``\w`` defines them.
WORD_RE = re.compile(r"\w+")

#: Deepest nesting a query may have (parentheses; ``NOT NOT x`` cancels to ``x`` while parsing).
MAX_DEPTH = 50


class QuerySyntaxError(ValueError):
    """A query that does not parse. ``column`` is 1-based within ``query``."""

    def __init__(self, message: str, query: str, column: int):
        self.message = message
        self.query = query
        self.column = column
        super().__init__(f"{message} at column {column}")

    def caret(self) -> str:
        """The query with a caret under the bad spot (two lines)."""
        line_start = self.query.rfind("\n", 0, max(self.column - 1, 0)) + 1
        line_end = self.query.find("\n", line_start)
        line = self.query[line_start:] if line_end == -1 else self.query[line_start:line_end]
        return f"{line}\n{' ' * (self.column - 1 - line_start)}^"


# --------------------------------------------------------------------------- text rules
# Shared with the matcher so that query terms and item text are split identically.

def fold_case(text: str) -> str:
    """Lower-case ``text`` without changing its length, so offsets stay valid.

    ``str.lower`` maps a few characters to two (``'İ'.lower() == 'i̇'``); those keep only
    the first character of their lower-case form.
    """
    low = text.lower()
    if len(low) == len(text):  # lower() never shrinks, so equal length means 1:1
        return low
    return "".join(c.lower()[0] for c in text)


def words_of(text: str) -> tuple[str, ...]:
    """The case-folded words of ``text``: runs of Unicode word characters."""
    return tuple(WORD_RE.findall(fold_case(text)))


def is_word_char(char: str) -> bool:
    return WORD_RE.match(char) is not None


# --------------------------------------------------------------------------- AST

@dataclass(frozen=True)
class Term:
    """One or more consecutive words; ``prefix`` makes the last word match any word it starts."""

    words: tuple[str, ...]
    prefix: bool = False

    @property
    def is_phrase(self) -> bool:
        return len(self.words) > 1

    def __str__(self) -> str:
        body = " ".join(self.words) + ("*" if self.prefix else "")
        return f'"{body}"' if self.is_phrase else body


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]

    def __str__(self) -> str:
        return " AND ".join(_wrap(c, Or) for c in self.children)


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]

    def __str__(self) -> str:
        return " OR ".join(str(c) for c in self.children)


@dataclass(frozen=True)
class Not:
    child: Node

    def __str__(self) -> str:
        return f"NOT {_wrap(self.child, (And, Or))}"


Node = Term | And | Or | Not


def _wrap(node: Node, needs_parens: type | tuple[type, ...]) -> str:
    return f"({node})" if isinstance(node, needs_parens) else str(node)


def iter_terms(node: Node, nots: int = 0) -> Iterator[tuple[Term, int]]:
    """Every term of ``node`` (in query order) with the number of NOTs above it: 0 for a
    positive term; an even number means its presence can still make the query true."""
    if isinstance(node, Term):
        yield node, nots
    elif isinstance(node, Not):
        yield from iter_terms(node.child, nots + 1)
    else:
        for child in node.children:
            yield from iter_terms(child, nots)


def evaluate(node: Node, present: set[Term] | frozenset[Term]) -> bool:
    """Truth of ``node`` when exactly the terms in ``present`` occur (reference semantics)."""
    if isinstance(node, Term):
        return node in present
    if isinstance(node, Not):
        return not evaluate(node.child, present)
    if isinstance(node, And):
        return all(evaluate(c, present) for c in node.children)
    return any(evaluate(c, present) for c in node.children)


def depth(node: Node) -> int:
    """Levels of the tree: 1 for a lone term."""
    if isinstance(node, Term):
        return 1
    if isinstance(node, Not):
        return 1 + depth(node.child)
    return 1 + max(depth(c) for c in node.children)


# --------------------------------------------------------------------------- parsing

class _Error(Exception):
    """Raised inside parser callbacks; carries (message, 0-based offset)."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.message = message
        self.offset = offset


def _term(raw: str, offset: int, quoted: bool) -> Term:
    """Build a Term from a bare term or a phrase body starting at ``offset`` in the query."""
    prefix = False
    star = raw.find("*")
    if star != -1:
        what = "phrase" if quoted else "term"
        if raw.strip() == "*":
            raise _Error("a lone '*' is not a term; put it at the end of a word, e.g. launch*",
                         offset + star)
        if star != len(raw) - 1:
            raise _Error(f"wildcard '*' is only allowed at the end of a {what}", offset + star)
        if star == 0 or not is_word_char(raw[star - 1]):
            raise _Error("wildcard '*' must directly follow a letter or digit", offset + star)
        prefix = True
        raw = raw[:-1]
    words = words_of(raw)
    if not words:
        if quoted and not raw.strip():
            raise _Error("empty phrase", offset - 1)
        raise _Error(f"{'phrase' if quoted else 'term'} {raw!r} has no letters or digits",
                     offset - 1 if quoted else offset)
    return Term(words, prefix)


def _flatten(kind: type, children: list[Node]) -> Node:
    flat: list[Node] = []
    for child in children:
        for c in (child.children if isinstance(child, kind) else (child,)):  # type: ignore[union-attr]
            if c not in flat:
                flat.append(c)
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


class _Builder:
    """lark callbacks (run during the LALR parse, no recursion): build AST nodes."""

    def term(self, children: list[Token]) -> Term:
        tok = children[0]
        return _term(str(tok), tok.start_pos, quoted=False)

    def phrase(self, children: list[Token]) -> Term:
        tok = children[0]
        return _term(str(tok)[1:-1], tok.start_pos + 1, quoted=True)

    def group(self, children: list) -> Node:
        return children[1]

    def negation(self, children: list[Node]) -> Node:
        child = children[0]
        return child.child if isinstance(child, Not) else Not(child)  # NOT NOT a == a

    def and_expr(self, children: list[Node]) -> Node:
        return _flatten(And, children)

    def or_expr(self, children: list[Node]) -> Node:
        return _flatten(Or, children)


@cache
def _parser() -> Lark:
    grammar = resources.files(__package__).joinpath("query.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="basic", transformer=_Builder(),
                propagate_positions=False, maybe_placeholders=False)


def parse_query(text: str) -> Node:
    """Parse a watchlist query; raise :class:`QuerySyntaxError` for anything malformed.

    Results are cached (the AST is immutable): config checking and the matcher parse the
    same queries, and a config reload parses them again.
    """
    return _parse_cached(text)


@lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Node:
    if not text.strip():
        raise QuerySyntaxError("empty query", text, 1)
    try:
        _check_brackets(text)
        try:
            node: Node = _parser().parse(text)
        except VisitError as e:  # pragma: no cover - lark wraps some callback errors
            raise e.orig_exc from None
        except UnexpectedToken as e:
            raise _unexpected(text, e) from None
        except UnexpectedInput as e:  # pragma: no cover - every character lexes
            raise _Error("unexpected character", getattr(e, "pos_in_stream", 0) or 0) from None
    except _Error as e:
        raise QuerySyntaxError(e.message, text, e.offset + 1) from None
    try:
        too_deep = depth(node) > MAX_DEPTH
    except RecursionError:
        too_deep = True
    if too_deep:
        raise QuerySyntaxError(f"query is nested more than {MAX_DEPTH} levels deep", text, 1)
    if evaluate(node, frozenset()):
        first_not = next((t.start_pos for t in _parser().lex(text) if t.type == "_NOT"), 0)
        raise QuerySyntaxError("query needs at least one term that must be present", text, first_not + 1)
    return node


def _check_brackets(text: str) -> None:
    """Quotes must close; parentheses (outside quotes) must balance and not nest too deep."""
    opened: list[int] = []
    quote_at = -1
    for i, ch in enumerate(text):
        if quote_at != -1:
            if ch == '"':
                quote_at = -1
        elif ch == '"':
            quote_at = i
        elif ch == "(":
            opened.append(i)
            if len(opened) > MAX_DEPTH:
                raise _Error(f"parentheses nested more than {MAX_DEPTH} deep", i)
        elif ch == ")":
            if not opened:
                raise _Error("unmatched closing parenthesis", i)
            opened.pop()
    if quote_at != -1:
        raise _Error("unterminated quote", quote_at)
    if opened:
        raise _Error("missing closing parenthesis", opened[-1])


_OPERATORS = {"_AND": "AND", "_OR": "OR", "_NOT": "NOT"}


def _unexpected(text: str, err: UnexpectedToken) -> _Error:
    """Explain a parse error in the query's own terms, from the tokens around it."""
    tokens = list(_parser().lex(text))
    bad = err.token
    at_end = bad.type == "$END"
    index = len(tokens) if at_end else next(
        (i for i, t in enumerate(tokens) if t.start_pos == bad.start_pos), len(tokens))
    prev = tokens[index - 1] if index > 0 else None
    prev_op = _OPERATORS.get(prev.type) if prev is not None else None
    if at_end or bad.type == "RPAR":
        if prev is not None and prev.type == "LPAR":
            return _Error("empty parentheses", prev.start_pos)
        if prev_op:
            return _Error(f"{prev_op} needs a term after it", prev.start_pos)
    bad_op = _OPERATORS.get(bad.type)
    if bad_op:
        if prev_op:
            return _Error(f"expected a term after {prev_op}, found {bad_op}", bad.start_pos)
        return _Error(f"{bad_op} needs a term before it", bad.start_pos)
    where = "end of query" if at_end else repr(str(bad))
    return _Error(f"unexpected {where}", len(text) if at_end else bad.start_pos)
