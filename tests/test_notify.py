"""Notify: rendering per channel kind, and delivery through Apprise to real loopback sinks
(aiosmtpd, an HTTP receiver, Slack's webhook client pointed at the receiver)."""
from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from apprise.plugins.slack import NotifySlack
from sinks import SilentServer, free_port

from monitor import notify
from monitor.config import ChannelConfig
from monitor.model import Digest, Notice, Notification, WatchlistHit
from monitor.notify import (
    SLACK_TEXT_MAX,
    WORD_JOINER,
    Notifier,
    SendResult,
    TemplateFailure,
    channel_kind,
    check_template,
    failure_reason,
    load_template,
    render,
    render_digest,
    render_email,
    render_notice,
    render_slack,
    render_text,
    slack_escape,
    validate_url,
)

SLACK_URL = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
TITLE = "North Korea test-fires ICBM into Sea of Japan"
LINK = "https://news.example.org/world/icbm-test?id=42&ref=rss"
HOSTILE = "<!channel> Missile launch & <script>"
BOUND = 10.0  # seconds: every failure must come back well within this


def make(channel: str = "desk", **changes) -> Notification:
    n = Notification(
        alert_id=7,
        channel=channel,
        title=TITLE,
        link=LINK,
        source="Reuters World",
        published=datetime(2026, 3, 4, 5, 6, tzinfo=UTC),
        watchlists=(WatchlistHit("strategic-deployments", 4.5, ("icbm", "sea of japan")),),
        snippet="The missile flew for 70 minutes before splashing down.",
        outlets=(),
    )
    return replace(n, **changes)


def send(notifier: Notifier, n: Notification) -> tuple[SendResult, float]:
    start = time.monotonic()
    result = asyncio.run(notifier.send(n))
    return result, time.monotonic() - start


@pytest.fixture
def slack_receiver(receiver, monkeypatch):
    """Slack's webhook client posting to the loopback receiver (restored after the test)."""
    monkeypatch.setattr(NotifySlack, "webhook_url", f"{receiver.base_url}/services")
    return receiver


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize("url", [
    "mailto://127.0.0.1:2525?from=monitor@example.org&to=desk@example.org",
    "mailtos://user:pass@smtp.example.org?to=desk@example.org",
    "json://127.0.0.1:8080/hook",
    SLACK_URL,
    "https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
])
def test_validate_url_accepts_supported_services(url):
    assert validate_url(url) is None


def test_validate_url_rejects_unknown_scheme():
    assert validate_url("notaservice://nowhere") == "unknown scheme 'notaservice'"


def test_validate_url_explains_what_the_plugin_refused():
    reason = validate_url("slack://not!a!token/B/C")
    assert reason is not None and reason.startswith("Apprise rejected it")
    assert validate_url("just words") is not None


@pytest.mark.parametrize(("url", "kind"), [
    ("mailto://h?to=a@example.org", "email"),
    ("MAILTOS://h?to=a@example.org", "email"),
    (SLACK_URL, "slack"),
    ("https://hooks.slack.com/services/T1/B1/C1", "slack"),
    ("json://127.0.0.1/hook", "other"),
    ("https://example.org/hook", "other"),
    ("discord://a/b", "other"),
])
def test_channel_kind_by_scheme(url, kind):
    assert channel_kind(url) == kind


# --------------------------------------------------------------------------- rendering


def test_email_subject_lists_watchlists_in_order_and_is_one_line():
    n = make(title="Missile\r\nBcc: attacker@example.org\x00\tX-Injected: yes\u2028end",
             watchlists=(WatchlistHit("wl-b", 1, ()), WatchlistHit("wl-a", 2, ())))
    subject = render_email(n).title
    assert subject == "[wl-b, wl-a] Missile Bcc: attacker@example.org X-Injected: yes end"
    assert len(render_email(make(title="x" * 5000)).title) <= 200


def test_email_html_escapes_everything_user_controlled():
    n = make(title="<script>alert(1)</script>", source="<b>Src</b>", snippet="a <img src=x> & b",
             watchlists=(WatchlistHit("wl", 1, ("<i>term</i>",)),), outlets=("A<1>", "B&2"))
    body = render_email(n).body
    for raw in ("<script>", "<b>Src", "<img", "<i>term", "A<1>"):
        assert raw not in body
    for escaped in ("&lt;script&gt;", "&lt;b&gt;Src", "&lt;img src=x&gt; &amp; b", "&lt;i&gt;term", "B&amp;2"):
        assert escaped in body


def test_email_only_links_http_urls():
    body = render_email(make(link="javascript:alert(1)")).body
    assert "href" not in body and "javascript:alert(1)" in body  # shown as text, never a link
    body = render_email(make(link='https://example.org/"onmouseover="x')).body
    assert 'href="https://example.org/&quot;onmouseover=&quot;x"' in body


