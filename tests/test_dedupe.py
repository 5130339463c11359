"""Story normalisation and near-duplicate judgement (monitor.dedupe): pure functions, no database.

The seeds are real: article 000 is a wire story (its repost doubles a paragraph, keeps the
"MOSCOW (Sputnik) —" dateline and adds a credit line), article 002 a later, different event
on the same topic, with its page's boilerplate."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from conftest import ROOT, SEEDS

from monitor import dedupe
from monitor.dedupe import (
    FAR_JACCARD,
    JACCARD,
    NEAR_DAYS,
    containment,
    fingerprint,
    jaccard,
    similarity,
    story_paragraphs,
    story_words,
    title_words,
)
from monitor.query import words_of

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
TITLE_000 = "US Ready to Further Deploy Strategic Weapons in South Korea to Counter North"
TITLE_002 = "US Vows to Deploy Strategic Assets to Korean Peninsula After North's Nuclear Law"
SENTENCE = "The launch happened before dawn on Tuesday, officials said in a statement."
DATELINE_000 = "MOSCOW (Sputnik) — "


def seed(n: str) -> str:
    return next(SEEDS.glob(f"{n}_*.txt")).read_text(encoding="utf-8")


def original_000() -> str:
    """Article 000 as its first outlet carries it: each paragraph once, no credit, no dateline."""
    paras: list[str] = []
    for line in seed("000").splitlines():
        p = line.strip()
        if not p or p.startswith("This story first appeared"):
            continue
        p = p.removeprefix(DATELINE_000)
        if p not in paras:
            paras.append(p)
    return "\n".join(paras)


def repost_000() -> tuple[str, str]:
    """Article 000 as reposted: the seed verbatim (doubled paragraph, dateline, credit line) and
    a site suffix on the title."""
    return TITLE_000 + " | Repost Daily", seed("000")


def kept(line: str, title: str = TITLE_000) -> list[str]:
    return [text for text, _ in story_paragraphs(title, line)]


# ---------------------------------------------------------------- story normalisation

@pytest.mark.parametrize("line", [
    "No Script", "Please Wait...", "Loading...", "folder_openUnited States access_time 11 days ago",
    "access_time 11 days ago", "starAdd to favorites", "Add to favourites", "By Staff, Agencies",
    "Share this article", "Tweet", "Subscribe now", "Advertisement", "Related Stories", "Read more",
    "See also: North Korea's missile programme", "Click here to subscribe to our newsletter",
    "Follow us on Telegram", "3 hours ago", "Breaking News",
    "40 Years of Hezbollah",  # a section banner: short, no sentence punctuation
])
def test_page_chrome_lines_are_dropped(line):
    assert kept(line) == []
    assert story_words(TITLE_000, f"{line}\n{SENTENCE}") == list(words_of(SENTENCE))


@pytest.mark.parametrize("line", [
    "This story first appeared on Sputnik & is reposted here with permission.",
    "This article was originally published by The Diplomat.",
    "Reposted with permission from Defense One.",
    "Republished from The Conversation under a Creative Commons license.",
    "Source: Reuters",
    "© 2016 Sputnik",
    "Copyright 2024 The Associated Press. All rights reserved.",
])
def test_syndication_credit_lines_are_dropped(line):
    assert kept(line) == []
    assert story_words(TITLE_000, f"{SENTENCE}\n{line}") == list(words_of(SENTENCE))


@pytest.mark.parametrize("dateline", [
    "MOSCOW (Sputnik) — ",
    "SEOUL, Oct. 5 (Yonhap) -- ",
    "Pyongyang, August 2 (KCNA) -- ",
    "WASHINGTON (Reuters) - ",
    "ISLAMABAD - ",
    "TOKYO, Oct. 5 -- ",
    "AP - ",
    "Reuters – ",
])
def test_a_dateline_opening_a_paragraph_is_dropped(dateline):
    assert kept(dateline + SENTENCE) == [SENTENCE]
    # the same paragraph without its dateline is the same paragraph: collapsed to one
    assert story_words(TITLE_000, f"{dateline}{SENTENCE}\n{SENTENCE}") == list(words_of(SENTENCE))


@pytest.mark.parametrize("line", [
    "The missile - a Hwasong-15 - flew 950 km (590 miles) before landing in the sea, officials said.",
    "Officials said the missile (a new type) flew for 40 minutes — longer than any before.",
    "It was - officials said - the longest flight yet.",
    "Kim (the leader) watched the launch from a nearby observation post, KCNA said.",
    "In July, Seoul and Washington agreed to deploy a Terminal High Altitude Area Defense (THAAD) "
    "anti-missile system - the ministry said.",
    "U.S. officials -- speaking on condition of anonymity -- said the launch had failed.",
])
def test_a_sentence_with_a_dash_or_parentheses_mid_line_is_kept_whole(line):
    assert kept(line) == [line]


@pytest.mark.parametrize("line", [
    "A spokesman for the ministry (MND) — Jeon Ha-kyu — told reporters the launch had failed.",
    "The Terminal High Altitude Area Defense (THAAD) — a US anti-missile system — is now operational.",
])
def test_a_sentence_whose_subject_has_a_parenthesis_and_a_dash_is_not_a_dateline(line):
    assert kept(line) == [line]


def test_the_title_repeated_in_the_body_is_dropped_but_a_sentence_that_starts_like_it_is_kept():
    body = f"{TITLE_000}\n{TITLE_000} | Repost Daily\n{SENTENCE}"
    assert kept(body) == [SENTENCE]
    longer = TITLE_000 + ", the defence ministry in Seoul said on Tuesday after a meeting in Washington."
    assert kept(longer) == [longer]


@pytest.mark.parametrize("tail", [" … Read more", "... Read More", " (continue reading)", " …read more »"])
def test_a_trailing_read_more_is_cut(tail):
    assert story_words(TITLE_000, SENTENCE + tail) == list(words_of(SENTENCE))


def test_repeated_paragraphs_collapse_to_their_first_occurrence_in_order():
    a, b, c = (SENTENCE, "The missile flew about 600 km before landing in the sea.",
               "Japan said there was no damage to ships or aircraft.")
    text = "\n".join([a, b, "", b, c, "  " + a + "  ", c])
    assert kept(text) == [a, b, c]
    assert story_words(TITLE_000, text) == [*words_of(a), *words_of(b), *words_of(c)]


def test_dotted_abbreviations_fold_to_the_same_words():
    assert story_words("", "U.S. officials said N.K. fired it.") == story_words("", "US officials said NK fired it.")


def test_seed_002_boilerplate_is_dropped_and_its_story_kept():
    paras = story_paragraphs(TITLE_002, seed("002"))
    texts = [t for t, _ in paras]
    assert texts[0].startswith("The United States and South Korea have resumed high-level talks")
    assert texts[-1].startswith("North Korea remains concerned by the US military presence")
    joined = " ".join(texts)
    for chrome in ("No Script", "Please Wait", "folder_open", "access_time", "favorites", "By Staff",
                   "40 Years of Hezbollah", "US Vows to Deploy"):
        assert chrome not in joined
    assert len(texts) == 11


# ---------------------------------------------------------------- titles

@pytest.mark.parametrize(("title", "words"), [
    ("US Ready to Further Deploy Strategic Weapons | Repost Daily", "us ready to further deploy strategic weapons"),
    ("US Ready to Further Deploy Strategic Weapons - The Korea Herald",
     "us ready to further deploy strategic weapons"),
    ("China–Japan summit – Nikkei Asia", "china japan summit"),
    ("UPDATE: North Korea fires missile", "north korea fires missile"),
    ("Breaking News: North Korea fires missile", "north korea fires missile"),
    ("North Korea fires missile (AP)", "north korea fires missile"),
    ("North Korea fires missile (Reuters)", "north korea fires missile"),
    ("UPDATE - North Korea fires missile (AP) | Site", "north korea fires missile"),
    ("U.S. deploys THAAD", "us deploys thaad"),
])
def test_title_words_drop_outlet_decorations(title, words):
    assert " ".join(title_words(title)) == words


@pytest.mark.parametrize(("title", "words"), [
    ("Fed - Rates", "fed rates"),  # too short to be headline + site: the title's own words
    ("Update on the launch", "update on the launch"),
    ("Kim Jong-un oversees test-fire of new ICBM", "kim jong un oversees test fire of new icbm"),
    ("Analysis (part 2) of the launch", "analysis part 2 of the launch"),
    ("Why Seoul wants THAAD: a US anti-missile system", "why seoul wants thaad a us anti missile system"),
])
def test_title_words_keep_a_titles_own_words(title, words):
    assert " ".join(title_words(title)) == words


@pytest.mark.parametrize("title", ["(LEAD) N. Korea fires ballistic missile", "(2nd LEAD) N. Korea fires ballistic missile",
                                   "(UPDATE 2) N. Korea fires ballistic missile", "UPDATE 2-N. Korea fires ballistic missile",
                                   "UPDATE 2: N. Korea fires ballistic missile"])
def test_title_words_drop_wire_update_tags(title):
    assert title_words(title) == title_words("N. Korea fires ballistic missile")


# ---------------------------------------------------------------- fingerprints and similarity

def test_seed_000_and_its_repost_are_one_story():
    a = fingerprint(TITLE_000, original_000(), T0)
    title, text = repost_000()
    b = fingerprint(title, text, T0 + timedelta(hours=3))
    assert story_words(TITLE_000, original_000()) == story_words(title, text)
    assert a.title == b.title and a.title_key == b.title_key
    assert jaccard(a, b) >= 0.9
    assert similarity(a, b) > 0 and similarity(b, a) == similarity(a, b)


def test_seed_000_and_seed_002_are_not_one_story():
    a = fingerprint(TITLE_000, original_000(), T0)
    title, text = repost_000()
    b = fingerprint(title, text, T0)
    c = fingerprint(TITLE_002, seed("002"), T0 + timedelta(hours=1))
    assert similarity(a, c) == 0 and similarity(b, c) == 0 and similarity(c, a) == 0


def test_a_copy_cut_short_with_read_more_is_the_same_story():
    full = original_000()
    cut = full[:int(len(full) * 0.4)].rsplit(" ", 1)[0] + "… Read more"
    a, t = fingerprint(TITLE_000, full, T0), fingerprint(TITLE_000, cut, T0 + timedelta(hours=1))
    assert t.has_text and t.size < a.size / 2
    assert jaccard(a, t) < JACCARD  # MinHash alone would not call it one story ...
    assert t.lead_key == a.lead_key and containment(a, t) >= dedupe.CONTAINMENT  # ... containment does
    assert similarity(a, t) > 0
    title, repost = repost_000()
    assert similarity(fingerprint(title, repost, T0), t) > 0


STOCK = ("North Korea has test-fired dozens of ballistic missiles since the start of last year, in defiance "
         "of United Nations Security Council resolutions that ban the isolated country from any use of "
         "ballistic missile technology.")


def test_a_shared_stock_sentence_with_a_different_headline_is_not_one_story():
    a = fingerprint("North Korea fires two short-range ballistic missiles",
                    STOCK + "\nOn Tuesday it fired two short-range missiles into the sea, Seoul said.", T0)
    b = fingerprint("Kim Jong Un inspects nuclear warhead factory",
                    STOCK + "\nOn Thursday Kim Jong Un inspected a warhead factory, state media said.",
                    T0 + timedelta(hours=5))
    # texts whose shingles alone would say "same story": the headlines decide
    assert a.lead_key == b.lead_key
    assert JACCARD <= jaccard(a, b) < FAR_JACCARD
    assert similarity(a, b) == 0
    # the same short story from another outlet, with its own headline decoration, is one story
    c = fingerprint("North Korea fires two short-range missiles - Yonhap",
                    STOCK + "\nOn Tuesday it fired two short-range missiles into the sea, the South's "
                            "military said.", T0 + timedelta(hours=5))
    assert similarity(a, c) > 0


BACKGROUND = (
    "North Korea has test-fired dozens of ballistic missiles since the start of last year, many of them capable "
    "of carrying nuclear warheads, in defiance of United Nations Security Council resolutions, and has rejected "
    "repeated offers from Washington and Seoul to resume talks on its weapons programmes without preconditions, "
    "saying it will never give up the deterrent it calls the guarantee of its survival.")


def test_a_long_shared_background_paragraph_under_unrelated_headlines_is_not_one_story():
    a = fingerprint("North Korea fires two short-range ballistic missiles",
                    BACKGROUND + "\nOn Tuesday it fired two short-range missiles into the sea, Seoul said.", T0)
    b = fingerprint("Kim Jong Un inspects nuclear warhead factory",
                    BACKGROUND + "\nOn Thursday Kim inspected a warhead factory, state media said.",
                    T0 + timedelta(hours=5))
    assert JACCARD <= jaccard(a, b) < FAR_JACCARD
    assert similarity(a, b) == 0


LAUNCH_1 = (
    "North Korea fired a ballistic missile into the sea off its east coast on Tuesday, South Korea's Joint "
    "Chiefs of Staff said, the latest in a series of launches this year.\n"
    "The missile was launched from the Sunan area near Pyongyang at about 7:50 a.m. and flew about 600 km "
    "at an altitude of 50 km before splashing down, the JCS said.\n"
    "Japan's defence ministry said the missile appeared to have landed outside its exclusive economic zone "
    "and that there were no reports of damage to ships or aircraft.\n"
    "The launch came a day after the United States and South Korea wrapped up joint air drills involving "
    "more than 100 warplanes.")
LAUNCH_2 = (
    "North Korea fired a ballistic missile into the sea off its east coast on Wednesday, South Korea's Joint "
    "Chiefs of Staff said, the latest in a series of launches this year.\n"
    "The missile was launched from the Tongchang-ri area on the west coast at about 11:05 p.m. and flew about "
    "1,000 km on a lofted trajectory reaching 6,000 km, the JCS said.\n"
    "Japan's Prime Minister said the missile was an intercontinental ballistic missile and that Tokyo had "
    "lodged a strong protest through diplomatic channels in Beijing.\n"
    "Pyongyang has vowed to respond to what it calls hostile military exercises by Washington and Seoul with "
    "overwhelming force.")


def test_two_launches_on_consecutive_days_are_two_stories():
    title = "North Korea fires ballistic missile into sea, South Korea says"
    a = fingerprint(title, LAUNCH_1, T0)
    b = fingerprint(title, LAUNCH_2, T0 + timedelta(days=1))
    assert a.lead_key == b.lead_key  # same wire template, same headline
    assert similarity(a, b) == 0


def test_a_headline_only_page_joins_the_full_story_only_when_near_in_time():
    full = fingerprint(TITLE_000, original_000(), T0)
    for extra in ("", "Photo: Reuters", "Watch the video"):
        page = fingerprint(TITLE_000 + " | Repost Daily", extra, T0 + timedelta(days=1))
        assert not page.has_text
        assert similarity(full, page) > 0 and similarity(page, full) > 0
        assert similarity(full, page) < JACCARD  # below any match on text: a text copy wins
    late = fingerprint(TITLE_000, "", T0 + timedelta(days=5))
    assert similarity(full, late) == 0
    other = fingerprint(TITLE_002, "", T0 + timedelta(hours=2))
    assert similarity(full, other) == 0
    # two headline-only pages with different titles are not one story either
    assert similarity(fingerprint("Missile launch", "", T0), fingerprint("Missile test", "", T0)) == 0


def test_texts_further_apart_than_near_days_must_be_near_identical():
    title, text = repost_000()
    base = fingerprint(title, text, T0)
    far = T0 + timedelta(days=NEAR_DAYS + 3)
    near_identical = fingerprint(TITLE_000, text + "\nThe ministry did not comment further on Wednesday.", far)
    assert jaccard(base, near_identical) >= FAR_JACCARD
    assert similarity(base, near_identical) > 0
    paras = list(dict.fromkeys(p for p in original_000().splitlines()))
    shorter = "\n".join(paras[:5])  # a fair copy, but not near-identical
    assert JACCARD <= jaccard(base, fingerprint(TITLE_000, shorter, far)) < FAR_JACCARD
    assert similarity(base, fingerprint(TITLE_000, shorter, T0 + timedelta(days=1))) > 0
    assert similarity(base, fingerprint(TITLE_000, shorter, far)) == 0


def test_an_item_without_title_or_text_is_no_ones_copy():
    empty = fingerprint("", "", T0)
    assert (empty.signature, empty.size, empty.bands, empty.title_key, empty.lead_key) == (b"", 0, (), None, None)
    assert similarity(empty, fingerprint("", "", T0)) == 0
    assert similarity(empty, fingerprint(TITLE_000, original_000(), T0)) == 0


def test_fingerprint_has_bands_only_for_real_text():
    fp = fingerprint(TITLE_000, original_000())
    assert len(fp.bands) == dedupe.BANDS and len(fp.signature) == 4 * dedupe.NUM_PERM
    assert all(-2**63 <= b < 2**63 for b in fp.bands)
    assert fingerprint(TITLE_000, "Missile fired.").bands == ()


_CHILD = """
import json, sys
from monitor.dedupe import fingerprint
fp = fingerprint(sys.argv[1], sys.argv[2])
print(json.dumps({"signature": fp.signature.hex(), "size": fp.size, "bands": list(fp.bands),
                  "lead_key": fp.lead_key, "title_key": fp.title_key, "title": fp.title}))
