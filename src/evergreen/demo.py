"""``evergreen demo``: a synthetic support-ticket stream run through the pipeline.

The stream (documented so that tests and benchmarks can rely on it) is built to be *learnable
but not saturated*, and to drift so that later days carry what day 0's model cannot know:

* **eight intents** — billing, refund, returns, shipping, account, technical, cancellation,
  warranty — in confusable neighbours (:data:`CONFUSABLE`: billing/refund, refund/returns,
  returns/warranty, warranty/technical, technical/account, cancellation/refund, ...). Their
  phrasings share words (``order``, ``charged``, ``money``, ``account``, ``log in``, ``broke``),
  so no single keyword decides an intent;
* **ambiguous tickets**: ``ambiguous`` of them (15% by default) state two neighbouring intents'
  problems at once and carry either label, an error no model can avoid;
* ``label_noise`` of the tickets (3% by default) carry a random wrong intent;
* **real drift**: day 0 knows only each intent's core phrasings (:data:`CORE`). Every later day
  introduces two new phrasings per intent (:data:`NEW_PHRASES`, with words day 0 never saw:
  autopay, locker, rma, bricked, passkey, ...), and a growing share of the day's tickets use the
  phrasings introduced so far (the newest twice as often): 16% of an intent's tickets on day 1
  up to 28% on day 4 (:func:`new_phrase_share`). The shipping intent's wording shifts the most
  (35% on day 1, 65% on day 4). Two new products a day join the product vocabulary (products
  never decide an intent);
* day 0 has ``day0_rows`` tickets (1,000 by default), every later day ``daily_rows`` (800), so
  the four later days carry three times day 0's rows;
* each later day repeats one of its tickets verbatim (customers paste the same text) and
  carries one malformed row, so dedupe and quarantine have work to do.

Measured through the pipeline (``make demo``, docs/demo.md): version 1 (day 0) scores 0.68-0.73
on the later days' eval rows and 0.89 on day 0's; every increment is published, and the final
champion scores 0.85-0.90 on the later days.

Everything is drawn from ``random.Random(seed)``: the same seed gives the same files.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from evergreen import config as config_mod
from evergreen import render
from evergreen.project import Project

# Day 0's phrasings: what the first champion learns. Words are shared across intents on purpose.
CORE = {
    "billing": [
        "I was charged twice for my {product} this month",
        "the invoice for the {product} shows the wrong amount",
        "please update the card you charge for my {product} plan",
        "my payment for the {product} failed but the money left my account",
        "why did the monthly price of my {product} plan go up",
    ],
    "refund": [
        "I want a refund for the broken {product}",
        "you charged me for the {product} order but I want my money back",
        "I am still waiting for the refund on my {product}",
        "please refund the full amount of my {product} order",
        "how long does a refund for the {product} take",
    ],
    "returns": [
        "how do I send the {product} back to you",
        "I need a return label for my {product} order",
        "I ordered the wrong {product}, can I return it",
        "I dropped the {product} at the post office, did the return arrive",
        "what is the return window for the {product}",
    ],
    "shipping": [
        "my {product} order has not arrived yet",
        "tracking for my {product} has not moved for a week",
        "the courier left my {product} at the wrong door",
        "can you ship the {product} to my office instead",
        "when will my {product} be delivered, it is already late",
    ],
    "account": [
        "I cannot log in to my account since this morning",
        "please change the email address on my account",
        "my password reset link never arrives",
        "delete my account and all my {product} data",
        "someone else changed the password of my account",
    ],
    "technical": [
        "the {product} keeps crashing when I open the settings",
        "the {product} will not connect to wifi",
        "the {product} app shows an error every time I log in",
        "the screen of the {product} flickers and goes black",
        "the {product} does not sync with my phone anymore",
    ],
    "cancellation": [
        "please cancel my {product} order before it ships",
        "stop my {product} plan from next month",
        "I do not want the {product} subscription anymore, cancel it",
        "cancel the order for the {product}, I found it cheaper",
    ],
    "warranty": [
        "the {product} stopped working after two months, is it covered",
        "can I get a replacement for the faulty {product}",
        "the {product} broke, what does the guarantee cover",
        "is the {product} still under warranty, it will not turn on",
    ],
}
# Phrasings that appear over the days (index 0: day 1), with words day 0 never saw.
NEW_PHRASES = {
    "billing": [
        [
            "autopay overcharged my card for the {product}",
            "there is an extra surcharge on my {product} statement",
        ],
        [
            "the premium membership fee was debited twice",
            "my {product} instalment was debited early",
        ],
        [
            "the receipt shows tax I should not pay on the {product}",
            "you billed the {product} to an old card I removed",
        ],
        [
            "the pay later instalments for the {product} do not add up",
            "my statement lists the {product} fee three times",
        ],
    ],
    "refund": [
        [
            "please reimburse the {product} to my wallet",
            "when will the credit for the {product} show up in my wallet",
        ],
        [
            "I was promised cashback on the {product} and got nothing",
            "return the deposit for the {product} to my bank",
        ],
        [
            "I got store credit but I asked for cash back for the {product}",
            "the chargeback for the {product} is still pending",
        ],
        [
            "the {product} price dropped, I want the difference paid back",
            "my money for the cancelled {product} never came back",
        ],
    ],
    "returns": [
        [
            "I need an rma number to send the {product} back",
            "can I exchange the {product} for another colour",
        ],
        [
            "where is the drop off point for sending the {product} back",
            "the prepaid label for the {product} return expired",
        ],
        [
            "the qr code to return the {product} fails to scan",
            "I want to swap the {product} for a bigger one",
        ],
        [
            "the trade in of my old {product} was not collected",
            "can a courier pick up the {product} return from my home",
        ],
    ],
    "shipping": [
        [
            "the parcel locker says my {product} was never dispatched",
            "my {product} was dispatched but the locker is empty",
        ],
        [
            "the driver never rang the bell, my {product} is missing",
            "the delivery slot for my {product} was missed again",
        ],
        [
            "the package with my {product} is stuck at customs",
            "the courier app shows my {product} handed to a neighbour",
        ],
        [
            "same day delivery for the {product} took four days",
            "the {product} parcel was handed to the wrong building",
        ],
    ],
    "account": [
        [
            "the verification code for my login never comes",
            "two factor sign in keeps rejecting my code",
        ],
        [
            "my profile shows somebody else's name",
            "I want to merge my two usernames into one profile",
        ],
        [
            "the passkey on my new phone does not let me in",
            "my account got locked after three tries",
        ],
        [
            "I cannot switch my login to the new email",
            "the security questions on my account are wrong",
        ],
    ],
    "technical": [
        [
            "the {product} is bricked after the update",
            "bluetooth pairing with the {product} drops every minute",
        ],
        [
            "the {product} overheats and reboots on its own",
            "the {product} lags so much it is unusable",
        ],
        [
            "the voice assistant on the {product} no longer responds",
            "the {product} battery drains overnight",
        ],
        [
            "since app version five the {product} dashboard freezes",
            "the {product} firmware rollback failed",
        ],
    ],
    "cancellation": [
        [
            "unsubscribe me from the {product} plan",
            "turn off the auto renew on my {product}",
        ],
        [
            "end my premium membership today",
            "opt out of the {product} plan renewal",
        ],
        [
            "please terminate my {product} contract",
            "I pressed buy by mistake, void the {product} order",
        ],
        [
            "pause my {product} membership for three months",
            "I no longer need the {product} plan, close it",
        ],
    ],
    "warranty": [
        [
            "the {product} has a manufacturing defect, will you repair it",
            "a part of the {product} snapped, send it for repair",
        ],
        [
            "does the care plan pay for fixing the {product}",
            "the {product} hinge cracked by itself, is that a manufacturer fault",
        ],
        [
            "the {product} needs a spare part covered by the warranty",
            "the {product} fan is faulty after one year, fix it for free",
        ],
        [
            "the {product} screen cracked by itself, repair it under guarantee",
            "send a technician to repair the {product} free of charge",
        ],
    ],
}
# Neighbouring intents: an ambiguous ticket states one intent's problem and a neighbour's.
CONFUSABLE = {
    "billing": ["refund", "cancellation", "account"],
    "refund": ["billing", "returns", "cancellation"],
    "returns": ["refund", "warranty", "shipping"],
    "shipping": ["returns", "cancellation"],
    "account": ["technical", "billing"],
    "technical": ["account", "warranty"],
    "cancellation": ["refund", "billing", "shipping"],
    "warranty": ["technical", "returns"],
}
INTENTS = sorted(CORE)
SHIFTING_INTENT = "shipping"  # its wording moves to the new phrasings almost entirely
BASE_PRODUCTS = ["router", "smart speaker", "thermostat", "doorbell camera", "tablet", "headphones"]
NEW_PRODUCTS = [
    "solar charger",
    "e-bike",
    "air purifier",
    "robot vacuum",
    "smart lock",
    "baby monitor",
    "drone",
    "projector",
]
OPENERS = ["", "", "hello, ", "hi team, ", "urgent: ", "good morning, ", "dear support, "]
CONTEXTS = [
    "",
    "",
    "",
    "I bought the {product} last month and ",
    "about order {order}: ",
    "I have been a customer for years. ",
    "this is my second message about the {product}. ",
]
JOINERS = [" and also ", ". also ", ", plus ", " and "]
CLOSERS = ["", "", " thanks", " please help", " this is frustrating", " order #{order}"]


def new_phrase_share(day: int, intent: str) -> float:
    """The share of ``intent``'s tickets on ``day`` worded with the phrasings new since day 0."""
    if day == 0:
        return 0.0
    if intent == SHIFTING_INTENT:
        return min(0.8, 0.25 + 0.1 * day)
    return min(0.4, 0.12 + 0.04 * day)