def test_email_lists_source_outlets_published_watchlists_snippet():
    n = make(outlets=("Reuters", "AP", "AFP"), published=datetime(2026, 3, 4, 7, 6, tzinfo=timezone(timedelta(hours=2))),
             watchlists=(WatchlistHit("strategic-deployments", 4.5, ("icbm",)), WatchlistHit("missile-tests", 1.0 / 3, ())))
    body = render_email(n).body
    assert "Source: Reuters World" in body
    assert "Outlets: Reuters, AP, AFP" in body
    assert "Published: 2026-03-04 05:06 UTC" in body
    assert "strategic-deployments</strong> (high, score 4.5): icbm" in body
    assert "missile-tests</strong> (high, score 0.33): no terms recorded" in body
    assert "The missile flew for 70 minutes" in body
    assert "Outlets" not in render_email(make(outlets=("Reuters",))).body  # one outlet: nothing to add


def test_every_format_shows_each_watchlists_severity_score_and_terms():
    n = make(watchlists=(WatchlistHit("nuclear-tests", 7.25, ("nuclear test",), "critical"),
                         WatchlistHit("drills", 1, ("exercise",), "info")))
    assert "nuclear-tests</strong> (critical, score 7.25): nuclear test" in render_email(n).body
    assert "drills</strong> (info, score 1): exercise" in render_email(n).body
    slack = render_slack(n).body
    assert "• *nuclear-tests* (critical, score 7.25): *nuclear test*" in slack
    assert "• *drills* (info, score 1): *exercise*" in slack
    text = render_text(n).body
    assert "- nuclear-tests (critical, score 7.25): nuclear test" in text
    assert "- drills (info, score 1): exercise" in text


def _quote(body: str) -> str:
    (quote,) = re.findall(r"<blockquote>(.*)</blockquote>", body)
    return quote


def test_email_marks_matched_terms_in_the_snippet_whole_word_any_case():
    n = make(snippet="The ICBM flew over the Sea of\tJapan; icbm-class missiles, not ICBMs or sea-based ones.",
             watchlists=(WatchlistHit("a", 2, ("icbm", "sea of japan")),))
    assert _quote(render_email(n).body) == (
        "The <mark>ICBM</mark> flew over the <mark>Sea of Japan</mark>; <mark>icbm</mark>-class missiles, "
        "not ICBMs or sea-based ones.")


def test_email_marks_the_longest_term_first_and_terms_of_every_watchlist():
    n = make(snippet="Sea of Japan and the sea, a test-fire",
             watchlists=(WatchlistHit("a", 1, ("sea",)), WatchlistHit("b", 1, ("sea of japan", "test-fire"))))
    assert _quote(render_email(n).body) == (
        "<mark>Sea of Japan</mark> and the <mark>sea</mark>, a <mark>test-fire</mark>")


def test_email_highlighting_escapes_everything_and_never_marks_inside_an_entity():
    n = make(snippet='<b>AT&T</b> & "amp" <script>alert(1)</script> lt gt quot',
             watchlists=(WatchlistHit("a", 1, ("amp", "lt", "quot", "b", "script", "t")),))
    quote = _quote(render_email(n).body)
    assert "<b>" not in quote and "<script>" not in quote
    assert quote == ("&lt;<mark>b</mark>&gt;AT&amp;<mark>T</mark>&lt;/<mark>b</mark>&gt; &amp; "
                     "&quot;<mark>amp</mark>&quot; &lt;<mark>script</mark>&gt;alert(1)&lt;/<mark>script</mark>&gt; "
                     "<mark>lt</mark> gt <mark>quot</mark>")
    # a term that itself holds markup is escaped inside its mark
    n = make(snippet="see <i>x</i> here", watchlists=(WatchlistHit("a", 1, ("<i>x</i>",)),))
    assert _quote(render_email(n).body) == "see &lt;<mark>i&gt;x&lt;/i</mark>&gt; here"


def test_email_without_terms_shows_the_plain_snippet():
    n = make(snippet="a & b", watchlists=(WatchlistHit("a", 1, ()),))
    assert _quote(render_email(n).body) == "a &amp; b"


def test_slack_bolds_terms_in_the_snippet_and_keeps_mentions_defused():
    n = make(snippet="@channel ICBM <!here> & <@U123> launched: channel here",
             watchlists=(WatchlistHit("a", 1, ("icbm", "channel", "here", "u123", "launched")),))
    quote = render_slack(n).body.split("\n")[-1]
    assert re.search(r"<\s*[!@#]", quote) is None
    assert quote == (f"> @{WORD_JOINER}*channel* *ICBM* &lt;!{WORD_JOINER}*here*&gt; &amp; "
                     f"&lt;@{WORD_JOINER}*U123*&gt; *launched*: *channel* *here*")


def test_slack_escape_makes_control_sequences_inert():
    out = slack_escape("<!channel> <!here|here> <@U123ABC> <#C999> a & b @everyone")
    assert "<" not in out and ">" not in out
    assert "&amp;" in out and "&lt;!" + WORD_JOINER + "channel&gt;" in out
    assert "@" + WORD_JOINER + "everyone" in out


def test_slack_renders_mrkdwn_headline_with_link():
    body = render_slack(make(watchlists=(WatchlistHit("a", 1, ("x",)), WatchlistHit("b", 2, ("y", "z"))))).body
    first, *rest = body.split("\n")
    assert first == f"*[a, b] <{LINK}|{TITLE}>*"
    assert "Source: Reuters World" in rest and "Published: 2026-03-04 05:06 UTC" in rest
    assert "• *b* (high, score 2): *y*, *z*" in rest
    assert rest[-1] == "> The missile flew for 70 minutes before splashing down."


