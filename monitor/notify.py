"""Notify: render alerts, digests and operator notices for a channel and deliver them
through Apprise.

Rules:
- This is the only module that imports Apprise. Each enabled channel's URL is parsed once,
  when the Notifier is built (one Apprise object per channel); ``validate_url`` checks a URL
  the same way, without touching the network.
- A channel's kind comes from its URL: ``mailto``/``mailtos`` -> email, ``slack`` (or a
  native ``https://hooks.slack.com/...`` URL) -> slack, anything else -> other.
- Bodies are Jinja2 templates, one per kind, shipped in ``monitor/templates/``:
  ``email.html.j2`` (HTML), ``slack.md.j2`` (Slack mrkdwn), ``text.txt.j2`` (plain text for
  every other service). ONE template renders both a single alert and a digest. A channel's
  ``template`` (an absolute path once the config is loaded) replaces the built-in template
  of its kind: same context, same escaping, run in a ``SandboxedEnvironment`` where a missing
  key renders empty (reaching for an unsafe attribute is a render error). Every template is read and compiled once, when the Notifier is built;
  :func:`check_template` reports a file that cannot be read or compiled as
  ``name.j2:LINE: problem`` (``{% include %}``/``{% extends %}``/``{% import %}`` are refused:
  a template is one self-contained file).
- Template context: ``alerts`` (stories, newest first as given; each has ``title``, ``link``
  (the http(s) URL, else the link as text, else None), ``source``, ``outlets`` (only when
  more than one outlet carried the story), ``outlet_count``, ``published`` (``YYYY-MM-DD
  HH:MM UTC`` or ``unknown``), ``watchlists`` (each ``name``, ``severity``, ``score``
  (formatted), ``terms``), ``terms`` (all matched terms), ``snippet``, ``update``,
  ``heading`` (``[wl, ...] title``), ``id``), ``digest`` (bool), ``count`` (the stories in
  the message, listed or not), ``omitted`` (how many of them a digest does not list: it lists
  at most ``DIGEST_LIST_MAX``, the most severe, newest first among equals), ``folded``,
  ``since``/``until`` (formatted, or None), ``groups`` (each ``watchlist``, ``severity``,
  ``alerts``: a story is listed under every watchlist it matched; groups by severity,
  highest first, then name), ``subject`` (the message's one-line subject) and ``channel``.
  Helpers: ``link(url, label=None)`` (also a filter) makes only http(s) URLs clickable
  (``<a href>`` in HTML; ``<url|label>`` in Slack with ``<>|`` percent-encoded in the URL;
  ``label (url)`` in text); ``|highlight(terms)`` marks the matched terms of a snippet
  (``<mark>`` in HTML, bold in Slack, nothing in text); ``|bold``. They return safe markup.
- Escaping is the environment's job, never the template author's: every ``{{ }}`` value
  that is not safe markup is escaped by the ``finalize`` hook for the kind - HTML-escaped
  for email (and Jinja autoescape), ``& < >`` entity-escaped with mention openers defused
  for Slack (:func:`slack_escape`), mentions defused for text. Markup that Jinja builds
  from pieces (macro output, ``~``, ``|join``) is re-checked for the kind (Slack/text:
  mentions defused again, text: entities undone). ``|safe`` does nothing and, outside email,
  ``|urlize`` neither: user content cannot be un-escaped. So ``{{ alert.title }}`` is inert
  in every format, whoever wrote the template.
- User-controlled text (title, link, source, outlets, terms, snippet, notice text) is inert
  in every format: HTML-escaped for email, ``& < >`` entity-escaped for Slack, and mention
  openers (``<!channel>``, ``<@U..>``, ``<#C..>``, ``@here``/``@channel``/``@everyone``)
  broken with an invisible WORD JOINER after the sigil for Slack and plain text. Context
  values are one line (control characters become spaces, whitespace runs collapse, lengths
  are capped; snippets at ``SNIPPET_MAX``).
- Matched terms are highlighted whole-word, case-insensitive, longest term first, found on
  the raw text before escaping (:func:`highlight`), so a mark never lands inside an entity.
- Subjects and titles are computed here, never by templates, always through ``one_line``
  (no CR/LF reaches an email header): a single alert ``[watchlist, ...] title`` (plus ``(now
  reported by N outlets)`` for a repost update); a digest ``[digest] N stories`` (plus
  ``since <time>`` and ``(M folded in by the rate limit)``); a notice ``[monitor] subject``.
- Formats: email is HTML; Apprise adds the plain-text alternative by converting the HTML
  (its email plugin has no way to be handed a text part). Other is plain text with the
  subject as title. Slack has no title: our final mrkdwn (subject or headline on its first
  line) is passed through *untouched* in a Block Kit section - the only Apprise 2.x path that
  neither re-escapes it nor turns ``&lt;!channel&gt;`` back into a mention (its legacy
  passthrough does; its CommonMark path keeps a raw ``<!here>``) - and capped at
  ``SLACK_TEXT_MAX`` by dropping whole trailing lines (never half an entity or link).
- Notices (``render_notice``) are for operators: ``[monitor] subject`` and the notice body,
  line breaks kept, escaped for the kind; never the channel's template, so a broken
  template cannot silence them.
- ``Notifier.send``/``send_digest``/``send_notice`` never raise for a delivery failure: they
  return SendResult(False, why), why coming from Apprise's own log of the attempt ("HTTP 500
  from host:port (...)", "connection refused by host:port", "timed out after 30 s"). An
  unknown or disabled channel is a failure too, and so is a template that cannot be loaded
  or fails while rendering ("template error: name.j2:LINE: problem").
- Apprise's blocking send runs in a worker thread bounded by ``timeout``; every plugin's
  connect/read socket timeouts are clamped to at most ``timeout`` so no thread lingers.
- Apprise keeps nothing outside memory and reaches nothing but the channel's target:
  persistent storage is memory-only, no plugin paths or config files are read, Apprise's
  own templates are off, redirects are not followed, no keys are generated, times are UTC.
"""
from __future__ import annotations