def _phrase(rng: random.Random, day: int, intent: str) -> str:
    """One phrasing of ``intent`` as a ticket on ``day`` would word it."""
    introduced = NEW_PHRASES[intent][: min(day, len(NEW_PHRASES[intent]))]
    if introduced and rng.random() < new_phrase_share(day, intent):
        # The newest phrasings are the most common: customers pick up what was just launched.
        weights = [1.0] * (len(introduced) - 1) + [2.0]
        return rng.choice(rng.choices(introduced, weights=weights)[0])
    return rng.choice(CORE[intent])


def generate_day(
    day: int,
    rows: int,
    *,
    seed: int = 0,
    label_noise: float = 0.03,
    ambiguous: float = 0.15,
) -> Iterator[dict[str, str]]:
    """The tickets of one day as dicts with ``ticket_id``, ``channel``, ``text`` and ``intent``."""
    rng = random.Random(seed * 1000 + day)
    products = BASE_PRODUCTS + NEW_PRODUCTS[: 2 * day]  # two new products a day
    fresh = NEW_PRODUCTS[2 * (day - 1) : 2 * day] if day else []
    for i in range(rows):
        intent = rng.choice(INTENTS)
        product = rng.choice(fresh) if fresh and rng.random() < 0.3 else rng.choice(products)
        problem = _phrase(rng, day, intent)
        if rng.random() < ambiguous:
            other = _phrase(rng, day, rng.choice(CONFUSABLE[intent]))
            first, second = (problem, other) if rng.random() < 0.5 else (other, problem)
            problem = first + rng.choice(JOINERS) + second
        order = rng.randint(10000, 99999)
        text = rng.choice(OPENERS) + rng.choice(CONTEXTS) + problem + rng.choice(CLOSERS)
        text = text.format(product=product, order=order)
        label = rng.choice(INTENTS) if rng.random() < label_noise else intent
        yield {
            "ticket_id": f"d{day}-{i}",
            "channel": rng.choice(["email", "chat", "phone"]),
            "text": text,
            "intent": label,
        }


