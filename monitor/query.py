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
- Proximity: ``a NEAR/n b`` is true when an occurrence of ``a`` and one of ``b`` are in the
  same field (title or text), do not overlap, and have at most ``n`` words *between* them
  (the words after the end of the first and before the start of the second), in either
  order: ``missile NEAR/1 test`` accepts "missile test" (0 words between) and "test of
  missile" (1), not "missile was never tested" (``tested`` is not ``test``) or "missile x y
  test" (2). ``a ONEAR/n b`` is the same with ``a`` before ``b``. ``n`` is an integer from 1
  to 100. NEAR binds tighter than NOT and AND: ``NOT a NEAR/5 b c`` is
  ``(NOT (a NEAR/5 b)) AND c``. Each operand is a term, phrase, wildcard, ``@alias`` or a
  parenthesised OR-group of those; NOT, AND, a field or another NEAR inside an operand is
  an error (put a field around the whole NEAR: ``title:(a NEAR/5 b)``).
- Fields: ``title:x``, ``title:"a phrase"``, ``title:( ... )`` and ``text:( ... )`` make the
  sub-query match within that field only (a NOT inside means "not in that field"); bare
  terms search both. Fields do not nest.
- Aliases: ``@name`` expands to an OR of the alias's entries, each parsed like a quoted
  phrase (so it may end in ``*``). Aliases come from ``parse_query(text, aliases)``; an
  unknown alias is an error at the ``@``.
- Every error is a :class:`QuerySyntaxError` with a 1-based column into the query text.

The AST (:class:`Term`, :class:`And`, :class:`Or`, :class:`Not`, :class:`Near`,
:class:`Field`) is flattened (no ``And`` directly inside an ``And``), aliases are expanded,
and ``str(node)`` is a canonical query that parses back to an equal node.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources

from lark import Lark, Token
from lark.exceptions import UnexpectedInput, UnexpectedToken, VisitError

#: A word is a run of Unicode word characters, as ``re``'s ``\w`` defines them.
WORD_RE = re.compile(r"\w+")

#: Deepest nesting a query may have (parentheses; ``NOT NOT x`` cancels to ``x`` while parsing).
MAX_DEPTH = 50
#: Largest NEAR/n distance.
MAX_DISTANCE = 100
#: What may follow ``@`` (the same rule config.py applies to alias names).
ALIAS_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: Field names, in the order the matcher numbers them.
FIELDS = ("title", "text")


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


@dataclass(frozen=True)
class Near:
    """``left NEAR/distance right`` (``ONEAR`` when ``ordered``); operands are a Term or an
    Or of Terms. ``offset`` (0-based, of the operator; not compared) is for error messages."""

    left: Term | Or
    right: Term | Or
    distance: int
    ordered: bool = False
    offset: int = field(default=0, compare=False, repr=False)

    @property
    def children(self) -> tuple[Node, Node]:
        return (self.left, self.right)

    def __str__(self) -> str:
        op = "ONEAR" if self.ordered else "NEAR"
        return f"{_wrap(self.left, Or)} {op}/{self.distance} {_wrap(self.right, Or)}"


@dataclass(frozen=True)
class Field:
    """``name:(child)``: ``child`` evaluated over one field (``"title"`` or ``"text"``)."""

    name: str
    child: Node
    offset: int = field(default=0, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.name}:{_wrap(self.child, (And, Or, Not, Near))}"


@dataclass(frozen=True)
class AliasRef:
    """``@name`` before expansion (only inside the parser; never in a returned tree)."""

    name: str
    offset: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"@{self.name}"


Node = Term | And | Or | Not | Near | Field


def _wrap(node: Node, needs_parens: type | tuple[type, ...]) -> str:
    return f"({node})" if isinstance(node, needs_parens) else str(node)


def iter_terms(node: Node, nots: int = 0) -> Iterator[tuple[Term, int]]:
    """Every term of ``node`` (in query order) with the number of NOTs above it: 0 for a
    positive term; an even number means its presence can still make the query true."""
    if isinstance(node, Term):
        yield node, nots
    elif isinstance(node, Not):
        yield from iter_terms(node.child, nots + 1)
    elif isinstance(node, Field):
        yield from iter_terms(node.child, nots)
    elif isinstance(node, AliasRef):
        return
    else:
        for child in node.children:
            yield from iter_terms(child, nots)


