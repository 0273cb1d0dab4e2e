"""Story templates for `summ_synth`: one key fact, a few supporting details, two reference summaries.

Each builder draws entities, and returns a `Story` whose `key` names the entity combination; the
generator sends a key to train or test only, so no combination is seen in both splits. The
summaries restate the key fact with words copied from the document (extraction-style), so a tiny
model can learn them, and the two references differ in word order to exercise multi-reference
scoring.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from kdeval_suites.summarization import pools as P


@dataclass(frozen=True)
class Story:
    key: str
    kind: str  # "news" or "meeting"
    lead: str  # the sentence the summary is about
    details: tuple[str, ...]  # supporting sentences; the generator keeps some of them
    references: tuple[str, str]
    intro: str = ""  # meetings open with who met and why; news opens with the lead


def _person(rng: random.Random) -> str:
    return f"{rng.choice(P.FIRST_NAMES)} {rng.choice(P.SURNAMES)}"


def _money(rng: random.Random) -> str:
    return f"{rng.randint(2, 90)} million {rng.choice(P.CURRENCIES)}"


def _fill(rng: random.Random, templates: tuple[str, ...], slots: dict[str, str]) -> str:
    return rng.choice(templates).format(**slots)


def _refs(templates: tuple[str, str], slots: dict[str, str]) -> tuple[str, str]:
    return templates[0].format(**slots), templates[1].format(**slots)


def _all(templates: tuple[str, ...], slots: dict[str, str]) -> tuple[str, ...]:
    return tuple(t.format(**slots) for t in templates)


def council(rng: random.Random) -> Story:
    s = {"city": rng.choice(P.CITIES), "facility": rng.choice(P.FACILITIES), "day": rng.choice(P.DAYS)}
    s |= {"money": _money(rng), "month": rng.choice(P.MONTHS), "person": _person(rng)}
    s |= {"street": rng.choice(P.STREETS), "yes": str(rng.randint(12, 30)), "no": str(rng.randint(2, 11))}
    lead = (
        "The {city} city council approved plans for a new {facility} on {day}.",
        "On {day}, councillors in {city} voted to build a new {facility}.",
        "{city} council gave the go-ahead for a new {facility} on {day}.",
    )
    details = (
        "The project is expected to cost {money}.",
        "Work on the site should begin in {month}.",
        "Council leader {person} said the {facility} was long overdue.",
        "Some residents worried about extra traffic on {street}.",
        "The vote passed by {yes} votes to {no}.",
    )
    refs = (
        "{city} council approved plans for a new {facility} on {day}.",
        "A new {facility} will be built in {city} after a council vote.",
    )
    key = f"council|{s['city']}|{s['facility']}"
    return Story(key, "news", _fill(rng, lead, s), _all(details, s), _refs(refs, s))


def company(rng: random.Random) -> Story:
    s = {"company": rng.choice(P.COMPANIES), "site": rng.choice(P.SITES), "city": rng.choice(P.CITIES)}
    s |= {"day": rng.choice(P.DAYS), "jobs": str(10 * rng.randint(2, 90)), "money": _money(rng)}
    s |= {"person": _person(rng), "street": rng.choice(P.STREETS), "staff": f"{100 * rng.randint(11, 95):,}"}
    lead = (
        "{company} opened a new {site} in {city} on {day}, creating {jobs} jobs.",
        "A new {site} run by {company} opened in {city} on {day}, bringing {jobs} jobs to the area.",
        "{company} has created {jobs} jobs by opening a {site} in {city}.",
    )
    details = (
        "The company said the {site} cost {money} to build.",
        "Chief executive {person} called it a proud day for the firm.",
        "Most of the new staff were hired locally.",
        "The {site} is located near {street}.",
        "{company} already employs {staff} people across the country.",
    )
    refs = (
        "{company} opened a new {site} in {city}, creating {jobs} jobs.",
        "A new {company} {site} in {city} brings {jobs} jobs.",
    )
    key = f"company|{s['company']}|{s['city']}"
    return Story(key, "news", _fill(rng, lead, s), _all(details, s), _refs(refs, s))


def match(rng: random.Random) -> Story:
    home, away = rng.sample(P.CITIES, 2)
    goals = rng.randint(1, 5)
    s = {"team": f"{home} {rng.choice(P.TEAM_SUFFIXES)}", "team2": f"{away} {rng.choice(P.TEAM_SUFFIXES)}"}
    s |= {"score": f"{goals}-{rng.randint(0, goals - 1)}", "cup": rng.choice(P.COMPETITIONS)}
    s |= {"day": rng.choice(P.DAYS), "person": _person(rng), "crowd": f"{500 * rng.randint(2, 40):,}"}
    s |= {"venue": rng.choice(P.VENUES), "years": str(rng.randint(3, 40))}
    lead = (
        "{team} beat {team2} {score} in the {cup} final on {day}.",
        "{team} won the {cup} on {day} after a {score} victory over {team2}.",
    )
    details = (
        "{person} scored the winning goal late in the game.",
        "About {crowd} fans watched the match at {venue}.",
        "It is the club's first title in {years} years.",
        "{team2} had won the competition last season.",
        "The coach praised the players for their patience.",
    )
    refs = (
        "{team} beat {team2} {score} to win the {cup} final.",
        "{team} won the {cup} final against {team2}.",
    )
    key = f"match|{s['team']}|{s['team2']}"
    return Story(key, "news", _fill(rng, lead, s), _all(details, s), _refs(refs, s))


def weather(rng: random.Random) -> Story:
    day, day2 = rng.sample(P.DAYS, 2)
    s = {"weather": rng.choice(P.WEATHER), "city": rng.choice(P.CITIES), "n": str(rng.randint(3, 40))}
    s |= {"day": day, "day2": day2, "street": rng.choice(P.STREETS), "person": _person(rng)}
    lead = (
        "Heavy {weather} closed {n} roads around {city} on {day}.",
        "{n} roads around {city} were closed on {day} because of heavy {weather}.",
    )
    details = (
        "Several schools in the area also shut early.",
        "Police asked drivers to avoid {street}.",
        "Forecasters expect the {weather} to ease by {day2}.",
        "Buses in {city} ran up to an hour late.",
        "{person}, a local shop owner, said few customers came in.",
    )
    refs = (
        "Heavy {weather} closed {n} roads around {city} on {day}.",
        "Roads around {city} were shut by heavy {weather}.",
    )
    key = f"weather|{s['city']}|{s['weather']}"
    return Story(key, "news", _fill(rng, lead, s), _all(details, s), _refs(refs, s))


def museum(rng: random.Random) -> Story:
    s = {"city": rng.choice(P.CITIES), "items": rng.choice(P.EXHIBITS), "day": rng.choice(P.DAYS)}
    s |= {"n": str(10 * rng.randint(5, 60)), "person": _person(rng), "years": str(rng.randint(3, 30))}
    s |= {"age": str(rng.randint(6, 16)), "month": rng.choice(P.MONTHS)}
    lead = (
        "The {city} Museum opened an exhibition of {items} on {day}.",
        "An exhibition of {items} opened at the {city} Museum on {day}.",
    )
    details = (
        "More than {n} objects are on display.",
        "Curator {person} spent {years} years collecting the pieces.",
        "Entry is free for children under {age}.",
        "The exhibition runs until {month}.",
        "Many of the pieces have never been shown before.",
    )
    refs = (
        "The {city} Museum has opened an exhibition of {items}.",
        "An exhibition of {items} is now open at the {city} Museum.",
    )
    key = f"museum|{s['city']}|{s['items']}"
    return Story(key, "news", _fill(rng, lead, s), _all(details, s), _refs(refs, s))


def theft(rng: random.Random) -> Story:
    street, street2 = rng.sample(P.STREETS, 2)
    s = {"city": rng.choice(P.CITIES), "vehicle": rng.choice(P.VEHICLES), "street": street}
    s |= {"street2": street2, "day": rng.choice(P.DAYS), "person": _person(rng)}
    lead = (
        "Police in {city} are searching for a {vehicle} that was stolen from {street} on {day}.",
        "A {vehicle} was stolen from {street} in {city} on {day}, police said.",
    )
    details = (
        "The owner, {person}, reported it missing in the morning.",
        "Officers have asked witnesses to come forward.",
        "It is the third vehicle theft in the area this month.",
        "Cameras near {street2} may have recorded the thieves.",
        "Police said nobody was hurt.",
    )
    refs = (
        "Police in {city} are looking for a {vehicle} stolen from {street}.",
        "A {vehicle} was stolen from {street} in {city} on {day}.",
    )
    key = f"theft|{s['city']}|{s['vehicle']}"
    return Story(key, "news", _fill(rng, lead, s), _all(details, s), _refs(refs, s))


#: Meeting decisions: (lead templates, reference templates) over the slots of `meeting`.
DECISIONS: dict[str, tuple[tuple[str, ...], tuple[str, str]]] = {
    "deadline": (
        (
            "The team agreed to move the deadline to {month}.",
            "After some discussion, the deadline was moved to {month}.",
        ),
        (
            "The {dept} team agreed to move the {project} deadline to {month}.",
            "The {project} deadline was moved to {month} at the {dept} team meeting.",
        ),
    ),
    "budget": (
        ("The team approved a budget of {money} for the {project}.", "A budget of {money} was approved."),
        (
            "The {dept} team approved a budget of {money} for the {project}.",
            "A budget of {money} was approved for the {project}.",
        ),
    ),
    "hire": (
        ("The team decided to hire {n} new {role}.", "They agreed that {n} new {role} should be hired."),
        (
            "The {dept} team decided to hire {n} new {role} for the {project}.",
            "{n} new {role} will be hired for the {project}.",
        ),
    ),
    "lead": (
        ("{person} was chosen to lead the {project}.", "The team chose {person} to lead the work."),
        ("The {dept} team chose {person} to lead the {project}.", "{person} will lead the {project}."),
    ),
}


def meeting(rng: random.Random) -> Story:
    decision = rng.choice(sorted(DECISIONS))
    person, person2, person3 = (_person(rng) for _ in range(3))
    s = {"dept": rng.choice(P.DEPARTMENTS), "project": rng.choice(P.PROJECTS), "day": rng.choice(P.DAYS)}
    s |= {
        "month": rng.choice(P.MONTHS),
        "money": f"{10 * rng.randint(2, 90)} thousand {rng.choice(P.CURRENCIES)}",
    }
    s |= {"n": str(rng.randint(2, 9)), "role": rng.choice(P.ROLES), "person": person}
    s |= {"p2": person2, "p3": person3, "day2": rng.choice(P.DAYS)}
    intro = (
        "The {dept} team met on {day} to discuss the {project}.",
        "On {day}, the {dept} team held a meeting about the {project}.",
    )
    details = (
        "{p2} presented the latest figures.",
        "{p3} raised concerns about the schedule.",
        "The next meeting is planned for {day2}.",
        "{p2} will send the notes to everyone by {day2}.",
        "Everyone agreed the first results looked promising.",
    )
    leads, refs = DECISIONS[decision]
    key = f"meeting|{decision}|{s['dept']}|{s['project']}"
    return Story(
        key,
        "meeting",
        _fill(rng, leads, s),
        _all(details, s),
        _refs(refs, s),
        intro=_fill(rng, intro, s),
    )


#: Builders and their weights: meetings are one family among six news kinds, so weigh them up.
BUILDERS: tuple[tuple[Callable[[random.Random], Story], int], ...] = (
    (council, 1),
    (company, 1),
    (match, 1),
    (weather, 1),
    (museum, 1),
    (theft, 1),
    (meeting, 4),
)


def draw_story(rng: random.Random) -> Story:
    builders = [b for b, _ in BUILDERS]
    weights = [w for _, w in BUILDERS]
    return rng.choices(builders, weights=weights)[0](rng)