import asyncio
import html
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import apprise
from jinja2 import (
    ChainableUndefined,
    Environment,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    nodes,
)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from .config import ChannelConfig
from .model import SEVERITIES, Digest, Notice, Notification

log = logging.getLogger("monitor.notify")

Kind = Literal["email", "slack", "other"]

SUBJECT_MAX = 200  # one-line titles / email subjects
TITLE_MAX = 300  # the story title inside a body
SNIPPET_MAX = 1000
#: Stories listed in one digest message; the others are only counted (``omitted``), so a
#: busy period cannot make a message no mail server or chat service accepts.
DIGEST_LIST_MAX = 100
SLACK_TEXT_MAX = 2900  # Slack rejects a section text over 3000 characters
REASON_MAX = 300
NOTICE_LINE_MAX = 2000

WORD_JOINER = "\u2060"
_SLACK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)://")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# "<" (raw or escaped) then a Slack control sigil: <!channel> <!here> <@U123> <#C123> <!subteam^..>
# (not once already defused, so defusing twice changes nothing)
_MENTION_OPENER = re.compile(r"(<|&lt;)(\s*)([!@#])(?!\u2060)")
# Bare broadcast words some services (Slack with link_names, Discord, Mattermost) expand.
_BROADCAST = re.compile(r"([@!])(?=(?:channel|here|everyone|all)\b)", re.IGNORECASE)


# --------------------------------------------------------------------------- URLs


def _scheme(url: str) -> str | None:
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else None


def channel_kind(url: str) -> Kind:
    """``email`` for mailto/mailtos, ``slack`` for slack:// (and native Slack webhook URLs),
    else ``other``."""
    scheme = _scheme(url)
    if scheme in ("mailto", "mailtos"):
        return "email"
    if scheme == "slack":
        return "slack"
    if scheme in ("http", "https"):
        try:
            host = urlsplit(url.strip()).hostname or ""
        except ValueError:
            host = ""
        if host.lower() in _SLACK_HOSTS:
            return "slack"
    return "other"


def _safe_asset(timeout: float = 30.0) -> apprise.AppriseAsset:
    """An asset that keeps Apprise in memory, on UTC, and on the configured target only."""
    return apprise.AppriseAsset(
        storage_mode="memory",  # no storage_path either: nothing is written under ~
        timezone="UTC",
        service_timeout=timeout,
        allow_templates=False,
        http_redirects=False,
        pgp_autogen=False,
        pem_autogen=False,
    )


def validate_url(url: str) -> str | None:
    """None when some Apprise plugin accepts ``url``; else the reason, for config errors.

    Only parses: no network, no disk."""
    text = url.strip()
    try:
        plugin = apprise.Apprise.instantiate(text, asset=_safe_asset(), suppress_exceptions=False)
    except Exception as e:  # a plugin refusing its arguments (bad token, bad address ...)
        why = one_line(str(e), REASON_MAX)
        return f"Apprise rejected it: {why}" if why else "Apprise rejected it"
    if plugin is not None:
        return None
    scheme = _scheme(text)
    if scheme is None:
        return "not a service URL (expected service://...)"
    manager = apprise.NotificationManager()
    if scheme not in manager:
        return f"unknown scheme '{scheme}'"
    if not getattr(manager[scheme], "enabled", True):
        return f"the '{scheme}' service is not available on this system"
    return "Apprise rejected it"


# --------------------------------------------------------------------------- text helpers


def one_line(text: str, limit: int) -> str:
    """Control characters (CR, LF, tabs, U+2028 ...) become spaces, whitespace runs collapse,
    and the result is cut to ``limit`` characters (with an ellipsis)."""
    return _truncate(" ".join(_CONTROL.sub(" ", text).split()), limit)


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + "…"


def _defuse_mentions(text: str) -> str:
    """Put a WORD JOINER after a mention sigil so no service reads user text as a ping."""
    text = _MENTION_OPENER.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{WORD_JOINER}", text)
    return _BROADCAST.sub(lambda m: m.group(1) + WORD_JOINER, text)


