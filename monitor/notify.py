"""Notify: render a Notification for its channel and deliver it through Apprise.

Rules:
- This is the only module that imports Apprise. Each enabled channel's URL is parsed once,
  when the Notifier is built (one Apprise object per channel); ``validate_url`` checks a URL
  the same way, without touching the network.
- A channel's kind comes from its URL: ``mailto``/``mailtos`` -> email, ``slack`` (or a
  native ``https://hooks.slack.com/...`` URL) -> slack, anything else -> other.
- Rendering is pure (``render_email``, ``render_slack``, ``render_text``). Every message
  leads with ``[watchlist, ...] title`` and lists link, source (and outlets when several
  reposted the story), published time in UTC, each watchlist with its severity, score and
  matched terms, and the snippet.
- Matched terms are highlighted in the snippet: ``<mark>`` in email HTML, bold in Slack
  (terms in the watchlist lines are bold too); plain text lists them only. Highlighting is
  whole-word, case-insensitive, longest term first, found on the raw text before escaping
  (:func:`highlight`), so it never lands inside an entity.
- User-controlled text (title, link, source, outlets, terms, snippet) is inert in every
  format: HTML-escaped for email, ``& < >`` entity-escaped for Slack, and mention openers
  (``<!channel>``, ``<@U..>``, ``<#C..>``, ``@here``/``@channel``/``@everyone``) broken
  with an invisible WORD JOINER after the sigil for Slack and plain text. A link is only
  made clickable when it is http(s). Subjects and titles are one line: control characters
  become spaces, runs of whitespace collapse, length is capped.
- Formats: email is HTML (Apprise adds the plain-text alternative); other is plain text;
  Slack is our own final mrkdwn passed through *untouched* in a Block Kit section - the
  only Apprise 2.x path that neither re-escapes it nor turns ``&lt;!channel&gt;`` back into
  a mention (its legacy passthrough does; its CommonMark path keeps a raw ``<!here>``).
- ``Notifier.send`` never raises for a delivery failure: it returns SendResult(False, why),
  why coming from Apprise's own log of the attempt ("HTTP 500 from host:port (...)",
  "connection refused by host:port", "timed out after 30 s"). An unknown or disabled
  channel is a failure too.
- Apprise's blocking send runs in a worker thread bounded by ``timeout``; every plugin's
  connect/read socket timeouts are clamped to at most ``timeout`` so no thread lingers.
- Apprise keeps nothing outside memory and reaches nothing but the channel's target:
  persistent storage is memory-only, no plugin paths or config files are read, templates
  are off, redirects are not followed, no keys are generated, times are UTC.
"""
from __future__ import annotations

import asyncio
import html
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from typing import Literal
from urllib.parse import quote, urlsplit

import apprise

from .config import ChannelConfig
from .model import Notification, WatchlistHit

log = logging.getLogger("monitor.notify")

Kind = Literal["email", "slack", "other"]

SUBJECT_MAX = 200  # one-line titles / email subjects
TITLE_MAX = 300  # the story title inside a body
SNIPPET_MAX = 1000
SLACK_TEXT_MAX = 2900  # Slack rejects a section text over 3000 characters
REASON_MAX = 300

WORD_JOINER = "\u2060"
_SLACK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)://")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# "<" (raw or escaped) then a Slack control sigil: <!channel> <!here> <@U123> <#C123> <!subteam^..>
_MENTION_OPENER = re.compile(r"(<|&lt;)(\s*)([!@#])")
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


def _published(n: Notification) -> str:
    if n.published is None:
        return "unknown"
    dt = n.published if n.published.tzinfo else n.published.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


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


def _hit_facts(w: WatchlistHit) -> str:
    """``high, score 4.5`` for a watchlist line."""
    return f"{one_line(w.severity, 20)}, score {_score(w.score)}"


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Message:
    """What Apprise is handed: a title, a body and the body's declared format
    (``html``/``text``; None hands the body to the plugin untouched)."""

    title: str
    body: str
    body_format: str | None