"""


def test_fingerprints_are_the_same_in_every_process():
    title, text = repost_000()
    fp = fingerprint(title, text)
    mine = {"signature": fp.signature.hex(), "size": fp.size, "bands": list(fp.bands),
            "lead_key": fp.lead_key, "title_key": fp.title_key, "title": fp.title}
    for hashseed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run([sys.executable, "-c", _CHILD, title, text], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True, timeout=60)
        assert json.loads(out.stdout) == mine


def test_minhash_signatures_are_datasketchs():
    """dedupe writes out datasketch's affine32 MinHash (to keep scipy out of start-up): the
    signatures must stay exactly datasketch's, or stored fingerprints would stop matching."""
    import json
    import random

    import numpy as np
    from conftest import SHARED
    from datasketch import MinHash

    from monitor import dedupe

    rows = [json.loads(line) for line in (SHARED / "corpus" / "items.jsonl").read_text().splitlines()[:300]
            if line.strip()]
    rng = random.Random(9)
    cases = [dedupe.shingles(dedupe._story_words(dedupe.title_words(r["title"]), r.get("summary") or ""))
             for r in rows]
    cases += [[rng.getrandbits(32) for _ in range(n)] for n in (1, 2, 7, 1000)] + [[0, 2**32 - 1]]
    checked = 0
    for grams in cases:
        if not grams:
            continue
        reference = MinHash(num_perm=dedupe.NUM_PERM, seed=dedupe.SEED, hashfunc=int)
        reference.update_batch(grams)
        assert reference.scheme == "affine32"
        assert np.array_equal(dedupe.minhash(grams), reference.hashvalues)
        checked += 1
    assert checked > 250