def slack_escape(text: str) -> str:
    """Escape user text for Slack mrkdwn: ``& < >`` as entities, mention openers broken."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _defuse_mentions(text)


def _http_link(link: str | None) -> str | None:
    """The link when it is a well-formed http(s) URL (the only kind we make clickable)."""
    if not link:
        return None
    link = link.strip()
    if _CONTROL.search(link) or any(c.isspace() for c in link):
        return None
    try:
        parts = urlsplit(link)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return link


def _heading(n: Notification, limit: int = SUBJECT_MAX) -> str:
    """``[wl-a, wl-b] title`` on one line (watchlists in the order given)."""
    title = one_line(n.title, limit) or "(untitled)"
    if n.update:
        title = f"{title} (now reported by {len(_outlets(n)) or 1} outlets)"
    names = ", ".join(one_line(w.name, 80) for w in n.watchlists)
    return one_line(f"[{names}] {title}" if names else title, limit)


def _utc(dt: datetime) -> str:
    """``2026-03-04 05:06 UTC`` (a naive datetime is taken as UTC)."""
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _published(n: Notification) -> str:
    return "unknown" if n.published is None else _utc(n.published)


def _score(score: float) -> str:
    return f"{score:.2f}".rstrip("0").rstrip(".")


def _outlets(n: Notification) -> list[str]:
    """Outlets worth listing: only when more than one carried the story."""
    names = list(dict.fromkeys(one_line(o, 120) for o in n.outlets if o.strip()))
    return names if len(names) > 1 else []


def _snippet(n: Notification) -> str:
    return one_line(n.snippet, SNIPPET_MAX)


def _terms(n: Notification) -> list[str]:
    """Every matched term of the notification's watchlists."""
    return [t for w in n.watchlists for t in w.terms]


def term_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """A case-insensitive regex finding any of ``terms`` as whole words, longest first; the
    words of a phrase may be separated by any non-word characters. None without terms."""
    alternatives = []
    for term in sorted({t.lower() for t in terms if t and t.strip()}, key=len, reverse=True):
        words = re.findall(r"\w+", term)
        if words:
            alternatives.append(r"\W+".join(map(re.escape, words)))
    if not alternatives:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def highlight(text: str, terms: Iterable[str], escape: Callable[[str], str],
              mark: Callable[[str], str]) -> str:
    """``text`` with every whole-word, case-insensitive occurrence of ``terms`` (longest first)
    passed through ``mark`` and everything else through ``escape``. Matching runs on the raw
    text and each piece is escaped on its own, so a mark never lands inside an entity and no
    user text escapes the escaping."""
    pattern = term_pattern(terms)
    if pattern is None:
        return escape(text)
    out = []
    pos = 0
    for m in pattern.finditer(text):
        out += [escape(text[pos:m.start()]), mark(escape(m.group()))]
        pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def _slack_bold(escaped: str) -> str:
    return escaped if "*" in escaped else f"*{escaped}*"