def render_email(n: Notification) -> Message:
    """Subject ``[wl] title`` (one line, capped) and an HTML body; Apprise sends it as
    multipart/alternative with a plain-text part converted from the HTML."""
    e = html.escape
    link = _http_link(n.link)
    title = e(one_line(n.title, TITLE_MAX) or "(untitled)")
    headline = f'<a href="{e(link)}">{title}</a>' if link else title
    facts = []
    if link:
        facts.append(f'Link: <a href="{e(link)}">{e(link)}</a>')
    elif n.link and n.link.strip():
        facts.append(f"Link: {e(one_line(n.link, 500))}")  # shown, not clickable
    facts.append(f"Source: {e(one_line(n.source, 200))}")
    outlets = _outlets(n)
    if outlets:
        facts.append(f"Outlets: {e(', '.join(outlets))}")
    facts.append(f"Published: {_published(n)}")
    out = [f"<p><strong>{headline}</strong></p>", f"<p>{'<br>'.join(facts)}</p>"]
    if n.watchlists:
        items = []
        for w in n.watchlists:
            terms = ", ".join(one_line(t, 80) for t in w.terms) or "no terms recorded"
            items.append(f"<li><strong>{e(one_line(w.name, 80))}</strong> ({e(_hit_facts(w))}): "
                         f"{e(terms)}</li>")
        out.append(f"<p>Watchlists:</p><ul>{''.join(items)}</ul>")
    snippet = _snippet(n)
    if snippet:
        marked = highlight(snippet, _terms(n), e, lambda t: f"<mark>{t}</mark>")
        out.append(f"<blockquote>{marked}</blockquote>")
    return Message(_heading(n), "\n".join(out), "html")


def _slack_url(link: str) -> str:
    """A link as Slack's ``<url|label>`` needs it: no ``<``, ``>`` or ``|`` inside."""
    return re.sub(r"[<>|]", lambda m: quote(m.group()), link)


def render_slack(n: Notification) -> Message:
    """Final Slack mrkdwn (delivered verbatim): ``*[wl] <link|title>*`` then source,
    published, watchlists with terms, and the snippet as a quote."""
    s = slack_escape
    link = _http_link(n.link)
    names = s(", ".join(one_line(w.name, 80) for w in n.watchlists))
    title = s(one_line(n.title, TITLE_MAX) or "(untitled)")
    headline = f"<{_slack_url(link)}|{title}>" if link else title
    lines = [f"*[{names}] {headline}*" if names else f"*{headline}*"]
    lines.append(f"Source: {s(one_line(n.source, 200))}")
    outlets = _outlets(n)
    if outlets:
        lines.append(f"Outlets: {s(', '.join(outlets))}")
    lines.append(f"Published: {_published(n)}")
    for w in n.watchlists:
        terms = ", ".join(_slack_bold(s(one_line(t, 80))) for t in w.terms) or "no terms recorded"
        lines.append(f"• *{s(one_line(w.name, 80))}* ({s(_hit_facts(w))}): {terms}")
    snippet = _snippet(n)
    if snippet:
        # mentions are defused on the raw text first, so no piece can complete one
        lines.append("> " + highlight(_defuse_mentions(snippet), _terms(n), _slack_entities, _slack_bold))
    return Message("", _fit_lines(lines, SLACK_TEXT_MAX), None)


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


def render_text(n: Notification) -> Message:
    """Title ``[wl] title`` and a plain-text body, for every other kind of channel."""
    d = _defuse_mentions
    lines = []
    if n.link and n.link.strip():
        lines.append(f"Link: {d(one_line(n.link, 500))}")
    lines.append(f"Source: {d(one_line(n.source, 200))}")
    outlets = _outlets(n)
    if outlets:
        lines.append(f"Outlets: {d(', '.join(outlets))}")
    lines.append(f"Published: {_published(n)}")
    if n.watchlists:
        lines.append("Watchlists:")
        for w in n.watchlists:
            terms = ", ".join(one_line(t, 80) for t in w.terms) or "no terms recorded"
            lines.append(f"- {d(one_line(w.name, 80))} ({d(_hit_facts(w))}): {d(terms)}")
    snippet = _snippet(n)
    if snippet:
        lines += ["", d(snippet)]
    return Message(d(_heading(n)), "\n".join(lines), "text")


def render(n: Notification, kind: Kind) -> Message:
    if kind == "email":
        return render_email(n)
    if kind == "slack":
        return render_slack(n)
    return render_text(n)


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


class Notifier:
    """Sends Notifications to the configured channels (one Apprise object per enabled channel)."""

    def __init__(self, channels: list[ChannelConfig], timeout: float = 30.0):
        if not timeout > 0:
            raise ValueError(f"timeout must be positive (got {timeout!r})")
        self.timeout = float(timeout)
        asset = _safe_asset(self.timeout)
        self._channels = {c.name: _build_channel(c, asset, self.timeout) for c in channels if c.enabled}

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    def kind(self, channel: str) -> Kind | None:
        ch = self._channels.get(channel)
        return ch.kind if ch else None

    async def send(self, notification: Notification) -> SendResult:
        """Render for the channel's kind and deliver; a failure is a result, never an exception."""
        ch = self._channels.get(notification.channel)
        if ch is None:
            return SendResult(False, f"channel '{notification.channel}' is not configured")
        if ch.apprise is None:
            return SendResult(False, ch.error)
        message = render(notification, ch.kind)
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