# Two outlets' own briefs of one event: different sentences, the same facts and names.
BRIEF_TITLE = "Quake hits Chile's north coast, two dead"
BRIEF = ("A magnitude 6.8 earthquake struck off northern Chile on Tuesday, killing two people and damaging homes "
         "in the port city of Antofagasta, officials said.")
OTHER_BRIEF_TITLE = "Strong quake hits northern Chile, two dead (Reuters)"
OTHER_BRIEF = ("Reuters - Two people died when a strong magnitude 6.8 earthquake shook northern Chile on Tuesday, "
               "damaging homes in the port of Antofagasta, the emergency office said.")


def test_two_outlets_briefs_of_one_event_are_one_story():
    a = fingerprint(BRIEF_TITLE, BRIEF, T0)
    b = fingerprint(OTHER_BRIEF_TITLE, OTHER_BRIEF, T0 + timedelta(hours=3))
    assert jaccard(a, b) < JACCARD  # few word 3-grams in common: the shingles alone would miss it
    assert dedupe.word_jaccard(a, b) >= dedupe.WORD_JACCARD
    assert 0 < similarity(a, b) < JACCARD and similarity(b, a) == similarity(a, b)  # a shared text ranks first
    assert set(a.bands) & set(b.bands)  # and the word bands find one from the other