def _slack_entities(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Message:
    """What Apprise is handed: a title, a body and the body's declared format
    (``html``/``text``; None hands the body to the plugin untouched)."""

    title: str
    body: str
    body_format: str | None


class TemplateFailure(Exception):
    """A template that cannot be read or compiled, or that failed while rendering. ``str()``
    is a one-line reason naming the file and line: ``slack.md.j2:3: unexpected '}'``."""


# Safe markup per kind. HTML uses markupsafe's Markup. Slack and text use a subclass whose
# ``escape`` is the kind's own, so Markup arithmetic (``+``, ``join``, ``%``, ``format``)
# escapes the right way, and the finalize hook can tell final output from Jinja's markup.


class _SlackSafe(Markup):
    """Final Slack mrkdwn: user text in it is entity-escaped and its mentions are defused."""

    __slots__ = ()

    @classmethod
    def escape(cls, s: Any) -> _SlackSafe:
        if isinstance(s, cls):
            return s
        if hasattr(s, "__html__"):
            # markup Jinja joined from escaped pieces (macro output, ``~``, ``|join``): raw
            # parts were HTML-escaped, so ``& < >`` are entities already; Slack would show the
            # quote entities as typed, and HTML escaping defuses no ``@channel``
            text = str(s.__html__()).replace("&#39;", "'").replace("&#34;", '"')
            return cls(_defuse_mentions(text))
        return cls(slack_escape(str(s)))


class _TextSafe(Markup):
    """Final plain text: its mention sigils are defused."""

    __slots__ = ()

    @classmethod
    def escape(cls, s: Any) -> _TextSafe:
        if isinstance(s, cls):
            return s
        if hasattr(s, "__html__"):  # markup Jinja built: plain text has no entities
            return cls(_defuse_mentions(Markup(s.__html__()).unescape()))
        return cls(_defuse_mentions(str(s)))


def _html_safe(s: Any) -> Markup:
    if hasattr(s, "__html__"):
        return Markup(s.__html__())
    return Markup(html.escape(str(s)))


def _blank(value: Any) -> bool:
    return value is None or isinstance(value, Undefined) or not str(value).strip()


def _term_list(terms: Any) -> list[str]:
    if terms is None or isinstance(terms, Undefined):
        return []
    if isinstance(terms, str):
        return [terms]
    try:
        return [str(t) for t in terms if not _blank(t)]
    except TypeError:
        return []


@dataclass(frozen=True)
class _Helpers:
    """A kind's escaping and the helpers its templates get."""

    escape: Callable[[Any], Markup]
    highlight: Callable[..., Markup]
    bold: Callable[[Any], Markup]
    link: Callable[..., Markup]


def _link_parts(url: Any, label: Any) -> tuple[str, str | None, Any]:
    """(the URL as text, the URL when it may be clickable (http(s)), the label or None)."""
    text = "" if _blank(url) else str(url).strip()
    return text, _http_link(text), (None if _blank(label) else label)


def _html_highlight(text: Any, terms: Any = ()) -> Markup:
    if _blank(text):
        return Markup()
    if hasattr(text, "__html__"):  # already markup: nothing can be marked safely in it
        return _html_safe(text)
    return Markup(highlight(str(text), _term_list(terms), html.escape, lambda t: f"<mark>{t}</mark>"))


def _html_bold(value: Any) -> Markup:
    return Markup() if _blank(value) else Markup(f"<strong>{_html_safe(value)}</strong>")


def _html_link(url: Any, label: Any = None) -> Markup:
    """``<a href="url">label</a>`` for an http(s) URL; otherwise the label (or URL) as text."""
    text, target, label = _link_parts(url, label)
    shown = _html_safe(text if label is None else label)
    return Markup(f'<a href="{html.escape(target)}">{shown}</a>') if target else shown


def _slack_url(link: str) -> str:
    """A link as Slack's ``<url|label>`` needs it: no ``<``, ``>`` or ``|`` inside."""
    return re.sub(r"[<>|]", lambda m: quote(m.group()), link)


def _slack_highlight(text: Any, terms: Any = ()) -> _SlackSafe:
    if _blank(text):
        return _SlackSafe()
    if hasattr(text, "__html__"):
        return _SlackSafe.escape(text)
    # mentions are defused on the raw text first, so no piece can complete one
    return _SlackSafe(highlight(_defuse_mentions(str(text)), _term_list(terms), _slack_entities, _slack_bold))


def _slack_bold_safe(value: Any) -> _SlackSafe:
    return _SlackSafe() if _blank(value) else _SlackSafe(_slack_bold(_SlackSafe.escape(value)))


def _slack_link(url: Any, label: Any = None) -> _SlackSafe:
    """``<url|label>`` for an http(s) URL; otherwise the label (or URL) as inert text."""
    text, target, label = _link_parts(url, label)
    shown = None if label is None else _SlackSafe.escape(label)
    if target:
        return _SlackSafe(f"<{_slack_url(target)}|{shown}>" if shown else f"<{_slack_url(target)}>")
    return shown if shown is not None else _SlackSafe.escape(text)


def _text_highlight(text: Any, terms: Any = ()) -> _TextSafe:
    return _TextSafe() if _blank(text) else _TextSafe.escape(text)


def _text_bold(value: Any) -> _TextSafe:
    return _TextSafe() if _blank(value) else _TextSafe.escape(value)


def _text_link(url: Any, label: Any = None) -> _TextSafe:
    """``label (url)``, or the URL alone (plain text: nothing is clickable by us)."""
    text, _, label = _link_parts(url, label)
    if label is None:
        return _TextSafe.escape(text)
    if not text:
        return _TextSafe.escape(label)
    return _TextSafe(f"{_TextSafe.escape(label)} ({_TextSafe.escape(text)})")


_HELPERS: dict[str, _Helpers] = {
    "email": _Helpers(_html_safe, _html_highlight, _html_bold, _html_link),
    "slack": _Helpers(_SlackSafe.escape, _slack_highlight, _slack_bold_safe, _slack_link),
    "other": _Helpers(_TextSafe.escape, _text_highlight, _text_bold, _text_link),
}
_BUILTIN = {"email": "email.html.j2", "slack": "slack.md.j2", "other": "text.txt.j2"}
_REFUSED = {nodes.Extends: "extends", nodes.Include: "include", nodes.Import: "import",
            nodes.FromImport: "from ... import"}


def _finalizer(escape: Callable[[Any], Markup]) -> Callable[[Any], Markup]:
    """Escape every ``{{ }}`` value that is not final markup of the kind; None is empty."""

    def finalize(value: Any) -> Markup:
        if value is None:
            return escape("")
        if isinstance(value, Undefined):
            str(value)  # a StrictUndefined (built-in templates) raises here
            return escape("")
        return escape(value)

    return finalize


def _unchanged(value: Any, *args: Any, **kwargs: Any) -> Any:
    """Stands in for ``|safe`` (and ``|urlize`` outside HTML): user text stays escaped."""
    return value


class _Sandbox(SandboxedEnvironment):
    """The sandbox for user templates; reaching for an unsafe attribute is an error at once
    (Jinja's default renders it as an undefined value, which a forgiving one hides)."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


@cache
def _environment(kind: Kind, user: bool) -> Environment:
    """The Jinja environment for ``kind``: sandboxed and forgiving (a missing key renders
    empty) for user templates, strict for the built-in ones; escaping as the module doc says."""
    helpers = _HELPERS[kind]
    env_class = _Sandbox if user else Environment
    env = env_class(
        autoescape=True,  # Jinja then tracks what is safe through macros, ``~`` and ``|join``
        finalize=_finalizer(helpers.escape),
        undefined=ChainableUndefined if user else StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        cache_size=0,
    )
    env.filters.update(highlight=helpers.highlight, bold=helpers.bold, link=helpers.link, safe=_unchanged)
    if kind != "email":
        env.filters["urlize"] = _unchanged
    env.globals["link"] = helpers.link
    return env


def _compile(env: Environment, source: str, name: str, filename: str) -> Template:
    try:
        tree = env.parse(source, name, filename)
        for node in tree.find_all(tuple(_REFUSED)):
            tag = _REFUSED[type(node)]
            raise TemplateFailure(f"{name}:{node.lineno}: {{% {tag} %}} is not supported "
                                  "(a channel template is one self-contained file)")
        code = env.compile(tree, name, filename)
    except TemplateSyntaxError as e:
        raise TemplateFailure(f"{name}:{e.lineno}: {one_line(e.message or str(e), REASON_MAX)}") from None
    return env.template_class.from_code(env, code, env.make_globals(None))


def load_template(path: str | os.PathLike[str], kind: Kind) -> Template:
    """A channel's own template for ``kind``, read and compiled (sandboxed, forgiving).
    Raises TemplateFailure with a one-line reason."""
    p = Path(path)
    name = p.name or str(path)
    try:
        source = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise TemplateFailure(f"{name}: not UTF-8 text (bad byte at offset {e.start})") from None
    except OSError as e:
        raise TemplateFailure(f"cannot read {os.fspath(path)}: {e.strerror or type(e).__name__}") from None
    return _compile(_environment(kind, True), source, name, str(p))


def check_template(path: str) -> str | None:
    """None when the template file exists, is readable and compiles; else a one-line reason,
    with the template's line when it does not compile (``alert.j2:3: unexpected '}'``).
    (Every kind accepts the same syntax, filters and helpers.)"""
    try:
        load_template(path, "other")
    except TemplateFailure as e:
        return str(e)
    return None


@cache
def builtin_template(kind: Kind) -> Template:
    """The shipped template for ``kind`` (``monitor/templates/``), compiled once."""
    resource = resources.files(__package__) / "templates" / _BUILTIN[kind]
    return _compile(_environment(kind, False), resource.read_text(encoding="utf-8"), _BUILTIN[kind], str(resource))


def _template_for(kind: Kind, template: Template | str | os.PathLike[str] | None) -> Template:
    if template is None:
        return builtin_template(kind)
    if isinstance(template, Template):
        return template
    return load_template(template, kind)


def _render_failure(e: BaseException, template: Template) -> str:
    """``name.j2:LINE: what`` for an exception raised while ``template`` rendered (Jinja
    rewrites the traceback so a frame of the template file carries the template's line)."""
    line = e.lineno if isinstance(e, TemplateSyntaxError) else None
    tb = e.__traceback__
    while tb is not None:
        if template.filename and tb.tb_frame.f_code.co_filename == template.filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    where = f"{template.name or 'template'}:{line}" if line else (template.name or "template")
    what = str(e) if isinstance(e, TemplateError) and str(e) else f"{type(e).__name__}: {e}"
    return one_line(f"{where}: {what}", REASON_MAX)


# --------------------------------------------------------------------------- rendering


def _alert_entry(n: Notification) -> SimpleNamespace:
    """One story as templates see it (every value one line, capped). A namespace, not a dict:
    a key like ``update`` must not resolve to a dict method in a template."""
    outlets = _outlets(n)
    clickable = _http_link(n.link)
    return SimpleNamespace(
        id=n.alert_id,
        title=one_line(n.title, TITLE_MAX) or "(untitled)",
        heading=_heading(n),
        link=clickable or (one_line(n.link, 500) if n.link and n.link.strip() else None),
        source=one_line(n.source, 200),
        outlets=outlets,
        outlet_count=len(outlets) or 1,
        published=_published(n),
        watchlists=[SimpleNamespace(name=one_line(w.name, 80), severity=one_line(w.severity, 20),
                                    score=_score(w.score), terms=[one_line(t, 80) for t in w.terms])
                    for w in n.watchlists],
        terms=[one_line(t, 200) for t in _terms(n)],
        snippet=_snippet(n),
        update=n.update,
    )


def _severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def _groups(alerts: list[SimpleNamespace]) -> list[SimpleNamespace]:
    """Stories by watchlist (a story under each watchlist it matched, in the order given);
    groups by severity, highest first, then by name."""
    groups: dict[str, SimpleNamespace] = {}
    unmatched = [SimpleNamespace(name="(no watchlist)", severity=SEVERITIES[0])]
    for alert in alerts:
        for w in alert.watchlists or unmatched:
            g = groups.setdefault(w.name, SimpleNamespace(watchlist=w.name, severity=w.severity, alerts=[]))
            if _severity_rank(w.severity) > _severity_rank(g.severity):
                g.severity = w.severity
            if not any(a is alert for a in g.alerts):
                g.alerts.append(alert)
    return sorted(groups.values(), key=lambda g: (-_severity_rank(g.severity), g.watchlist))


def _context(alerts: list[SimpleNamespace], *, digest: bool, subject: str, channel: str, folded: int = 0,
             since: datetime | None = None, until: datetime | None = None, omitted: int = 0) -> dict[str, Any]:
    return {
        "alerts": alerts,
        "digest": digest,
        "count": len(alerts) + omitted,
        "omitted": omitted,
        "folded": folded,
        "since": _utc(since) if since else None,
        "until": _utc(until) if until else None,
        "groups": _groups(alerts),
        "subject": subject,
        "channel": one_line(channel, 80),
    }


def digest_subject(d: Digest) -> str:
    """``[digest] 12 stories since 2026-11-23 08:00 UTC (3 folded in by the rate limit)``."""
    count = len(d.entries)
    subject = f"[digest] {count} {'story' if count == 1 else 'stories'}"
    if d.since is not None:
        subject += f" since {_utc(d.since)}"
    if d.folded:
        subject += f" ({d.folded} folded in by the rate limit)"
    return one_line(subject, SUBJECT_MAX)


def _escape_for(kind: Kind, text: str) -> str:
    return html.escape(text) if kind == "email" else slack_escape(text) if kind == "slack" else _defuse_mentions(text)


def _message(kind: Kind, subject: str, body: str) -> Message:
    """The Message for ``kind``: email is HTML with the subject; Slack has no title (its
    mrkdwn is final, capped by whole lines); other is plain text with a defused title."""
    body = body.strip() or (f"*{slack_escape(subject)}*" if kind == "slack" else _escape_for(kind, subject))
    if kind == "email":
        return Message(subject, body, "html")
    if kind == "slack":
        return Message("", _fit_lines([line.rstrip() for line in body.split("\n")], SLACK_TEXT_MAX), None)
    return Message(_defuse_mentions(subject), body, "text")


def _fit_lines(lines: list[str], limit: int) -> str:
    """Join lines, dropping whole trailing lines (never half an entity or link) to fit."""
    kept: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > limit - 2:
            kept.append("…")
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)