def test_slack_link_cannot_break_out_of_its_brackets():
    body = render_slack(make(link="https://example.org/a|b>c<d")).body
    assert "<https://example.org/a%7Cb%3Ec%3Cd|" in body
    assert "<javascript" not in render_slack(make(link="javascript:alert(1)|x")).body


def test_slack_text_stays_under_the_section_limit():
    many = tuple(WatchlistHit(f"wl-{i}", i, tuple(f"term-{j}" for j in range(20))) for i in range(40))
    body = render_slack(make(watchlists=many, snippet="s" * 5000)).body
    assert len(body) < 3000 and body.endswith("…")


def test_text_rendering_for_other_channels():
    msg = render_text(make(title="Line one\nline two", outlets=("Reuters", "AP")))
    assert msg.title == "[strategic-deployments] Line one line two"
    assert msg.body_format == "text"
    lines = msg.body.split("\n")
    assert lines[:4] == [f"Link: {LINK}", "Source: Reuters World", "Outlets: Reuters, AP",
                         "Published: 2026-03-04 05:06 UTC"]
    assert "- strategic-deployments (high, score 4.5): icbm, sea of japan" in lines
    assert render_text(make(published=None)).body.count("Published: unknown") == 1


def test_failure_reason_wording():
    assert failure_reason([("DEBUG", "JSON POST URL: http://10.0.0.5:8080/x (cert_verify=True)"),
                           ("WARNING", "Failed to send JSON POST notification: Bad gateway., error=502."),
                           ("DEBUG", "Response Details:\r\nb'upstream'")], "json") \
        == "HTTP 502 from 10.0.0.5:8080 (Bad gateway)"
    assert failure_reason([("WARNING", 'Connection error while submitting email to "mx"'),
                           ("DEBUG", "Socket Exception: [Errno 111] Connection refused")], "mx:25") \
        == "connection refused by mx:25"
    assert failure_reason([("WARNING", "Something odd happened.")], "x") == "Something odd happened."
    assert "no reason" in failure_reason([], "x")


# --------------------------------------------------------------------------- delivery: email


def test_email_arrives_as_multipart_with_plain_and_html(smtp):
    notifier = Notifier([ChannelConfig(name="desk", url=smtp.url())], timeout=10)
    result, _ = send(notifier, make())
    assert result == SendResult(True)
    (msg,) = smtp.wait_for(1)
    assert len(smtp.envelopes) == 1 and smtp.envelopes[0].rcpt_tos == ("desk@example.org",)
    assert msg["Subject"] == f"[strategic-deployments] {TITLE}"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    rich = msg.get_body(("html",))
    assert plain is not None and rich is not None
    text = plain.get_content()
    for expected in (TITLE, LINK, "Reuters World", "strategic-deployments", "icbm", "sea of japan"):
        assert expected in text
    assert f'<a href="{LINK.replace("&", "&amp;")}">' in rich.get_content()


def test_email_title_with_crlf_cannot_inject_headers(smtp):
    notifier = Notifier([ChannelConfig(name="desk", url=smtp.url())], timeout=10)
    title = "Missile\r\nBcc: attacker@example.org\r\nX-Injected: yes\r\n\r\nbody takeover"
    result, _ = send(notifier, make(title=title))
    assert result.ok, result.error
    (msg,) = smtp.wait_for(1)
    assert smtp.envelopes[0].rcpt_tos == ("desk@example.org",)
    assert msg["X-Injected"] is None and msg["Bcc"] is None
    assert msg["Subject"] == "[strategic-deployments] Missile Bcc: attacker@example.org X-Injected: yes body takeover"


def test_smtp_nobody_listening_fails_with_reason_in_bounded_time():
    port = free_port()
    url = f"mailto://127.0.0.1:{port}?from=monitor@example.org&to=desk@example.org"
    result, elapsed = send(Notifier([ChannelConfig(name="desk", url=url)], timeout=5), make())
    assert not result.ok
    assert result.error == f"connection refused by 127.0.0.1:{port}"
    assert elapsed < BOUND


# --------------------------------------------------------------------------- delivery: webhooks


def test_json_payload_carries_the_story(receiver):
    notifier = Notifier([ChannelConfig(name="hook", url=receiver.url("/hook"))], timeout=10)
    result, _ = send(notifier, make(channel="hook", outlets=("Reuters", "AP")))
    assert result == SendResult(True)
    (req,) = receiver.wait_for(1)
    assert req.path == "/hook"
    payload = req.json()
    assert payload["title"] == f"[strategic-deployments] {TITLE}"
    for expected in (LINK, "Reuters World", "Outlets: Reuters, AP", "strategic-deployments", "icbm",
                     "sea of japan", "2026-03-04 05:06 UTC", "70 minutes"):
        assert expected in payload["message"]


def test_receiver_answering_500_is_a_failure_with_reason(receiver):
    receiver.status = 500
    notifier = Notifier([ChannelConfig(name="hook", url=receiver.url())], timeout=5)
    result, elapsed = send(notifier, make(channel="hook"))
    assert not result.ok
    assert "500" in result.error and f"127.0.0.1:{receiver.port}" in result.error
    assert elapsed < BOUND
    assert len(receiver.requests) == 1