def test_briefs_with_the_same_words_a_day_apart_are_two_events():
    a = fingerprint(BRIEF_TITLE, BRIEF, T0)
    next_day = fingerprint(OTHER_BRIEF_TITLE, OTHER_BRIEF.replace("Tuesday", "Wednesday"), T0 + timedelta(days=1))
    assert dedupe.word_jaccard(a, next_day) >= dedupe.WORD_JACCARD
    assert similarity(a, next_day) == 0


def test_briefs_sharing_words_under_unrelated_headlines_are_not_one_story():
    a = fingerprint(BRIEF_TITLE, BRIEF, T0)
    markets = fingerprint("Copper prices climb on supply worries",
                          "Copper rose on Tuesday after a strong magnitude 6.8 earthquake in northern Chile killed two "
                          "people and damaged homes in Antofagasta, raising worries about mine output.",
                          T0 + timedelta(hours=2))
    assert similarity(a, markets) == 0


def test_only_briefs_keep_their_content_words():
    brief = fingerprint(BRIEF_TITLE, BRIEF)
    words = dedupe.content_words(dedupe.title_words(BRIEF_TITLE), dedupe.story_words(BRIEF_TITLE, BRIEF))
    assert {"quake", "earthquake", "antofagasta", "chile", "kill"} <= words  # "killing" stemmed
    assert not {"the", "on", "in", "said", "a"} & words  # function words and newswire filler are not content
    figures = dedupe.numbers([BRIEF_TITLE, BRIEF])
    assert figures == {"6.8"}
    assert len(brief.words) == 4 * (len(words) + len(figures))
    assert dedupe.WORD_SET_MIN <= len(words) <= dedupe.WORD_SET_MAX
    assert len(brief.bands) == dedupe.WORD_BANDS  # a brief: its word bands instead of shingle bands
    assert set(brief.bands).isdisjoint(dedupe.band_keys(brief.values()))
    article = fingerprint(TITLE_000, original_000())
    assert article.words == b"" and len(article.bands) == dedupe.BANDS