def evaluate(node: Node, present: set[Term] | frozenset[Term]) -> bool:
    """Truth of ``node`` when exactly the terms in ``present`` occur (reference semantics).

    Positions are unknown here, so a NEAR counts as true when both operands are, and a field
    restriction as true when its sub-query is: exact for the empty set (the parser's check),
    an upper bound otherwise."""
    if isinstance(node, Term):
        return node in present
    if isinstance(node, Not):
        return not evaluate(node.child, present)
    if isinstance(node, Field):
        return evaluate(node.child, present)
    if isinstance(node, AliasRef):
        return False
    if isinstance(node, Near):
        return evaluate(node.left, present) and evaluate(node.right, present)
    if isinstance(node, And):
        return all(evaluate(c, present) for c in node.children)
    return any(evaluate(c, present) for c in node.children)


def depth(node: Node) -> int:
    """Levels of the tree: 1 for a lone term."""
    if isinstance(node, Term | AliasRef):
        return 1
    if isinstance(node, Not | Field):
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


def _near_operator(tok: Token) -> tuple[int, bool]:
    """(distance, ordered) of a ``NEAR/n`` / ``ONEAR/n`` token; errors point at the number."""
    text = str(tok)
    ordered = text.startswith("O")
    keyword, slash, number = text.partition("/")
    if not slash:
        raise _Error(f"{keyword} needs a distance, e.g. {keyword}/10", tok.start_pos)
    at = tok.start_pos + len(keyword) + 1
    if not re.fullmatch(r"[0-9]{1,4}", number) or not 1 <= int(number) <= MAX_DISTANCE:
        shown = repr(number) if number else "nothing"
        raise _Error(f"{keyword} distance must be a whole number from 1 to {MAX_DISTANCE} "
                     f"(got {shown})", at)
    return int(number), ordered


def _bad_near_operand(node: object) -> str | None:
    """What makes ``node`` unfit as a NEAR operand, or None if it is fit."""
    if isinstance(node, Term | AliasRef):
        return None
    if isinstance(node, Or):
        return next((b for b in map(_bad_near_operand, node.children) if b), None)
    return {Not: "NOT", And: "AND", Field: "a field", Near: "another NEAR"}.get(type(node), "?")


def _inner_field(node: object) -> Field | None:
    if isinstance(node, Field):
        return node
    if isinstance(node, Not):
        return _inner_field(node.child)
    for child in getattr(node, "children", ()):
        found = _inner_field(child)
        if found is not None:
            return found
    return None


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

    def alias(self, children: list[Token]) -> AliasRef:
        tok = children[0]
        name = str(tok)[1:]
        if not ALIAS_NAME_RE.fullmatch(name):
            shown = f"'@{name}' is not" if name else "'@' alone is not"
            raise _Error(f"{shown} an alias: write @ and a name of letters, digits, '_', '.' or '-', "
                         "e.g. @dprk", tok.start_pos)
        return AliasRef(name, tok.start_pos)

    def field(self, children: list) -> Field:
        tok, child = children
        inner = _inner_field(child)
        if inner is not None:
            raise _Error(f"fields do not nest: {inner.name}: inside {tok}(...)", inner.offset)
        return Field(str(tok)[:-1], child, tok.start_pos)

    def near_expr(self, children: list) -> Near:
        if len(children) > 3:
            tok = children[3]
            raise _Error(f"{tok} after another NEAR: a NEAR takes exactly two operands; combine "
                         "several with AND, e.g. a NEAR/5 b AND b NEAR/5 c", tok.start_pos)
        left, tok, right = children
        distance, ordered = _near_operator(tok)
        for operand, side in ((left, "left"), (right, "right")):
            bad = _bad_near_operand(operand)
            if bad:
                raise _Error(f"the {side} operand of {tok} contains {bad}: NEAR operands may only be "
                             "terms, phrases, wildcards, @aliases or parenthesised OR-groups of those"
                             + (" (put the field around the NEAR: title:(a NEAR/5 b))"
                                if bad == "a field" else ""), tok.start_pos)
        return Near(left, right, distance, ordered, tok.start_pos)

    def and_expr(self, children: list[Node]) -> Node:
        return _flatten(And, children)

    def or_expr(self, children: list[Node]) -> Node:
        return _flatten(Or, children)


@cache
def _parser() -> Lark:
    grammar = resources.files(__package__).joinpath("query.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="basic", transformer=_Builder(),
                propagate_positions=False, maybe_placeholders=False)