def _render(kind: Kind, template: Template | str | os.PathLike[str] | None, context: Mapping[str, Any]) -> str:
    tmpl = _template_for(kind, template)
    try:
        return tmpl.render(context)
    except Exception as e:  # whatever a template does wrong is a TemplateFailure
        raise TemplateFailure(_render_failure(e, tmpl)) from e


def render(n: Notification, kind: Kind, template: Template | str | os.PathLike[str] | None = None) -> Message:
    """One alert for a channel of ``kind``; ``template``: a compiled template (see
    :func:`load_template`), a template file, or None for the built-in one. Raises
    TemplateFailure when the template cannot be loaded or fails."""
    entry = _alert_entry(n)
    context = _context([entry], digest=False, subject=entry.heading, channel=n.channel)
    return _message(kind, entry.heading, _render(kind, template, context))


def render_digest(d: Digest, kind: Kind, template: Template | str | os.PathLike[str] | None = None) -> Message:
    """Several stories in one message (``d.entries`` newest first), same template as alerts."""
    subject = digest_subject(d)
    listed = _most_severe(d.entries, DIGEST_LIST_MAX)
    context = _context([_alert_entry(n) for n in listed], digest=True, subject=subject, channel=d.channel,
                       folded=d.folded, since=d.since, until=d.until, omitted=len(d.entries) - len(listed))
    return _message(kind, subject, _render(kind, template, context))