def test_markup_in_the_text_is_not_part_of_the_story():
    marked = ('Colgate-Palmolive Co. <A HREF="http://www.investor.example/FullQuote.aspx?ticker=CL.N '
              'target=/stocks/quickinfo/fullquote">CL.N</A> will cut about 4,400 jobs.')
    plain = "Colgate-Palmolive Co. CL.N will cut about 4,400 jobs."
    assert story_words("Colgate to cut jobs", marked) == story_words("Colgate to cut jobs", plain)
    assert "href" in words_of(marked) and "href" not in story_words("Colgate to cut jobs", marked)


def test_briefs_stating_different_figures_are_not_one_story():
    a = fingerprint("Dow rises on oil, tech gains", "The Dow Jones industrial average rose 120 points to "
                    "10,480 on Monday as oil prices eased and technology shares gained.", T0)
    b = fingerprint("Dow rises as tech gains, oil eases", "Technology shares gained and oil prices eased on Monday, "
                    "lifting the Dow Jones industrial average 35 points to 10,395.", T0 + timedelta(hours=6))
    assert dedupe.word_jaccard(a, b) >= dedupe.WORD_JACCARD and jaccard(a, b) < JACCARD
    assert dedupe.numbers_disagree(a, b) and similarity(a, b) == 0
    # one figure in common (or none stated by one of them) is no disagreement
    c = fingerprint("Dow rises as tech gains, oil eases", "Technology shares gained and oil prices eased on Monday, "
                    "lifting the Dow Jones industrial average 120 points.", T0 + timedelta(hours=1))
    assert not dedupe.numbers_disagree(a, c) and similarity(a, c) > 0
    assert not dedupe.numbers_disagree(a, fingerprint(c.title, "Technology shares gained and oil prices eased on "
                                                      "Monday, lifting the Dow Jones industrial average."))