def write_stream(
    directory: Path, days: int, *, day0_rows: int = 1000, daily_rows: int = 800, seed: int = 0
) -> list[Path]:
    """Write ``data/span-<day>/tickets.csv`` for each day; returns the files."""
    files = []
    for day in range(days):
        folder = directory / "data" / f"span-{day + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "tickets.csv"
        rows = list(generate_day(day, day0_rows if day == 0 else daily_rows, seed=seed))
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["ticket_id", "channel", "text", "intent"])
            writer.writeheader()
            writer.writerows(rows)
            if day:
                repeated = dict(rows[0], ticket_id=f"d{day}-repeat")
                writer.writerow(dict(repeated, text=rows[1]["text"], intent=rows[1]["intent"]))
                f.write(f"d{day}-bad,chat\n")  # a malformed row: two fields instead of four
        files.append(path)
    return files


CONFIG = """\
[pipeline]
name = "support-tickets"
root = ".evergreen"

[data]
pattern = "data/span-{SPAN}/*.csv"
label = "intent"

[data.features]
text = "text"
channel = "categorical"

[split]
ratios = { train = 0.8, eval = 0.2 }
key = "ticket_id"
"""


@dataclass(frozen=True)
class DayAccuracy:
    """Version 1 and the champion on one later day's eval split (rows neither trained on)."""

    span: int
    rows: int
    first: float  # version 1: trained on day 0 only
    champion: float