def _most_severe(entries: Sequence[Notification], limit: int) -> list[Notification]:
    """At most ``limit`` of ``entries``: the most severe (by their most severe watchlist), the
    newest first among equals (``entries`` come newest first), in their given order."""
    if len(entries) <= limit:
        return list(entries)

    def rank(i: int) -> tuple[int, int]:
        hits = entries[i].watchlists
        return -max((_severity_rank(w.severity) for w in hits), default=-1), i

    return [entries[i] for i in sorted(sorted(range(len(entries)), key=rank)[:limit])]


def render_notice(notice: Notice, kind: Kind) -> Message:
    """An operator notice: subject ``[monitor] subject``, the body's lines escaped for ``kind``."""
    subject = one_line(f"[monitor] {one_line(notice.subject, SUBJECT_MAX)}", SUBJECT_MAX)
    lines = [_truncate(_CONTROL.sub(" ", line).rstrip(), NOTICE_LINE_MAX) for line in notice.body.splitlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if kind == "email":
        body = "<p>" + "<br>\n".join(html.escape(line) for line in lines) + "</p>" if lines else ""
    elif kind == "slack":
        body = "\n".join([f"*{slack_escape(subject)}*", *(slack_escape(line) for line in lines)])
    else:
        body = "\n".join(_defuse_mentions(line) for line in lines)
    return _message(kind, subject, body)


def render_email(n: Notification, template: Template | str | os.PathLike[str] | None = None) -> Message:
    """Subject ``[wl] title`` (one line, capped) and an HTML body; Apprise sends it as
    multipart/alternative with a plain-text part converted from the HTML."""
    return render(n, "email", template)


def render_slack(n: Notification, template: Template | str | os.PathLike[str] | None = None) -> Message:
    """Final Slack mrkdwn (delivered verbatim): ``*[wl] <link|title>*`` then source,
    published, watchlists with terms, and the snippet as a quote."""
    return render(n, "slack", template)


def render_text(n: Notification, template: Template | str | os.PathLike[str] | None = None) -> Message:
    """Title ``[wl] title`` and a plain-text body, for every other kind of channel."""
    return render(n, "other", template)


# --------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class SendResult:
    ok: bool
    error: str | None = None


class _ToAppriseLogger(logging.Handler):
    """Hands a plugin's record on to the "apprise" logger when that logger's level admits it,
    so our DEBUG capture of failure details does not leak DEBUG lines into the app's log."""

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger(apprise.LOGGER_NAME)
        if record.levelno >= target.getEffectiveLevel():
            target.handle(record)


_PLUGIN_LOGGER = "apprise.monitor"
_plugin_logger_lock = threading.Lock()


def _plugin_logger() -> logging.Logger:
    """The logger our plugin instances log to: DEBUG (so a send's "Socket Exception: ...
    Connection refused" detail reaches its result), not propagating, forwarded by level."""
    logger = logging.getLogger(_PLUGIN_LOGGER)
    with _plugin_logger_lock:
        if not any(isinstance(h, _ToAppriseLogger) for h in logger.handlers):
            logger.setLevel(logging.DEBUG)
            logger.propagate = False
            logger.addHandler(_ToAppriseLogger())
    return logger


@dataclass
class _Channel:
    name: str
    kind: Kind
    apprise: apprise.Apprise | None
    target: str  # host[:port] or service name, for failure reasons
    error: str | None = None
    template: Template | None = field(default=None, repr=False)  # its own, compiled; None: built-in
    template_error: str | None = None  # its own template could not be loaded


def _bound_timeouts(plugin: object, limit: float) -> None:
    for attr in ("socket_connect_timeout", "socket_read_timeout"):
        if not hasattr(plugin, attr):
            continue
        value = getattr(plugin, attr)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0 or value > limit:
            setattr(plugin, attr, limit)


def _plugin_target(plugin: object, kind: Kind) -> str:
    """host[:port] of the endpoint for failure reasons (Slack's "host" is a token: not shown)."""
    host = getattr(plugin, "smtp_host", None) or (getattr(plugin, "host", None) if kind != "slack" else None)
    if not isinstance(host, str) or not host:
        return str(getattr(plugin, "service_name", "the service"))
    port = getattr(plugin, "port", None)
    return f"{host}:{port}" if isinstance(port, int) else host


def _build_channel(cfg: ChannelConfig, asset: apprise.AppriseAsset, timeout: float) -> _Channel:
    url = cfg.url.strip()
    kind = channel_kind(url)
    try:
        plugin = apprise.Apprise.instantiate(url, asset=asset, suppress_exceptions=False)
    except Exception as e:
        plugin, why = None, one_line(str(e), REASON_MAX)
    else:
        why = validate_url(url) if plugin is None else None
    if plugin is None:
        error = f"channel '{cfg.name}': Apprise rejected its URL ({why or 'unknown reason'})"
        log.warning("%s", error)
        return _Channel(cfg.name, kind, None, cfg.name, error)
    _bound_timeouts(plugin, timeout)
    plugin.logger = _plugin_logger()
    if kind == "slack" and hasattr(plugin, "use_blocks"):
        plugin.use_blocks = True  # the only path that sends our mrkdwn verbatim (see module doc)
    app = apprise.Apprise(asset=asset)
    app.add(plugin)
    return _Channel(cfg.name, kind, app, _plugin_target(plugin, kind))


def _load_channel_template(ch: _Channel, cfg: ChannelConfig) -> None:
    """Compile the channel's own template now; when it cannot be, its alerts and digests
    fail with the reason (config checking reports it before the daemon gets here)."""
    if cfg.template is None:
        return
    try:
        ch.template = load_template(cfg.template, ch.kind)
    except TemplateFailure as e:
        ch.template_error = f"template error: {e}"
        log.warning("channel '%s': %s", cfg.name, ch.template_error)


class Notifier:
    """Sends alerts, digests and notices to the configured channels (one Apprise object per
    enabled channel; each channel's template compiled once, here)."""

    def __init__(self, channels: list[ChannelConfig], timeout: float = 30.0):
        if not timeout > 0:
            raise ValueError(f"timeout must be positive (got {timeout!r})")
        self.timeout = float(timeout)
        asset = _safe_asset(self.timeout)
        self._channels: dict[str, _Channel] = {}
        for c in channels:
            if c.enabled:
                ch = self._channels[c.name] = _build_channel(c, asset, self.timeout)
                _load_channel_template(ch, c)

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    def kind(self, channel: str) -> Kind | None:
        ch = self._channels.get(channel)
        return ch.kind if ch else None

    def _usable(self, channel: str) -> _Channel | SendResult:
        ch = self._channels.get(channel)
        if ch is None:
            return SendResult(False, f"channel '{channel}' is not configured")
        if ch.apprise is None:
            return SendResult(False, ch.error)
        return ch

    async def send(self, notification: Notification) -> SendResult:
        """Render for the channel's kind and deliver; a failure is a result, never an exception."""
        return await self._render_and_deliver(notification.channel, lambda ch: render(notification, ch.kind, ch.template))

    async def send_digest(self, digest: Digest) -> SendResult:
        """One message listing the digest's stories to ``digest.channel`` (never raises)."""
        return await self._render_and_deliver(digest.channel, lambda ch: render_digest(digest, ch.kind, ch.template))

    async def send_notice(self, channel: str, notice: Notice) -> SendResult:
        """An operator notice to ``channel`` (the built-in notice format: it does not depend on
        the channel's template, so a broken template cannot silence it). Never raises."""
        ch = self._usable(channel)
        if isinstance(ch, SendResult):
            return ch
        return await self._dispatch(ch, render_notice(notice, ch.kind))

    async def _render_and_deliver(self, channel: str, make: Callable[[_Channel], Message]) -> SendResult:
        ch = self._usable(channel)
        if isinstance(ch, SendResult):
            return ch
        if ch.template_error is not None:
            return SendResult(False, ch.template_error)
        try:
            message = make(ch)
        except TemplateFailure as e:
            log.warning("channel '%s': template error: %s", ch.name, e)
            return SendResult(False, one_line(f"template error: {e}", REASON_MAX))
        return await self._dispatch(ch, message)

    async def _dispatch(self, ch: _Channel, message: Message) -> SendResult:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._deliver, ch, message), self.timeout + 1.0)
        except TimeoutError:
            return SendResult(False, f"timed out after {self.timeout:g} s")
        except Exception as e:  # an Apprise bug must not take the daemon down
            log.exception("channel '%s': Apprise raised", ch.name)
            return SendResult(False, one_line(f"Apprise raised {type(e).__name__}: {e}", REASON_MAX))

    def _deliver(self, ch: _Channel, message: Message) -> SendResult:
        assert ch.apprise is not None
        result = ch.apprise.notify(
            body=message.body,
            title=message.title,
            body_format=message.body_format,
            timeout=self.timeout,
            log_level=logging.DEBUG,
        )
        if result:
            return SendResult(True)
        if result.status == apprise.AppriseResultStatus.TIMEOUT:
            return SendResult(False, f"timed out after {self.timeout:g} s")
        return SendResult(False, failure_reason([(e.level, e.message) for e in result.logs()], ch.target))


