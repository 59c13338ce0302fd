"""dvbench's own instruction dataset: deterministic, with reference answers and planted defects.

Six task families with exact answers (arithmetic, unit conversion, sorting, string edits, facts
from the tables below, date formatting); the smallest, ``facts``, holds 80 distinct questions
(40 facts asked both ways), less the two of each planted fact. Candidates, anchors and eval
prompts are disjoint draws of one seeded generator. A fraction of the candidates carry a planted defect, recorded in
``meta["defect"]`` (``None`` for clean rows), so a valuator can be judged against known truth:

- ``wrong_answer``: the answer to another question of the same family;
- ``other_answer``: the answer to a question of another family;
- ``truncated``: the answer cut to its first half.

``facts`` planted-fact anchors (none by default here; the spec's default is
``min(anchors // 4, FACTS_BY_DEFAULT)``) give a known answer to "which candidates taught
this?": each is one direction of a fact pair of the tables below (``Paris is the capital of
which country?``), and exactly one candidate states the same fact the other way round (``What
is the capital of France?`` → ``The capital of France is Paris.``). The anchor records
``meta["supported_by"] = [candidate id]``, the candidate ``meta["supports"] = [anchor id]``.
Both questions of a planted pair are kept out of every other draw (the facts family, the
defects' borrowed answers, the eval prompts), so no other row states the fact, and a supporting
candidate never carries a defect. Planted rows take seeded positions among the ``anchors`` and
``candidates`` asked for (the counts stay the totals); the other positions keep their family
turn. With ``facts=0`` nothing is drawn for them: the data is exactly that of before.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from dvbench.harness.errors import InputError
from dvbench.harness.records import Example

Row = tuple[str, str, str]  # instruction, input, output

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Canada": "Ottawa", "Peru": "Lima",
    "Norway": "Oslo", "Egypt": "Cairo", "Chile": "Santiago", "Italy": "Rome", "India": "New Delhi",
    "Spain": "Madrid", "Ghana": "Accra", "Poland": "Warsaw", "Vietnam": "Hanoi", "Cuba": "Havana",
    "Greece": "Athens", "Austria": "Vienna", "Portugal": "Lisbon", "Turkey": "Ankara", "Iran": "Tehran",
}
ELEMENTS = {
    "gold": "Au", "silver": "Ag", "iron": "Fe", "copper": "Cu", "sodium": "Na", "potassium": "K",
    "lead": "Pb", "tin": "Sn", "mercury": "Hg", "helium": "He", "neon": "Ne", "carbon": "C",
    "oxygen": "O", "nitrogen": "N", "zinc": "Zn", "calcium": "Ca", "argon": "Ar", "sulfur": "S",
    "tungsten": "W", "uranium": "U",
}
FACT_PAIRS = (  # each fact asked both ways: (question, answer) twice
    [((f"What is the capital of {c}?", f"The capital of {c} is {city}."),
      (f"{city} is the capital of which country?", f"{city} is the capital of {c}.")) for c, city in CAPITALS.items()]
    + [((f"What is the chemical symbol of {e}?", f"The chemical symbol of {e} is {s}."),
        (f"Which element has the symbol {s}?", f"{s} is the symbol of {e}.")) for e, s in ELEMENTS.items()]
)
FACTS = sorted(row for pair in FACT_PAIRS for row in pair)
UNITS = {  # (from, to): factor
    ("kilometers", "meters"): 1000, ("meters", "centimeters"): 100, ("kilograms", "grams"): 1000,
    ("hours", "minutes"): 60, ("minutes", "seconds"): 60, ("liters", "milliliters"): 1000,
}
WORDS = (
    "planet", "garden", "silver", "window", "rocket", "forest", "bridge", "candle", "marble",
    "pencil", "harbor", "meadow", "violin", "thunder", "lantern", "compass", "orchard", "glacier",
    "basket", "falcon", "pepper", "castle", "button", "ribbon", "saddle", "tunnel", "mirror",
    "anchor", "blanket", "cobweb", "dolphin", "engine", "feather", "giraffe", "hammock", "island",
)


def _arithmetic(rng: random.Random) -> Row:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    op, result = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
    return f"What is {a} {op} {b}?", "", f"{a} {op} {b} = {result}."


def _units(rng: random.Random) -> Row:
    (source, target), factor = rng.choice(sorted(UNITS.items()))
    amount = rng.randint(1, 60)
    return f"Convert {amount} {source} to {target}.", "", f"{amount} {source} is {amount * factor} {target}."


def _sorting(rng: random.Random) -> Row:
    numbers = rng.sample(range(1, 100), rng.randint(4, 7))
    order = rng.choice(["ascending", "descending"])
    ordered = sorted(numbers, reverse=order == "descending")
    return (
        f"Sort these numbers in {order} order.",
        ", ".join(map(str, numbers)),
        ", ".join(map(str, ordered)),
    )


def _strings(rng: random.Random) -> Row:
    word = rng.choice(WORDS)
    edit, result = rng.choice(
        [("Reverse the letters of", word[::-1]), ("Write in capital letters:", word.upper()),
         ("Count the letters of", str(len(word)))]
    )
    return f"{edit} the word below.", word, result


def _facts(rng: random.Random) -> Row:
    question, answer = rng.choice(FACTS)
    return question, "", answer


def _dates(rng: random.Random) -> Row:
    year, month, day = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
    return "Rewrite this date as DD/MM/YYYY.", f"{year}-{month:02d}-{day:02d}", f"{day:02d}/{month:02d}/{year}"


FAMILIES: dict[str, Callable[[random.Random], Row]] = {
    "arithmetic": _arithmetic,
    "units": _units,
    "sorting": _sorting,
    "strings": _strings,
    "facts": _facts,
    "dates": _dates,
}
FACTS_BY_DEFAULT = 8  # the spec's data.generated.facts: min(anchors // 4, this)
DEFECTS = ("wrong_answer", "other_answer", "truncated")
TRIES = 10_000  # draws before a family counts as exhausted


def generate(
    candidates: int,
    anchors: int,
    eval: int,
    *,
    defect_fraction: float = 0.1,
    families: tuple[str, ...] = tuple(FAMILIES),
    seed: int = 0,
    facts: int = 0,
) -> dict[str, tuple[Example, ...]]:
    """The three splits, ``{"candidates", "anchors", "eval"}``, with no question in two of them;
    ``facts`` of the anchors are planted-fact anchors (module docstring)."""
    if facts > min(anchors, candidates, len(FACT_PAIRS)):
        raise InputError(f"generated data: facts is {facts}; it may be at most the anchors ({anchors}), the "
                         f"candidates ({candidates}) and the {len(FACT_PAIRS)} fact pairs; ask for fewer")
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    planted = _plant_facts(facts, anchors, candidates, rng, seen) if facts else {"anchors": {}, "candidates": {}}

    def draw(family: str) -> Row:
        for _ in range(TRIES):
            row = FAMILIES[family](rng)
            if row[:2] not in seen:
                seen.add(row[:2])
                return row
        raise InputError(
            f"generated data: family {family!r} ran out of distinct questions after {len(seen)} examples; "
            f"ask for fewer examples or add families"
        )

    splits = {}
    for split, size in (("anchors", anchors), ("eval", eval), ("candidates", candidates)):
        rows = []
        for i in range(size):
            if i in planted.get(split, {}):
                rows.append(planted[split][i])
                continue
            family = families[i % len(families)]
            instruction, input, output = draw(family)
            meta = {"defect": None} if split == "candidates" else {}
            rows.append(Example(f"{split[:-1]}-{i:05d}", instruction, input, output, family, meta))
        splits[split] = tuple(rows)
    splits["candidates"] = _plant_defects(splits["candidates"], defect_fraction, families, rng, draw,
                                          set(planted["candidates"]))
    return splits


def _plant_facts(count, anchors, candidates, rng, seen) -> dict[str, dict[int, Example]]:
    """``count`` fact pairs, one direction an anchor and the other its one supporting candidate,
    at seeded positions; both questions of each pair are added to ``seen``, out of other draws."""
    pairs = rng.sample(FACT_PAIRS, count)
    anchor_at, candidate_at = rng.sample(range(anchors), count), rng.sample(range(candidates), count)
    planted: dict[str, dict[int, Example]] = {"anchors": {}, "candidates": {}}
    for pair, a, c in zip(pairs, anchor_at, candidate_at):
        (cq, ca), (aq, aa) = pair if rng.random() < 0.5 else pair[::-1]
        seen.update({(cq, ""), (aq, "")})
        anchor, candidate = f"anchor-{a:05d}", f"candidate-{c:05d}"
        planted["anchors"][a] = Example(anchor, aq, "", aa, "facts", {"supported_by": [candidate]})
        planted["candidates"][c] = Example(candidate, cq, "", ca, "facts", {"defect": None, "supports": [anchor]})
    return planted


def _plant_defects(pool, fraction, families, rng, draw, keep=frozenset()) -> tuple[Example, ...]:
    """Defects at seeded positions of ``pool``, none at the positions in ``keep``."""
    pool = list(pool)
    positions = [i for i in range(len(pool)) if i not in keep]
    for i in sorted(rng.sample(positions, min(len(positions), round(fraction * len(pool))))):
        example, defect = pool[i], rng.choice(DEFECTS)
        if defect == "wrong_answer":
            output = draw(example.subset)[2]
        elif defect == "other_answer" and len(families) > 1:
            output = draw(rng.choice([f for f in families if f != example.subset]))[2]
        else:
            defect, output = "truncated", example.output[: max(1, len(example.output) // 2)]
        if output == example.output:
            continue
        pool[i] = Example(example.id, example.instruction, example.input, output, example.subset,
                          {"defect": defect})
    return tuple(pool)
