"""Models the loop trained, served as they are: tabular rows as JSON, images as base64 PNG."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from evergreen import config as config_mod
from evergreen.components.evaluate import score_saved_model
from evergreen.config import ServingConfig
from evergreen.loop import TrainingLoop, champion_saved_model
from evergreen.project import Project
from evergreen.serving.server import ServerThread, build
from tests.conftest import dataset, read_csv, write_config, write_csv
from tests.test_image import CONFIG as IMAGE_CONFIG
from tests.test_image import _span as image_span
from tests.test_image import digits  # noqa: F401  (the module fixture)
from tests.test_tabular import CATEGORICAL, LABEL, _typed


@contextmanager
def _served(project_config: Path) -> Iterator[tuple[httpx.Client, str, Path]]:
    """Train the project's spans, then serve its registry; yields client, model name, champion."""
    with Project(config_mod.load(project_config)) as project:
        [record] = TrainingLoop(project).run()
        assert record.blessed and record.version == 1
        name, champion = project.config.name, champion_saved_model(project)
        registry = project.config.registry_dir
    settings = ServingConfig(port=0, audit_log=os.devnull)
    with (
        ServerThread(build(registry, settings), settings) as running,
        httpx.Client(base_url=running.url, timeout=60) as client,
    ):
        yield client, name, champion


@pytest.mark.slow
def test_tabular_champion_answers_raw_json_rows(tmp_path: Path) -> None:
    header, raw = read_csv(dataset("mlc_churn.csv"))
    write_csv(tmp_path / "churn" / "data" / "span-1" / "churn.csv", header, raw[:800])
    config = write_config(
        tmp_path / "churn", label=LABEL, extra='[train]\nfamily = "tabular"\nepochs = 3\n'
    )
    rows = _typed([dict(zip(header, r, strict=True)) for r in raw[4000:4016]])
    features = [{k: v for k, v in r.items() if k != LABEL} for r in rows]
    features[0]["state"] = "ZZ"  # a category never seen: the OOV bucket, not an error
    with _served(config) as (client, name, champion):
        r = client.post(f"/v1/models/{name}:predict", json={"instances": features})
        assert r.status_code == 200, r.text
        assert r.headers["x-model-version"] == "1"
        served = np.array([p["scores"] for p in r.json()["predictions"]])
        expected, labels = score_saved_model(champion, features)
        assert r.json()["predictions"][0]["classes"] == labels
        assert np.allclose(served, expected, atol=1e-5)
        columns = {c: [f[c] for f in features[:3]] for c in features[0]}
        v2 = client.post(
            f"/v2/models/{name}/infer",
            json={
                "inputs": [
                    {
                        "name": c,
                        "shape": [3],
                        "datatype": "BYTES" if c in CATEGORICAL else "FP32",
                        "data": v,
                    }
                    for c, v in columns.items()
                ]
            },
        )
        assert v2.status_code == 200, v2.text
        scores = next(o for o in v2.json()["outputs"] if o["name"] == "scores")
        assert np.allclose(np.array(scores["data"]).reshape(3, -1), expected[:3], atol=1e-5)
        missing = dict(features[1])
        del missing["total_day_minutes"]
        bad = client.post(f"/v1/models/{name}:predict", json={"instances": [missing]})
        assert bad.status_code == 400 and "total_day_minutes" in bad.json()["error"]


@pytest.mark.slow
def test_image_champion_answers_base64_png(digits, tmp_path: Path) -> None:  # noqa: F811
    images, labels = digits
    folder = tmp_path / "digits"
    image_span(folder, 1, images[:400], labels[:400], 0)
    config = write_config(
        folder, label="digit", extra=IMAGE_CONFIG.replace("epochs = 15", "epochs = 4")
    )
    with _served(config) as (client, name, champion):
        sample = images[1500:1508]
        instances = [{"b64": base64.b64encode(png).decode()} for png in sample]
        r = client.post(f"/v1/models/{name}:predict", json={"instances": instances})
        assert r.status_code == 200, r.text
        served = np.array([p["scores"] for p in r.json()["predictions"]])
        expected, _ = score_saved_model(champion, [{"image": png} for png in sample])
        assert np.allclose(served, expected, atol=1e-5)
        garbage = client.post(
            f"/v1/models/{name}:predict", json={"instances": [{"b64": "bm90IGFuIGltYWdl"}]}
        )
        assert garbage.status_code == 400, garbage.text
        assert (
            "rejected the input" in garbage.json()["error"]
            and "image file format" in garbage.json()["error"]
        )
        # Merged with good requests, a bad one fails alone.
        with ThreadPoolExecutor(8) as pool:
            bodies = [
                {"instances": [{"b64": "bm90IGFuIGltYWdl"}]}
                if i % 4 == 0
                else {"instances": instances[:2]}
                for i in range(16)
            ]
            codes = list(
                pool.map(
                    lambda body: client.post(f"/v1/models/{name}:predict", json=body).status_code,
                    bodies,
                )
            )
        assert codes == [400 if i % 4 == 0 else 200 for i in range(16)]