def first_vs_champion(project: Project) -> tuple[int | None, list[DayAccuracy]]:
    """The champion's version and its accuracy against version 1's on every later day.

    Both models are scored through their registry SavedModels on each later day's eval split,
    where the drift is: what the published increments bought over day 0's model.
    """
    from evergreen.components.evaluate import score_saved_model
    from evergreen.components.featurize import span_texts
    from evergreen.loop import champion_saved_model
    from evergreen.registry import Registry

    registry = Registry(project.config.registry_dir)
    versions = registry.version_numbers(project.config.name)
    champion = registry.alias(project.config.name, "champion")
    later = sorted(
        (a for a in project.store.artifacts(type="Examples") if a.span > 1), key=lambda a: a.span
    )
    days = [(a.span, *span_texts(a, "eval", "text")[:2]) for a in later]
    texts = [text for _, day_texts, _ in days for text in day_texts]
    truth = [label for _, _, day_labels in days for label in day_labels]
    if not versions or champion is None or not texts:
        return champion, []
    correct = {}
    for version in (versions[0], champion):  # one model call per version over every day's rows
        scores, labels = score_saved_model(champion_saved_model(project, version), texts)
        correct[version] = np.array([labels[i] for i in scores.argmax(axis=1)]) == truth
    table, start = [], 0
    for span, day_texts, _ in days:
        end = start + len(day_texts)
        first, best = (float(correct[v][start:end].mean()) for v in (versions[0], champion))
        table.append(DayAccuracy(span, len(day_texts), first, best))
        start = end
    return champion, table


def print_first_vs_champion(console: Console, project: Project) -> None:
    """One line per later day: version 1's accuracy on its eval rows, then the champion's."""
    champion, table = first_vs_champion(project)
    if not table:
        return
    console.print(
        "accuracy on each later day's eval rows, version 1 (day 0 only) -> champion "
        f"(version {champion}):"
    )
    for day in table:
        console.print(
            f"    span {day.span} ({day.rows} rows): {day.first:.3f} -> {day.champion:.3f}"
        )


def run(directory: Path, *, days: int = 5, console: Console | None = None) -> None:
    """Write the stream and config into ``directory`` and run the whole loop over every day."""
    console = console or Console()
    directory.mkdir(parents=True, exist_ok=True)
    write_stream(directory, days)
    (directory / "evergreen.toml").write_text(CONFIG, encoding="utf-8")
    console.print(
        f"[bold]Evergreen demo[/] in {directory}: {days} days of synthetic support tickets"
    )
    with Project(config_mod.load(directory / "evergreen.toml")) as project:
        from evergreen.loop import TrainingLoop

        records = [r.to_dict() for r in TrainingLoop(project).run()]
        render.print_run_table(console, records)
        for outcome in project.status()["spans"]:
            if outcome.get("anomalies"):
                for a in outcome["anomalies"]:
                    console.print(f"    {a['severity']}: {a['message']}", markup=False)
        merged = project.dataset_statistics()
        if merged is not None:
            console.print(
                f"dataset statistics (merged from span sketches): {merged.rows} rows, labels {merged.labels}"
            )
        if records:
            console.print(f"run reports (HTML, one per day): {Path(records[-1]['report']).parent}")
        print_first_vs_champion(console, project)
    config = directory / "evergreen.toml"
    console.print(
        f"next: `evergreen status -c {config}`, `evergreen history -c {config}`, "
        f'`evergreen predict -c {config} "my parcel never arrived"`, '
        f"`evergreen serve -c {config}` (then curl localhost:8501/v1/models/support-tickets)"
    )