def test_similarities_are_similarity_for_many_candidates_at_once():
    """``similarities`` (the store compares a new item with all its candidates in one call)
    gives exactly ``similarity`` of each pair, on corpus reposts and their originals and
    natural duplicate groups at times
    that reach every rule: same hour, WORD_NEAR, NEAR_DAYS, far; briefs, long texts, headline
    only pages."""
    import random

    from conftest import SHARED

    corpus = SHARED / "corpus"
    items = {r["id"]: r for r in map(json.loads, (corpus / "items.jsonl").read_text().splitlines())}
    reposts = [json.loads(line) for line in (corpus / "reposts.jsonl").read_text().splitlines()[:120]]
    rng = random.Random(4)
    offsets = [timedelta(0), timedelta(hours=6), timedelta(hours=13), timedelta(days=1.5), timedelta(days=3)]
    fps = []
    for r in reposts:
        original = items[r["repost_of"]]
        for row in (original, r):
            fps.append(fingerprint(row["title"], row.get("text") or "", T0 + rng.choice(offsets)))
    for g in map(json.loads, (corpus / "dup_groups.jsonl").read_text().splitlines()[:150]):
        for i in g["ids"]:  # natural groups: other outlets' wording, updates (middling similarity)
            fps.append(fingerprint(items[i]["title"], items[i].get("text") or "", T0 + rng.choice(offsets)))
    paras, other = original_000().split("\n"), seed("002").split("\n")
    for k in range(1, len(paras)):  # article 000 cut short, or with its end or start from another
        fps.append(fingerprint(TITLE_000, "\n".join(paras[:k]), T0))
        fps.append(fingerprint(TITLE_000, "\n".join(paras[:k] + other[k:]), T0 + rng.choice(offsets)))
        fps.append(fingerprint(TITLE_000, "\n".join(other[:k] + paras[k:]), T0 + rng.choice(offsets)))
    fps += [fingerprint(fp.title, "", T0) for fp in fps[:10]]  # headline-only pages
    fps.append(fingerprint("", "", T0))
    rules = set()
    for a in fps:
        expected = [similarity(a, b) for b in fps]
        assert dedupe.similarities(a, fps) == expected
        for b, score in zip(fps, expected, strict=True):
            if score > 0 and a is not b:
                apart = abs(a.at - b.at)
                rules.add("far" if apart > timedelta(days=NEAR_DAYS) else
                          "text" if score >= JACCARD else "title" if not a.has_text else "other")
    assert dedupe.similarities(fps[0], []) == []
    assert rules == {"far", "text", "title", "other"}  # every kind of match was met