def parse_query(text: str, aliases: Mapping[str, Sequence[str]] | None = None) -> Node:
    """Parse a watchlist query; raise :class:`QuerySyntaxError` for anything malformed.

    ``aliases`` maps a name to its entries for ``@name`` (see :func:`parse_alias_entry`);
    an ``@name`` not in it is an error. Results are cached (the AST is immutable): config
    checking and the matcher parse the same queries, and a config reload parses them again.
    """
    node = _parse_cached(text)
    if "@" not in text:
        return node
    used = list(dict.fromkeys(_alias_refs(node)))
    if not used:
        return node
    aliases = aliases or {}
    for ref in used:
        if ref.name not in aliases:
            close = difflib.get_close_matches(ref.name, list(aliases), n=1, cutoff=0.6)
            hint = f" (did you mean '@{close[0]}'?)" if close else (
                "" if aliases else " (no aliases are defined)")
            raise QuerySyntaxError(f"unknown alias '@{ref.name}'{hint}", text, ref.offset + 1)
    names = dict.fromkeys(ref.name for ref in used)
    return _expand_cached(text, tuple((name, tuple(aliases[name])) for name in names))


def parse_alias_entry(entry: str) -> Term:
    """One alias entry as a term: its words (like a quoted phrase), optionally ending in ``*``."""
    try:
        return _term(entry, 0, quoted=True)
    except _Error as e:
        raise QuerySyntaxError(e.message, entry, max(e.offset, 0) + 1) from None


def _alias_refs(node: object) -> Iterator[AliasRef]:
    if isinstance(node, AliasRef):
        yield node
    elif isinstance(node, Not | Field):
        yield from _alias_refs(node.child)
    else:
        for child in getattr(node, "children", ()):
            yield from _alias_refs(child)


@lru_cache(maxsize=4096)
def _expand_cached(text: str, aliases: tuple[tuple[str, tuple[str, ...]], ...]) -> Node:
    table = dict(aliases)

    def expand(node: Node | AliasRef) -> Node:
        if isinstance(node, Term):
            return node
        if isinstance(node, AliasRef):
            entries = table[node.name]
            if not entries:
                raise QuerySyntaxError(f"alias '@{node.name}' has no entries", text, node.offset + 1)
            terms: list[Node] = []
            for entry in entries:
                try:
                    terms.append(parse_alias_entry(entry))
                except QuerySyntaxError as e:
                    raise QuerySyntaxError(f"alias '@{node.name}': entry {entry!r}: {e.message}",
                                           text, node.offset + 1) from None
            return _flatten(Or, terms)
        if isinstance(node, Not):
            return Not(expand(node.child))
        if isinstance(node, Field):
            return Field(node.name, expand(node.child), node.offset)
        if isinstance(node, Near):
            return Near(expand(node.left), expand(node.right),  # type: ignore[arg-type]
                        node.distance, node.ordered, node.offset)
        return _flatten(type(node), [expand(c) for c in node.children])

    return expand(_parse_cached(text))


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


def _operator(tok: Token | None) -> str | None:
    """The operator a token is, as the query spells it (None for terms and brackets)."""
    if tok is None:
        return None
    if tok.type in ("NEAR", "FIELD"):
        return str(tok)
    return _OPERATORS.get(tok.type)


def _unexpected(text: str, err: UnexpectedToken) -> _Error:
    """Explain a parse error in the query's own terms, from the tokens around it."""
    tokens = list(_parser().lex(text))
    bad = err.token
    at_end = bad.type == "$END"
    index = len(tokens) if at_end else next(
        (i for i, t in enumerate(tokens) if t.start_pos == bad.start_pos), len(tokens))
    prev = tokens[index - 1] if index > 0 else None
    prev_op = _operator(prev)
    if at_end or bad.type == "RPAR":
        if prev is not None and prev.type == "LPAR":
            return _Error("empty parentheses", prev.start_pos)
        if prev_op:
            return _Error(f"{prev_op} needs a term after it", prev.start_pos)
    bad_op = None if at_end else _operator(bad)
    if bad_op:
        if prev_op:
            return _Error(f"expected a term after {prev_op}, found {bad_op}", bad.start_pos)
        return _Error(f"{bad_op} needs a term before it", bad.start_pos)
    where = "end of query" if at_end else repr(str(bad))
    return _Error(f"unexpected {where}", len(text) if at_end else bad.start_pos)