# --------------------------------------------------------------------------- failure reasons

_HTTP_ERROR = re.compile(r"(?::\s*(?P<text>[^:]*?))?\.?,?\s*error=(?P<code>\d{3})\b")
_URL_IN_LOG = re.compile(r"\bURL:\s*(https?://\S+)")
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*([^'\"()\]]+)")
_NOISY = ("DEBUG", "TRACE")


def _socket_problem(detail: str) -> str:
    low = detail.lower()
    for needle, reason in (
        ("refused", "connection refused"),
        ("timed out", "timed out"),
        ("timeout", "timed out"),
        ("name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("temporary failure in name resolution", "host name not found"),
        ("getaddrinfo", "host name not found"),
        ("reset by peer", "connection reset"),
        ("unreachable", "network unreachable"),
        ("certificate", "TLS certificate problem"),
    ):
        if needle in low:
            return reason
    m = _ERRNO.search(detail)
    return one_line(m.group(1).strip().lower() if m else detail, 160)


def failure_reason(entries: list[tuple[str, str]], target: str) -> str:
    """A short operator-facing reason from Apprise's log of one failed attempt.

    ``entries`` are (level name, message) in order; ``target`` names the endpoint when the
    log does not (host:port or the service name)."""
    problems = [m for level, m in entries if level not in _NOISY]
    details = [m for level, m in entries if level in _NOISY]
    for m in details:
        url = _URL_IN_LOG.search(m)
        if url:
            try:
                parts = urlsplit(url.group(1))
                if parts.hostname:
                    target = parts.hostname + (f":{parts.port}" if parts.port else "")
            except ValueError:
                pass
            break
    for m in reversed(problems):
        http = _HTTP_ERROR.search(m)
        if http:
            text = (http.group("text") or "").strip().rstrip(".")
            extra = f" ({one_line(text, 80)})" if text else ""
            return f"HTTP {http.group('code')} from {target}{extra}"
    for m in reversed(details):
        if m.startswith("Socket Exception:"):
            problem = _socket_problem(m.removeprefix("Socket Exception:").strip())
            if problem == "connection refused":
                return f"connection refused by {target}"
            if problem == "timed out":
                return f"timed out waiting for {target}"
            return one_line(f"{problem} ({target})", REASON_MAX)
    if problems:
        return one_line(problems[-1], REASON_MAX)
    return f"{target} did not accept the notification (Apprise gave no reason)"
