"""The shipped watchlists (config/watchlists/) against the labelling definitions.

Each case is a short item written for this file from the definitions in
``../shared/corpus/README.md`` ("Labelling definitions" and the conventions for the cases in
between), in the phrasing of wire services, state media and defence ministries. None is
copied from the development corpus: they check that the rules describe the *events*, so a
change that overfits the corpus (or breaks a whole class of phrasing) fails here.
``bench/watchlist_quality.py`` measures the same watchlists on the labelled corpus.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.matcher import Matcher

ROOT = Path(__file__).resolve().parents[1]
M, N, D = "missile-tests", "nuclear-tests", "strategic-deployments"

# (id, title, text, watchlists that must fire: exactly these, of the three)
CASES: list[tuple[str, str, str, set[str]]] = [
    # --- missile_test: specific launches, test-fires, flight tests, conducted/failed/imminent
    ("wire-icbm", "North Korea fires ballistic missile into sea, Japan says",
     "North Korea fired a ballistic missile off its east coast on Thursday, Japan's defence ministry "
     "said. The missile flew for about 70 minutes and fell outside Japan's exclusive economic zone.", {M}),
    ("kcna-testfire", "Test-fire of New-type ICBM Hwasongpho-19 Conducted",
     "The Missile Administration conducted a test-fire of the new-type ICBM Hwasongpho-19 on Thursday. "
     "The test had no adverse effect on the security of neighbouring countries.", {M}),
    ("kcna-cruise", "Strategic Cruise Missile Launching Drill Staged",
     "A launching drill of strategic cruise missiles was staged in the West Sea of Korea. The cruise "
     "missiles flew for 7,800 seconds along elliptical and figure-eight flight orbits and hit the target.", {M}),
    ("mnd-srbm", "JCS: N. Korea launches two short-range ballistic missiles",
     "South Korea's Joint Chiefs of Staff said it detected the launch of two short-range ballistic "
     "missiles from the Pyongyang area toward the East Sea at around 7:05 a.m.", {M}),
    ("india-agni", "India successfully test-fires Agni-V missile",
     "India on Monday successfully flight-tested the nuclear-capable Agni-V ballistic missile from an "
     "island off the Odisha coast, the defence ministry said.", {M}),
    ("us-minuteman", "Air Force launches unarmed Minuteman III in scheduled test",
     "An unarmed Minuteman III intercontinental ballistic missile was launched from Vandenberg Space "
     "Force Base early Wednesday during an operational test, Air Force Global Strike Command said.", {M}),
    ("russia-sarmat", "Russia test-launches Sarmat intercontinental missile",
     "Russia said on Wednesday it had test-launched its new Sarmat intercontinental ballistic missile "
     "from the Plesetsk cosmodrome.", {M}),
    ("iran-launch", "Iran test-fires new ballistic missile, state TV reports",
     "Iran's Revolutionary Guards test-fired a new ballistic missile with a range of 2,000 km, state "
     "television reported on Saturday.", {M}),
    ("pakistan", "Pakistan conducts training launch of Shaheen-III",
     "Pakistan on Tuesday conducted a training launch of the Shaheen-III surface-to-surface ballistic "
     "missile, the military's media wing said, aimed at validating technical parameters.", {M}),
    ("failed", "North Korean missile launch appears to have failed, South says",
     "A missile launched by North Korea on Wednesday appears to have exploded shortly after liftoff, "
     "South Korea's military said.", {M}),
    ("imminent", "North Korea preparing missile launch, Seoul warns",
     "South Korea's military said North Korea appeared to be preparing to launch a ballistic missile "
     "within days, citing movements of launch vehicles near Pyongyang.", {M}),
    ("reaction", "Security Council condemns latest missile launch",
     "The UN Security Council on Friday strongly condemned North Korea's launch of an intercontinental "
     "ballistic missile earlier this week, calling it a violation of its resolutions.", {M}),
    ("satellite-dprk", "North Korea launches military reconnaissance satellite",
     "North Korea said it successfully launched a military reconnaissance satellite into orbit on "
     "Tuesday with its new Chollima-1 rocket.", {M}),
    ("satellite-fail", "N. Korea's satellite launch fails as rocket explodes",
     "North Korea's attempt to put a spy satellite into orbit failed on Monday when the rocket "
     "exploded in flight, Pyongyang's state media said.", {M}),
    ("mrl-testfire", "Kim Jong Un oversees test-fire of upgraded multiple rocket launcher",
     "Kim Jong Un watched a test-fire of an upgraded 240mm multiple rocket launcher system with guided "
     "shells, KCNA said.", {M}),
    ("hypersonic", "China tests hypersonic glide vehicle, report says",
     "China tested a hypersonic glide vehicle launched on a rocket that circled the globe before "
     "speeding toward its target, officials said.", {M}),
    ("slbm", "North Korea says it test-fired submarine-launched ballistic missile",
     "North Korea said it successfully test-fired a new submarine-launched ballistic missile from the "
     "waters off Sinpo.", {M}),
    ("digest-line", "Press digest",
     "Following are the major news items in today's newspapers: - A ceremony was held for the "
     "anniversary. - The Missile Administration test-fired a new-type tactical ballistic missile on "
     "Sunday. - Farmers are busy with rice transplanting.", {M}),
    # --- missile_test: not counted
    ("space-civil", "Soyuz rocket launch delayed by weather",
     "The launch of a Soyuz rocket carrying a cargo ship to the space station was postponed by a day "
     "because of high winds at the Baikonur cosmodrome.", set()),
    ("combat-rocket", "Militants fire rockets at border town",
     "Militants fired rockets at a border town on Sunday, wounding two civilians, the army said, and "
     "aircraft struck launch sites in response.", set()),
    ("combat-strike", "Ukraine strikes Russian airfield with ATACMS missiles",
     "Ukraine fired US-supplied ATACMS missiles at a Russian airfield overnight, destroying helicopters, "
     "officials said. The strikes killed several servicemen.", set()),
    ("funding", "Senate approves funding for missile defence programme",
     "The Senate approved $4 billion for missile defence research, including interceptor development "
     "and new radar, in the annual defence bill.", set()),
    ("arms-control", "Arms control talks on intermediate-range missiles stall",
     "Negotiators failed to agree on limits for intermediate-range missiles after three days of talks "
     "in Geneva, diplomats said.", set()),
    ("range-boast", "General says new missiles could hit any target in the region",
     "A senior general said the country's missiles could reach any target in the region and would be "
     "ready for combat use soon.", set()),
    ("development", "Company unveils new cruise missile design at arms fair",
     "A defence firm unveiled a mock-up of a new long-range cruise missile at the arms fair, saying "
     "development would take several years.", set()),
    ("drone-test", "Army tests new delivery drone in mountain trial",
     "The army completed a performance test of a new cargo drone that flew 40 kilometres in "
     "mountainous terrain.", set()),
    ("game", "Missile Command remake launches on consoles",
     "The classic arcade video game Missile Command launches on consoles next week with new levels.", set()),
    ("stock", "Defence stocks rally after missile launch",
     "Shares of defence contractors rose after the missile launch, with the stock price of the largest "
     "maker up 4 percent.", set()),
    ("engine-test", "North Korea conducts high-thrust engine test",
     "North Korea carried out a ground test of a high-thrust solid-fuel engine for a new-type missile "
     "at the Sohae site, state media said.", set()),
    ("background", "Seoul and Washington hold talks on alliance",
     "The defence ministers discussed cost sharing and the alliance. North Korea, which launched "
     "missiles several times last year, was also discussed.", set()),
    # --- nuclear_test
    ("nuke-conducted", "North Korea conducts sixth nuclear test",
     "North Korea conducted its sixth nuclear test on Sunday, detonating what it said was a hydrogen "
     "bomb. Seismic monitors detected a magnitude 6.3 tremor near the Punggye-ri test site.", {N}),
    ("nuke-imminent", "Satellite images suggest nuclear test preparations",
     "Satellite imagery shows North Korea may be preparing for a nuclear test at Punggye-ri, with new "
     "activity at a tunnel entrance, analysts said.", {N}),
    ("nuke-reaction", "World leaders condemn nuclear test",
     "Leaders around the world condemned the underground nuclear explosion, and the Security Council "
     "called an emergency meeting.", {N}),
    ("subcritical", "US conducts subcritical nuclear experiment in Nevada",
     "The Energy Department said it conducted a subcritical nuclear experiment at the Nevada National "
     "Security Site on Tuesday.", {N}),
    ("nuke-kcna", "DPRK Nuclear Weapons Institute: underground nuclear test successfully conducted",
     "The Nuclear Weapons Institute announced that an underground nuclear test was successfully "
     "conducted to examine the power of a new warhead.", {N}),
    ("ctbt", "Diplomats mark anniversary of nuclear test ban treaty",
     "Diplomats in Vienna marked the anniversary of the Comprehensive Nuclear-Test-Ban Treaty, urging "
     "the remaining states to ratify it.", set()),
    ("enrichment", "Iran expands uranium enrichment at Fordow",
     "Iran has begun enriching uranium to 60 percent at its Fordow plant, the IAEA said.", set()),
    ("blast-nonnuclear", "Blast near border was not nuclear, experts say",
     "An explosion near the border was not nuclear, seismologists said, ruling out a nuclear test.", set()),
    ("weapons-institute", "Kim visits nuclear weapons institute",
     "Kim Jong Un visited the Nuclear Weapons Institute and looked at new warheads, state media said.",
     set()),
    # --- strategic_deployment
    ("bomber-guam", "US deploys B-52 bombers to Guam",
     "The US Air Force has deployed four B-52 strategic bombers to Andersen Air Force Base in Guam for "
     "a bomber task force rotation.", {D}),
    ("carrier-busan", "US aircraft carrier arrives in Busan",
     "The USS Carl Vinson aircraft carrier arrived in the South Korean port city of Busan on Tuesday, "
     "in a show of force against North Korea.", {D}),
    ("ssbn-portcall", "US nuclear-armed submarine makes port call in South Korea",
     "A US Ohio-class ballistic missile submarine made a port call at Busan on Tuesday, the first such "
     "visit in decades.", {D}),
    ("thaad", "THAAD battery deployed to South Korea",
     "The US military said on Tuesday it had deployed the first elements of the THAAD missile defence "
     "system to South Korea.", {D}),
    ("patriot-poland", "Germany sends Patriot missile batteries to Poland",
     "Germany will station Patriot air defence systems in Poland, the defence ministry said, with the "
     "first battery deployed near the border this week.", {D}),
    ("kcna-assets", "KPA General Staff Spokesman Denounces Introduction of Strategic Assets",
     "The US has introduced its strategic assets into the Korean peninsula again, including a nuclear "
     "aircraft carrier that entered Pusan Port, the spokesman said.", {D}),
    ("sub-intrusion", "Foreign submarine intruded into territorial waters, navy says",
     "A foreign nuclear submarine intruded into the country's territorial waters near the strait on "
     "Monday, the navy said, and the foreign ministry lodged a protest.", {D}),
    ("launchers-front", "Kim hands new missile launchers to frontline units",
     "Kim Jong Un attended a ceremony handing over 250 new tactical ballistic missile launchers to "
     "front-line army units, state media said.", {D}),
    ("bomber-drill", "Allies stage drill with US strategic bombers",
     "South Korea and the US staged a combined air drill involving US B-1B strategic bombers over the "
     "Korean peninsula on Wednesday.", {D}),
    ("russia-nukes", "Russia deploys tactical nuclear weapons to Belarus",
     "Russia has deployed tactical nuclear weapons in Belarus, the Belarusian president said, with the "
     "first warheads delivered to storage sites.", {D}),
    ("fighters", "US sends F-22 fighters to the Middle East",
     "The US is deploying a squadron of F-22 fighter jets to the Middle East, the Pentagon said.", set()),
    ("arms-sale", "State Department approves sale of SM-6 missiles to Japan",
     "The State Department approved a possible sale of SM-6 missiles and related equipment to Japan "
     "worth $450 million.", set()),
    ("planned", "Pentagon may deploy more missile defence to the region in future",
     "Officials said the Pentagon could deploy additional missile defence systems in the future, but no "
     "decision has been made.", set()),
    ("troops", "Army deploys 3,000 troops for exercise",
     "The army deployed 3,000 troops and armoured vehicles for a week-long exercise near the border.", set()),
    ("tabletop", "Allies hold tabletop exercise on nuclear deterrence",
     "Officials held a tabletop exercise simulating a nuclear crisis; no forces were moved.", set()),
    ("background-carrier", "Shipping insurers raise Red Sea premiums",
     "Insurers raised premiums for ships crossing the Red Sea, months after the US sent an aircraft "
     "carrier to the region, as freight rates kept climbing.", set()),
    ("nfl", "Patriots move up in draft to take lineman",
     "The Patriots moved up in the draft to take a defensive lineman from Kentucky.", set()),
    # --- scripts and spelling variants
    ("accented", "Corée du Nord: tir de missile balistique",
     "The missile test-fired on Friday — a Hwasong-18 — flew 1,000 km.", {M}),
    ("korean", "북한, 동해상으로 탄도미사일 발사",
     "합동참모본부는 북한이 오늘 오전 동해상으로 단거리 탄도미사일 2발을 발사했다고 밝혔다.", {M}),
    ("japanese", "北朝鮮が弾道ミサイルを発射",
     "防衛省によると、北朝鮮は午前7時ごろ、弾道ミサイル1発を東方向に発射した。", {M}),
    ("russian", "Россия провела испытательный пуск ракеты «Ярс»",
     "Министерство обороны сообщило об успешном испытательном пуске межконтинентальной баллистической "
     "ракеты «Ярс» с космодрома Плесецк.", {M}),
    ("possessive", "Pyongyang's missile launch",
     "Pyongyang’s missile test on Friday was the third this month.", {M}),
]


@pytest.fixture(scope="module")
def matcher():
    cfg = load_config(ROOT / "config" / "monitor.yaml", env={})
    return Matcher(cfg.matcher_watchlists())


def test_ships_the_three_watchlists(matcher):
    assert {M, N, D} <= set(matcher.names)


@pytest.mark.parametrize(("cid", "title", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_case(matcher, cid, title, text, expected):
    fired = {h.name for h in matcher.match(title, text)} & {M, N, D}
    explained = {e.name for e in matcher.explain(title, text) if e.matched} & {M, N, D}
    assert fired == explained
    assert fired == expected, f"{cid}: fired {sorted(fired)}, expected {sorted(expected)}"


def test_every_fired_alert_names_its_terms(matcher):
    for _, title, text, expected in CASES:
        for hit in matcher.match(title, text):
            if hit.name in expected:
                assert hit.terms, hit
                assert hit.score >= 2