def test_webhook_nobody_listening_fails_with_reason():
    port = free_port()
    notifier = Notifier([ChannelConfig(name="hook", url=f"json://127.0.0.1:{port}/hook")], timeout=5)
    result, elapsed = send(notifier, make(channel="hook"))
    assert result == SendResult(False, f"connection refused by 127.0.0.1:{port}")
    assert elapsed < BOUND


@pytest.mark.parametrize("scheme", ["json", "mailto"])
def test_hung_peer_times_out_and_the_client_lets_go(scheme):
    """The URL asks for 30 s socket timeouts; the Notifier's 1 s wins, so no thread lingers."""
    with SilentServer() as silent:
        url = (f"json://127.0.0.1:{silent.port}/hook?cto=30&rto=30" if scheme == "json"
               else f"mailto://127.0.0.1:{silent.port}?from=m@example.org&to=d@example.org&cto=30")
        result, elapsed = send(Notifier([ChannelConfig(name="c", url=url)], timeout=1), make(channel="c"))
        assert not result.ok and "timed out" in result.error
        assert elapsed < 5
        (held,) = silent.wait_for(1, timeout=5)
        assert held < 5  # the plugin closed its socket itself, well before 30 s


def test_unknown_or_disabled_channel_is_a_failure_not_an_exception(receiver):
    notifier = Notifier([ChannelConfig(name="off", url=""), ChannelConfig(name="on", url=receiver.url())])
    assert notifier.channels == ["on"]
    assert send(notifier, make(channel="off"))[0] == SendResult(False, "channel 'off' is not configured")
    assert send(notifier, make(channel="nope"))[0] == SendResult(False, "channel 'nope' is not configured")
    assert receiver.requests == []


def test_failure_details_are_captured_without_leaking_debug_lines(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="apprise")  # as logs.setup() leaves it
    notifier = Notifier([ChannelConfig(name="hook", url=receiver.url()),
                         ChannelConfig(name="dead", url=f"json://127.0.0.1:{free_port()}/x")], timeout=5)
    assert send(notifier, make(channel="hook"))[0].ok
    assert "connection refused" in send(notifier, make(channel="dead"))[0].error  # needs Apprise's DEBUG detail
    from_apprise = [r for r in caplog.records if r.name.startswith("apprise")]
    assert from_apprise and all(r.levelno >= logging.WARNING for r in from_apprise)
    assert any("Connection error" in r.getMessage() for r in from_apprise)


