"""The built-in demo datasets, written by distill itself: short news-like snippets.

`topic` is 4-class classification with a minority class; `people` is NER with PER/ORG/LOC.
Every text is unique, so seed pool, corpus and gold are disjoint by construction. `topic_bulk`
writes as many topic rows as asked (10^5 to 10^6 in seconds), each of one to six sentences, for
benchmarks of bulk labeling: their lengths spread like real news snippets, which is what length
bucketing and padding costs depend on.
"""

from __future__ import annotations

import json
import random
from pathlib import Path


TOPICS = {  # label: (share, templates)
    "sports": (0.4, [
        "{team} beat {team2} {score} in the {event} on {day}",
        "{person} scored twice as {team} won the {event}",
        "coach says {team} will rest {person} before the {event}",
        "{team} lost to {team2} after a late goal by {person}",
    ]),
    "business": (0.3, [
        "shares of {company} rose {pct} percent after strong quarterly profit",
        "{company} agreed to buy {company2} for {money} billion dollars",
        "investors sold {company} stock as sales fell {pct} percent",
        "{company} cut {count} jobs to lower costs, said {person}",
    ]),
    "science": (0.2, [
        "researchers at {uni} found a new species of {animal} in {place}",
        "a telescope spotted water on a planet near {star}, scientists said",
        "{uni} physicists built a faster quantum chip with {count} qubits",
        "scientists at {uni} mapped the brain of the {animal} using new imaging",
        "study by {person} shows {animal} genes adapt to warmer oceans",
    ]),
    "weather": (0.1, [
        "heavy rain and strong winds expected in {place} on {day}",
        "forecast: snow storm to hit {place} with {count} cm by {day}",
        "heat wave pushes temperatures to {pct} degrees across {place}",
    ]),
}
FILL = {
    "team": ["Rovers", "United", "City", "Eagles", "Tigers", "Wolves", "Sharks", "Lions", "Rangers"],
    "event": ["cup final", "derby", "league match", "semifinal", "opener"],
    "day": ["Monday", "Tuesday", "Friday", "Saturday", "Sunday"],
    "score": ["2-1", "3-0", "1-0", "4-2", "2-0"],
    "company": ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark"],
    "pct": ["3", "5", "7", "12", "18", "21", "35", "40"],
    "money": ["2", "4", "9", "15", "30"],
    "count": ["200", "500", "900", "40", "60"],
    "uni": ["Oxford", "MIT", "Caltech", "ETH", "Kyoto", "Stanford", "Delft"],
    "animal": ["frog", "beetle", "coral", "shark", "moth"],
    "place": ["Peru", "Norway", "Kenya", "Chile", "Texas", "Bavaria", "Ontario"],
    "star": ["Vega", "Sirius", "Altair", "Rigel"],
    "person": ["Ana Silva", "Tom Berg", "Li Wei", "Sara Khan", "Omar Diaz", "Eva Novak"],
}
PEOPLE_TEMPLATES = [
    "{PER} joined {ORG} in {LOC} last year .",
    "{ORG} named {PER} chief executive on {day} .",
    "{PER} met {PER2} in {LOC} to discuss the deal .",
    "Police in {LOC} said {PER} was not hurt .",
    "{ORG} opened a new office in {LOC} .",
    "The report by {ORG} was written by {PER} .",
    "Prices rose in {LOC} on {day} .",
    "{PER} said the weather in {LOC} was fine .",
]
NER_FILL = {
    "PER": ["Ana Silva", "Tom Berg", "Li Wei", "Sara Khan", "Omar Diaz", "Eva Novak", "John", "Maria"],
    "ORG": ["Acme Corp", "Globex", "United Nations", "Reuters", "Red Cross", "Hooli Bank"],
    "LOC": ["Peru", "Oslo", "New York", "Kenya", "Berlin", "Lake Tahoe", "Chile"],
    "day": ["Monday", "Friday", "Sunday"],
}


def _unique(make, n: int, rng: random.Random, seen: set | None = None) -> list:
    seen, out = set() if seen is None else seen, []
    for _ in range(n * 200):
        item = make(rng)
        key = json.dumps(item, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(item)
        if len(out) == n:
            return out
    raise RuntimeError(f"templates give fewer than {n} unique rows")


def _fill(template: str, rng: random.Random, fill: dict) -> str:
    values = {}
    for key, options in fill.items():
        first = rng.choice(options)
        values[key] = first
        values[key + "2"] = rng.choice([o for o in options if o != first])
    return template.format(**values)


def topic_rows(n: int, rng: random.Random) -> list[dict]:
    """Unique snippets in the configured class shares, shuffled."""
    rows = []
    for label, (share, templates) in TOPICS.items():
        make = lambda r, label=label, templates=templates: {"text": _fill(r.choice(templates), r, FILL), "label": label}
        rows += _unique(make, round(n * share), rng)
    rng.shuffle(rows)
    return rows[:n]


def people_row(rng: random.Random) -> dict:
    template = rng.choice(PEOPLE_TEMPLATES)
    values = {"day": rng.choice(NER_FILL["day"])}
    for typ in ("PER", "ORG", "LOC"):
        first = rng.choice(NER_FILL[typ])
        values[typ], values[typ + "2"] = first, rng.choice([o for o in NER_FILL[typ] if o != first])
    tokens, tags = [], []
    for piece in template.split():
        if piece.startswith("{") and piece[1:-1].rstrip("2") in ("PER", "ORG", "LOC"):
            words = values[piece[1:-1]].split()
            typ = piece[1:-1].rstrip("2")
            tokens += words
            tags += [f"B-{typ}"] + [f"I-{typ}"] * (len(words) - 1)
        else:
            tokens.append(piece.format(**values))
            tags.append("O")
    return {"tokens": tokens, "tags": tags}


def bulk_topic_rows(n: int, rng: random.Random) -> list[dict]:
    """n unique rows, each one to six sentences of one topic (about 8 to 90 words), in the
    topics' shares. One sentence alone repeats after a few thousand rows; several rarely do, and a
    repeat is drawn again."""
    labels = list(TOPICS)
    shares = [TOPICS[lab][0] for lab in labels]
    seen, rows = set(), []
    while len(rows) < n:
        label = rng.choices(labels, shares)[0]
        templates = TOPICS[label][1]
        text = " . ".join(_fill(rng.choice(templates), rng, FILL) for _ in range(rng.choice(SENTENCES)))
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    return rows


SENTENCES = [1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6]  # sentences per bulk row: mostly short, a long tail

DEMOS = {"topic": topic_rows, "topic_bulk": bulk_topic_rows, "people": lambda n, rng: _unique(people_row, n, rng)}


def write_demo(name: str, out_dir: Path, sizes: dict, seed: int = 0) -> None:
    """Write seed.jsonl, corpus.jsonl and gold.jsonl (all with labels) unless they exist."""
    out_dir = Path(out_dir)
    splits = list(sizes)
    if all((out_dir / f"{s}.jsonl").exists() for s in splits):
        return
    rng = random.Random(seed)
    rows = DEMOS[name](sum(sizes.values()), rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = 0
    for split in splits:
        with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in rows[start : start + sizes[split]]:
                f.write(json.dumps(row) + "\n")
        start += sizes[split]
