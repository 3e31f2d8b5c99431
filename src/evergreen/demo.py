"""``evergreen demo``: a synthetic support-ticket stream run through the pipeline.

The stream (documented so that tests and benchmarks can rely on it):

* five intents — billing, shipping, account, technical, refund — each with its own phrasing
  templates and vocabulary;
* day 0 has ``day0_rows`` tickets, every later day ``daily_rows``;
* the product vocabulary drifts: each day introduces products never seen before;
* ``label_noise`` of the tickets (3% by default) carry a random wrong intent;
* a few tickets repeat verbatim from earlier days (customers paste the same text), and each
  later day carries one malformed row, so dedupe and quarantine have work to do.

Everything is drawn from ``random.Random(seed)``: the same seed gives the same files.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from evergreen import config as config_mod
from evergreen import render
from evergreen.project import Project

INTENTS = {
    "billing": [
        "I was charged twice for my {product} subscription this month",
        "why is my invoice for the {product} higher than last time",
        "please update the credit card on file for {product}",
        "the payment for my {product} order failed but money left my account",
    ],
    "shipping": [
        "my {product} has not arrived yet, tracking says in transit for a week",
        "can you ship the {product} to a different address",
        "the courier left my {product} at the wrong door",
        "when will the {product} be delivered, it is already late",
    ],
    "account": [
        "I cannot log in to my account after the {product} update",
        "how do I change the email address on my account",
        "please delete my account and all my {product} data",
        "my password reset link for the {product} app never arrives",
    ],
    "technical": [
        "the {product} keeps crashing when I open the settings",
        "my {product} will not connect to wifi after the firmware update",
        "the screen of the {product} flickers and then goes black",
        "error code 503 every time I sync the {product}",
    ],
    "refund": [
        "I want a refund for the broken {product}",
        "I returned the {product} two weeks ago and still no refund",
        "how long does a refund for the {product} take",
        "cancel my {product} order and give me my money back",
    ],
}
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
OPENERS = ["", "hello, ", "hi team, ", "urgent: ", "good morning, "]
CLOSERS = ["", " thanks", " please help", " this is frustrating", " order #{order}"]


def generate_day(
    day: int, rows: int, *, seed: int = 0, label_noise: float = 0.03
) -> Iterator[dict[str, str]]:
    """The tickets of one day as dicts with ``ticket_id``, ``channel``, ``text`` and ``intent``."""
    rng = random.Random(seed * 1000 + day)
    products = BASE_PRODUCTS + NEW_PRODUCTS[: 2 * day]  # vocabulary drift: two new products a day
    fresh = NEW_PRODUCTS[2 * (day - 1) : 2 * day] if day else []
    intents = sorted(INTENTS)
    for i in range(rows):
        intent = rng.choice(intents)
        product = rng.choice(fresh) if fresh and rng.random() < 0.3 else rng.choice(products)
        text = rng.choice(OPENERS) + rng.choice(INTENTS[intent]).format(product=product)
        text += rng.choice(CLOSERS).format(order=rng.randint(10000, 99999))
        label = rng.choice(intents) if rng.random() < label_noise else intent
        yield {
            "ticket_id": f"d{day}-{i}",
            "channel": rng.choice(["email", "chat", "phone"]),
            "text": text,
            "intent": label,
        }


def write_stream(
    directory: Path, days: int, *, day0_rows: int = 2000, daily_rows: int = 500, seed: int = 0
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
    config = directory / "evergreen.toml"
    console.print(
        f"next: `evergreen status -c {config}`, `evergreen history -c {config}`, "
        f'`evergreen predict -c {config} "my parcel never arrived"`, '
        f"`evergreen serve -c {config}` (then curl localhost:8501/v1/models/support-tickets)"
    )
