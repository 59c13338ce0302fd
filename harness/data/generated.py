"""dvbench's own instruction dataset: deterministic, with reference answers and planted defects.

Six task families with exact answers (arithmetic, unit conversion, sorting, string edits, facts
from the tables below, date formatting); the smallest, ``facts``, holds 80 distinct questions. Candidates, anchors and eval prompts are disjoint draws
of one seeded generator. A fraction of the candidates carry a planted defect, recorded in
``meta["defect"]`` (``None`` for clean rows), so a valuator can be judged against known truth:

- ``wrong_answer``: the answer to another question of the same family;
- ``other_answer``: the answer to a question of another family;
- ``truncated``: the answer cut to its first half.
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
FACTS = sorted(
    [(f"What is the capital of {c}?", f"The capital of {c} is {city}.") for c, city in CAPITALS.items()]
    + [(f"{city} is the capital of which country?", f"{city} is the capital of {c}.") for c, city in CAPITALS.items()]
    + [(f"What is the chemical symbol of {e}?", f"The chemical symbol of {e} is {s}.") for e, s in ELEMENTS.items()]
    + [(f"Which element has the symbol {s}?", f"{s} is the symbol of {e}.") for e, s in ELEMENTS.items()]
)
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
) -> dict[str, tuple[Example, ...]]:
    """The three splits, ``{"candidates", "anchors", "eval"}``, with no question in two of them."""
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()

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
            family = families[i % len(families)]
            instruction, input, output = draw(family)
            meta = {"defect": None} if split == "candidates" else {}
            rows.append(Example(f"{split[:-1]}-{i:05d}", instruction, input, output, family, meta))
        splits[split] = tuple(rows)
    splits["candidates"] = _plant_defects(splits["candidates"], defect_fraction, families, rng, draw)
    return splits


def _plant_defects(pool, fraction, families, rng, draw) -> tuple[Example, ...]:
    pool = list(pool)
    for i in sorted(rng.sample(range(len(pool)), round(fraction * len(pool)))):
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