def test_apprise_writes_nothing_to_home(receiver, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    notifier = Notifier([ChannelConfig(name="hook", url=receiver.url())])
    assert send(notifier, make(channel="hook"))[0].ok
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- delivery: Slack


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_slack_payload_keeps_user_content_inert(slack_receiver):
    notifier = Notifier([ChannelConfig(name="slack", url=SLACK_URL)], timeout=10)
    n = make(channel="slack", title=HOSTILE, source="<@U024BE7LH> wire", outlets=("<!here>", "AP"),
             snippet="ping <!everyone> and <#C024BE7LR|general> & @channel, <!subteam^SAZ94GDB8>",
             watchlists=(WatchlistHit("missile-tests", 2, ("<@U123|boss>", "launch")),))
    result, _ = send(notifier, n)
    assert result == SendResult(True)
    (req,) = slack_receiver.wait_for(1)
    assert req.path == "/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    payload = req.json()
    texts = _strings(payload)
    joined = "\n".join(texts)
    # No Slack control sequence from user text: nothing of the form <!..>, <@..>, <#..>.
    assert re.search(r"<\s*[!@#]", joined) is None, joined
    for mention in ("<!channel>", "<!here>", "<!everyone>", "<@U", "<#C"):
        assert mention not in joined
    assert "<script>" not in joined
    # The user text is there, entity-escaped, with its sigils broken.
    (text,) = [t for t in texts if t.startswith("*[missile-tests]")]
    assert text.split("\n")[0] == (f"*[missile-tests] <{LINK}|&lt;!{WORD_JOINER}channel&gt; "
                                   f"Missile launch &amp; &lt;script&gt;>*")
    assert "&amp;" in text and "@" + WORD_JOINER + "channel" in text


def test_slack_500_is_a_failure_with_reason(slack_receiver):
    slack_receiver.status = 500
    notifier = Notifier([ChannelConfig(name="slack", url=SLACK_URL)], timeout=5)
    result, elapsed = send(notifier, make(channel="slack"))
    assert not result.ok and "HTTP 500" in result.error
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in result.error  # the webhook secret stays out of reasons
    assert elapsed < BOUND


def test_slack_class_attribute_is_restored_after_tests():
    assert NotifySlack.webhook_url == "https://hooks.slack.com/services"


def test_snippet_shows_a_passage_around_the_first_matched_term_when_the_start_has_none():
    from monitor.pipeline import snippet

    text = "word " * 100 + "the ICBM flew far. " + "tail " * 100
    s = snippet(text, 100, ["icbm", "sea of japan"])
    assert s.startswith("… word") and s.endswith(" …") and "the ICBM flew far." in s and len(s) <= 104
    assert snippet(text, 100).startswith("word word")  # no terms: the start
    assert snippet("ICBM " + "x " * 100, 50, ["icbm"]).startswith("ICBM x")  # already in the start
    assert snippet("a\n short\ttext", 100, ["icbm"]) == "a short text"


# --------------------------------------------------------------------------- digests


def story(alert_id: int, title: str, minute: int, *hits: WatchlistHit, channel: str = "desk", **changes) -> Notification:
    return make(channel=channel, alert_id=alert_id, title=title, link=f"https://news.example.org/{alert_id}?a=1&b=2",
                published=datetime(2026, 11, 23, 7, minute, tzinfo=UTC), watchlists=hits,
                snippet=f"Report {alert_id}: the ICBM flew.", **changes)


def digest(channel: str = "desk", folded: int = 0, **changes) -> Digest:
    """Three stories, newest first: the newest matched two watchlists (one of them critical)."""
    entries = (
        story(3, "Newest: ICBM over Japan", 50, WatchlistHit("missile-tests", 2, ("icbm",)),
              WatchlistHit("nuclear-tests", 5, ("test",), "critical"), channel=channel),
        story(2, "Middle: navy drill", 40, WatchlistHit("drills", 1, ("drill",), "info"), channel=channel,
              outlets=("Reuters", "AP"), update=True),
        story(1, "Oldest: another launch", 30, WatchlistHit("missile-tests", 3, ()), channel=channel),
    )
    d = Digest(channel=channel, entries=entries, folded=folded, since=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
               until=datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    return replace(d, **changes)


def _positions(body: str, *needles: str) -> list[int]:
    found = [body.find(n) for n in needles]
    assert all(i >= 0 for i in found), (needles, body)
    return found


def test_digest_subject_counts_stories_since_and_folded():
    assert render_digest(digest(), "email").title == "[digest] 3 stories since 2026-11-23 08:00 UTC"
    assert render_digest(digest(folded=2), "email").title == (
        "[digest] 3 stories since 2026-11-23 08:00 UTC (2 folded in by the rate limit)")
    one = digest(entries=digest().entries[:1], since=None)
    assert render_digest(one, "email").title == "[digest] 1 story"
    assert render_digest(digest(folded=2), "other").title == render_digest(digest(folded=2), "email").title
    assert render_digest(digest(), "slack").title == ""  # Slack: the subject is the body's first line


@pytest.mark.parametrize("kind", ["email", "slack", "other"])
def test_digest_groups_by_watchlist_severity_first_newest_first(kind):
    body = render_digest(digest(), kind).body
    # groups: critical first, then high, then info; a story is listed under each watchlist it matched
    nuclear, missile, drills = _positions(body, "nuclear-tests", "missile-tests", "drills")
    assert nuclear < missile < drills
    assert body.count("Newest: ICBM over Japan") == 2
    # inside a group, stories stay newest first
    newest, oldest = _positions(body[missile:drills], "Newest: ICBM", "Oldest: another launch")
    assert newest < oldest
    assert "Middle: navy drill" in body[drills:] and "Middle: navy drill" not in body[:drills]
    assert "(now reported by 2 outlets)" in body  # a repost update says so
    # each story shows its score for the group's watchlist
    assert "score 5" in body.lower()[nuclear:missile] and "score 3" in body.lower()[missile:drills]


@pytest.mark.parametrize("kind", ["email", "slack", "other"])
def test_digest_body_says_how_many_were_folded_in(kind):
    assert "held back by" not in render_digest(digest(), kind).body
    body = render_digest(digest(folded=2), kind).body
    assert "2 of these stories were held back by" in body


def test_digest_slack_leads_with_the_subject_and_links_each_story():
    lines = render_digest(digest(folded=1), "slack").body.split("\n")
    assert lines[0] == "*[digest] 3 stories since 2026-11-23 08:00 UTC (1 folded in by the rate limit)*"
    assert any(line.startswith("• <https://news.example.org/3?a=1&b=2|Newest: ICBM over Japan> · ") for line in lines)
    assert "*nuclear-tests* (critical)" in lines


def test_digest_email_links_and_highlights_each_story():
    body = render_digest(digest(), "email").body
    assert '<a href="https://news.example.org/3?a=1&amp;b=2">Newest: ICBM over Japan</a>' in body
    assert "Report 3: the <mark>ICBM</mark> flew." in body
    assert "<h3>nuclear-tests (critical)</h3>" in body


def test_slack_digest_stays_under_the_section_limit_dropping_whole_lines():
    entries = tuple(story(i, f"Story {i} & <b>", i % 60, WatchlistHit("wl", 1, ("icbm",))) for i in range(200))
    body = render_digest(Digest("desk", entries), "slack").body
    assert len(body) <= SLACK_TEXT_MAX and body.endswith("\n…")
    lines = body.split("\n")
    assert lines[1].startswith("_The 100 most severe of these 200 stories are listed")  # never cut: it leads
    for line in lines[2:-1]:
        assert line == "" or line.startswith(("*wl*", "• <https://news.example.org/")), line
        assert line.count("<") == line.count(">")  # no half link


@pytest.mark.parametrize("kind", ["email", "slack", "other"])
def test_a_large_digest_lists_the_most_severe_stories_and_counts_the_rest(kind, monkeypatch):
    monkeypatch.setattr(notify, "DIGEST_LIST_MAX", 3)
    entries = tuple(  # newest first; stories 4 and 1 critical, the others info
        story(i, f"Story number {i}", i, WatchlistHit("wl", 1, ("icbm",), "critical" if i in (4, 1) else "info"))
        for i in range(6, 0, -1))
    message = render_digest(Digest("desk", entries), kind)
    assert message.title in ("[digest] 6 stories", "")
    body = message.body
    listed = [i for i in range(1, 7) if f"Story number {i}" in body]
    assert listed == [1, 4, 6]  # both critical ones, then the newest info one
    assert _positions(body, "Story number 4", "Story number 1") == sorted(_positions(body, "Story number 4",
                                                                                     "Story number 1"))
    assert "The 3 most severe of these 6 stories are listed; 3 more are not" in body
    small = render_digest(Digest("desk", entries[:3]), kind).body
    assert "most severe of these" not in small and all(f"Story number {i}" in small for i in (6, 5, 4))


# --------------------------------------------------------------------------- notices


def test_notice_has_a_monitor_subject_on_one_line_and_an_escaped_body():
    notice = Notice(id=1, kind="dead_letter", subject="2 deliveries dead-lettered\r\nBcc: x@y",
                    body="desk: alert 7 <!channel> & <b>: HTTP 500\nhook: alert 8: connection refused\n")
    email = render_notice(notice, "email")
    assert email.title == "[monitor] 2 deliveries dead-lettered Bcc: x@y" and email.body_format == "html"
    assert email.body == ("<p>desk: alert 7 &lt;!channel&gt; &amp; &lt;b&gt;: HTTP 500<br>\n"
                          "hook: alert 8: connection refused</p>")
    slack = render_notice(notice, "slack")
    assert slack.title == "" and slack.body.split("\n") == [
        "*[monitor] 2 deliveries dead-lettered Bcc: x@y*",
        f"desk: alert 7 &lt;!{WORD_JOINER}channel&gt; &amp; &lt;b&gt;: HTTP 500",
        "hook: alert 8: connection refused"]
    text = render_notice(notice, "other")
    assert text.title == "[monitor] 2 deliveries dead-lettered Bcc: x@y" and text.body_format == "text"
    assert text.body.split("\n")[0] == f"desk: alert 7 <!{WORD_JOINER}channel> & <b>: HTTP 500"


def test_notice_is_sent_to_the_named_channel(receiver):
    notifier = Notifier([ChannelConfig(name="admin", url=receiver.url("/admin"))], timeout=10)
    notice = Notice(id=3, kind="source_failing", subject="source 'wire' failing for 6 h", body="last error: HTTP 503")
    result = asyncio.run(notifier.send_notice("admin", notice))
    assert result == SendResult(True)
    (req,) = receiver.wait_for(1)
    assert req.json()["title"] == "[monitor] source 'wire' failing for 6 h"
    assert req.json()["message"] == "last error: HTTP 503"
    assert asyncio.run(notifier.send_notice("nope", notice)) == SendResult(False, "channel 'nope' is not configured")


# --------------------------------------------------------------------------- user templates

USER_TEMPLATE = """{# one template for alerts and digests #}
{% for alert in alerts %}
TITLE={{ alert.title }}
SOURCE={{ alert.source }}
SAFE={{ alert.title|safe }}
JOINED={{ alert.title|bold ~ " / " ~ alert.source }}
LINK={{ link(alert.link, alert.title) }}
MISSING=[{{ alert.no_such_key.deeper }}]
{% endfor %}
DIGEST={{ digest }} FOLDED={{ folded }} CHANNEL={{ channel }}
"""


@pytest.fixture
def user_template(tmp_path):
    path = tmp_path / "alert.j2"
    path.write_text(USER_TEMPLATE)
    return str(path)


def _field(body: str, name: str) -> str:
    (line,) = [line for line in body.split("\n") if line.startswith(name + "=")]
    return line[len(name) + 1:]


def test_user_template_values_are_escaped_for_every_kind(user_template):
    n = make(title=HOSTILE, source="<@U024BE7LH> @everyone wire", link="https://x.example/a?b=1&c=<2>")
    email = render(n, "email", user_template).body
    for name in ("TITLE", "SAFE"):  # |safe cannot un-escape user content
        assert _field(email, name) == "&lt;!channel&gt; Missile launch &amp; &lt;script&gt;"
    assert _field(email, "JOINED") == ("<strong>&lt;!channel&gt; Missile launch &amp; &lt;script&gt;</strong> / "
                                       "&lt;@U024BE7LH&gt; @everyone wire")
    assert _field(email, "LINK") == ('<a href="https://x.example/a?b=1&amp;c=&lt;2&gt;">'
                                     '&lt;!channel&gt; Missile launch &amp; &lt;script&gt;</a>')
    assert _field(email, "MISSING") == "[]"  # forgiving: a missing key renders empty
    assert "<script>" not in email

    slack = render(n, "slack", user_template).body
    inert = f"&lt;!{WORD_JOINER}channel&gt; Missile launch &amp; &lt;script&gt;"
    assert _field(slack, "TITLE") == inert and _field(slack, "SAFE") == inert
    assert _field(slack, "SOURCE") == f"&lt;@{WORD_JOINER}U024BE7LH&gt; @{WORD_JOINER}everyone wire"
    # markup Jinja joins from pieces is checked again: no mention survives the HTML-style escape
    assert _field(slack, "JOINED") == f"*{inert}* / &lt;@{WORD_JOINER}U024BE7LH&gt; @{WORD_JOINER}everyone wire"
    assert _field(slack, "LINK") == f"<https://x.example/a?b=1&c=%3C2%3E|{inert}>"
    assert re.search(r"<\s*[!@#]", slack) is None

    text = render(n, "other", user_template).body
    assert _field(text, "TITLE") == f"<!{WORD_JOINER}channel> Missile launch & <script>"
    assert _field(text, "JOINED") == (f"<!{WORD_JOINER}channel> Missile launch & <script> / "
                                      f"<@{WORD_JOINER}U024BE7LH> @{WORD_JOINER}everyone wire")
    assert "DIGEST=False FOLDED=0 CHANNEL=desk" in text


def test_user_template_renders_digests_with_the_same_context(user_template):
    body = render_digest(digest(folded=2), "other", user_template).body
    assert [line for line in body.split("\n") if line.startswith("TITLE=")] == [
        "TITLE=Newest: ICBM over Japan", "TITLE=Middle: navy drill", "TITLE=Oldest: another launch"]
    assert "DIGEST=True FOLDED=2 CHANNEL=desk" in body
    # the subject is ours, never the template's
    assert render_digest(digest(folded=2), "other", user_template).title.startswith("[digest] 3 stories")


def test_check_template_reports_syntax_errors_with_their_line(tmp_path, user_template):
    assert check_template(user_template) is None
    bad = tmp_path / "template.j2"
    bad.write_text("line one\n{{ alerts }}\n{{ alert.title }\n")
    assert check_template(str(bad)) == "template.j2:3: unexpected '}'"
    unknown = tmp_path / "filter.j2"
    unknown.write_text("\n\n\n{{ alerts|no_such_filter }}\n")
    assert check_template(str(unknown)) == "filter.j2:4: No filter named 'no_such_filter'."
    include = tmp_path / "include.j2"
    include.write_text("x\n{% include 'other.j2' %}\n")
    assert check_template(str(include)).startswith("include.j2:2: {% include %} is not supported")
    missing = tmp_path / "missing.j2"
    assert check_template(str(missing)) == f"cannot read {missing}: No such file or directory"
    assert check_template(str(tmp_path)) == f"cannot read {tmp_path}: Is a directory"
    binary = tmp_path / "binary.j2"
    binary.write_bytes(b"\xff\xfe{{ x }}")
    assert check_template(str(binary)).startswith("binary.j2: not UTF-8 text")
    with pytest.raises(TemplateFailure, match=r"template\.j2:3"):
        load_template(str(bad), "slack")


def test_template_is_compiled_once_when_the_notifier_is_built(tmp_path, receiver):
    path = tmp_path / "hook.j2"
    path.write_text("CUSTOM {{ alerts[0].title }} from {{ alerts[0].source }}")
    notifier = Notifier([ChannelConfig(name="hook", url=receiver.url("/hook"), template=str(path))], timeout=10)
    path.write_text("{{ changed after the notifier was built")  # not read again
    result, _ = send(notifier, make(channel="hook", source="<!here> wire"))
    assert result == SendResult(True)
    (req,) = receiver.wait_for(1)
    assert req.json()["title"] == f"[strategic-deployments] {TITLE}"  # the subject is never the template's
    assert req.json()["message"] == f"CUSTOM {TITLE} from <!{WORD_JOINER}here> wire"


def test_template_failing_at_render_time_is_a_failed_send_with_its_line(tmp_path, receiver):
    path = tmp_path / "boom.j2"
    path.write_text("ok {{ alerts[0].title }}\n{% if digest %}digest{% endif %}\n{{ 1 // (count - count) }}\n")
    notifier = Notifier([ChannelConfig(name="hook", url=receiver.url("/hook"), template=str(path))], timeout=10)
    result, _ = send(notifier, make(channel="hook"))
    assert result == SendResult(False, "template error: boom.j2:3: ZeroDivisionError: integer division or modulo by zero")
    result = asyncio.run(notifier.send_digest(digest(channel="hook")))
    assert not result.ok and result.error.startswith("template error: boom.j2:3: ")
    # a notice does not use the channel's template: the operator still hears about trouble
    notice = Notice(id=1, kind="dead_letter", subject="1 delivery dead-lettered", body="see above")
    assert asyncio.run(notifier.send_notice("hook", notice)) == SendResult(True)
    (req,) = receiver.wait_for(1)
    assert req.json()["title"] == "[monitor] 1 delivery dead-lettered"


def test_sandbox_violations_never_reach_python_internals(tmp_path):
    path = tmp_path / "sneaky.j2"
    path.write_text("ok\n[{{ alerts[0].title.__class__.__mro__ }}]")
    with pytest.raises(TemplateFailure, match=r"^sneaky\.j2:2: access to attribute '__class__' of 'str' object is unsafe$"):
        render(make(), "other", str(path))
    path.write_text("{{ alerts.__len__() }}")
    with pytest.raises(TemplateFailure, match=r"^sneaky\.j2:1: access to attribute '__len__'"):
        render(make(), "email", str(path))


def test_unloadable_template_fails_the_channels_alerts_with_the_reason(tmp_path, receiver):
    bad = tmp_path / "bad.j2"
    bad.write_text("{% for x in alerts %}\n{{ x.title }}\n")
    notifier = Notifier([ChannelConfig(name="hook", url=receiver.url("/hook"), template=str(bad))], timeout=10)
    result, _ = send(notifier, make(channel="hook"))
    assert not result.ok
    assert result.error.startswith("template error: bad.j2:") and "endfor" in result.error
    assert not asyncio.run(notifier.send_digest(digest(channel="hook"))).ok
    assert receiver.requests == []


def test_send_digest_to_an_unknown_channel_is_a_failure(receiver):
    notifier = Notifier([ChannelConfig(name="hook", url=receiver.url("/hook"))], timeout=10)
    assert asyncio.run(notifier.send_digest(digest(channel="nope"))) == SendResult(False, "channel 'nope' is not configured")


# --------------------------------------------------------------------------- hostile content, delivered


def _hostile_digest(channel: str) -> Digest:
    return digest(channel=channel, entries=(
        make(channel=channel, alert_id=9, title=HOSTILE, snippet="<!here> launch & <b>bold</b>"),
        *digest(channel=channel).entries))


@pytest.mark.parametrize("as_digest", [False, True], ids=["alert", "digest"])
def test_hostile_title_arrives_inert_by_email(smtp, as_digest):
    notifier = Notifier([ChannelConfig(name="desk", url=smtp.url())], timeout=10)
    if as_digest:
        result = asyncio.run(notifier.send_digest(_hostile_digest("desk")))
    else:
        result, _ = send(notifier, make(title=HOSTILE))
    assert result == SendResult(True)
    (msg,) = smtp.wait_for(1)
    assert smtp.envelopes[0].rcpt_tos == ("desk@example.org",)
    subject = msg["Subject"]
    assert "\n" not in subject and "\r" not in subject
    if as_digest:
        assert subject == "[digest] 4 stories since 2026-11-23 08:00 UTC"
    else:
        assert subject == f"[strategic-deployments] {HOSTILE}"
    rich = msg.get_body(("html",)).get_content()
    assert "<script>" not in rich and "<!channel>" not in rich and "<b>bold" not in rich
    assert "&lt;!channel&gt; Missile launch &amp; &lt;script&gt;" in rich
    plain = msg.get_body(("plain",)).get_content()  # Apprise's conversion of the HTML
    assert HOSTILE in plain


@pytest.mark.parametrize("as_digest", [False, True], ids=["alert", "digest"])
def test_hostile_title_arrives_inert_in_slack(slack_receiver, as_digest):
    notifier = Notifier([ChannelConfig(name="slack", url=SLACK_URL)], timeout=10)
    if as_digest:
        result = asyncio.run(notifier.send_digest(_hostile_digest("slack")))
    else:
        result, _ = send(notifier, make(channel="slack", title=HOSTILE, snippet="<!here> launch & <b>bold</b>"))
    assert result == SendResult(True)
    (req,) = slack_receiver.wait_for(1)
    joined = "\n".join(_strings(req.json()))
    assert re.search(r"<\s*[!@#]", joined) is None, joined
    assert "<!channel>" not in joined and "<script>" not in joined and "<b>" not in joined
    assert f"&lt;!{WORD_JOINER}channel&gt; Missile launch &amp; &lt;script&gt;" in joined
    assert f"&lt;!{WORD_JOINER}here&gt; launch &amp; &lt;b&gt;bold&lt;/b&gt;" in joined or as_digest
    if as_digest:
        assert "*[digest] 4 stories since 2026-11-23 08:00 UTC*" in joined


@pytest.mark.parametrize("as_digest", [False, True], ids=["alert", "digest"])
def test_crlf_in_a_title_creates_no_email_header(smtp, as_digest):
    notifier = Notifier([ChannelConfig(name="desk", url=smtp.url())], timeout=10)
    title = "Missile\r\nBcc: x@y\r\nX-Injected: yes"
    if as_digest:
        d = digest(entries=(make(title=title), *digest().entries), since=None)
        result = asyncio.run(notifier.send_digest(d))
    else:
        result, _ = send(notifier, make(title=title))
    assert result == SendResult(True)
    (msg,) = smtp.wait_for(1)
    assert smtp.envelopes[0].rcpt_tos == ("desk@example.org",)
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    expected = "[digest] 4 stories" if as_digest else "[strategic-deployments] Missile Bcc: x@y X-Injected: yes"
    assert msg["Subject"] == expected
    assert "Missile Bcc: x@y X-Injected: yes" in msg.get_body(("html",)).get_content()