def test_a_sketch_agrees_wherever_signatures_do_and_sets_most_unrelated_texts_apart():
    """A band row's sketch (``dedupe.sketch``) lets the store leave out, unloaded, a stored item
    that only shares a band key (``Store._Copies.stored_refs``): in at least as many lanes as
    the two signatures share values, so no pair whose Jaccard estimate reaches JACCARD is left
    out (on corpus reposts and natural duplicate groups); unrelated corpus texts reach
    SKETCH_MIN_SAME rarely."""
    import numpy as np
    from conftest import SHARED

    corpus = SHARED / "corpus"
    items = {r["id"]: r for r in map(json.loads, (corpus / "items.jsonl").read_text().splitlines())}

    def fp(row: dict) -> dedupe.Fingerprint:
        return fingerprint(row["title"], row.get("text") or "", T0)

    pairs = [(fp(items[r["repost_of"]]), fp(r))
             for r in map(json.loads, (corpus / "reposts.jsonl").read_text().splitlines()[:300])]
    for g in map(json.loads, (corpus / "dup_groups.jsonl").read_text().splitlines()):
        group = [fp(items[i]) for i in g["ids"]]
        pairs += [(a, b) for k, a in enumerate(group) for b in group[k + 1:]]
    joined = 0
    for a, b in pairs:
        if not (a.has_text and b.has_text):
            continue
        shared = int(np.count_nonzero(a.values() == b.values()))
        assert dedupe.sketch_same(a.sketch_bits, b.sketch_bits) >= shared
        if shared >= JACCARD * dedupe.NUM_PERM:
            joined += 1  # its shingles could join it: the screen must keep it
            assert dedupe.sketch_same(a.sketch_bits, b.sketch_bits) >= dedupe.SKETCH_MIN_SAME
    assert joined > 200
    texts = [f for f in (fp(row) for row in list(items.values())[:400]) if f.has_text]
    unrelated = [(a, b) for k, a in enumerate(texts) for b in texts[k + 1:] if similarity(a, b) == 0]
    assert len(unrelated) > 50_000
    kept = sum(dedupe.sketch_same(a.sketch_bits, b.sketch_bits) >= dedupe.SKETCH_MIN_SAME for a, b in unrelated)
    assert kept / len(unrelated) < 0.001
    assert len(dedupe.sketch(texts[0].signature)) == 16 and dedupe.sketch(b"") == b""
