"""Training on tf.distribute: config, MirroredStrategy, mixed precision, and real 2-worker runs.

The multi-worker tests start real ``evergreen train-worker`` processes on loopback, each with
its own TF_CONFIG, on fine foods reviews: both workers must end with the same weights, the
model must score like a single-process run, and a worker killed mid-training must resume from
the chief's checkpoint when both are restarted.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evergreen import config as config_mod
from evergreen.errors import ConfigError
from evergreen.models.saved_model import feed_saved_model
from evergreen.project import Project
from evergreen.registry import Registry
from evergreen.training.strategy import local_tf_configs, task_info
from tests.conftest import dataset, read_csv, write_config, write_csv

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
FEATURES = {"product": "categorical", "review": "text"}
SMALL = "sequence_length = 100\nmax_tokens = 5000\n"


def _project(folder: Path, rows: int, train: str) -> Path:
    header, data = read_csv(dataset("fine_foods_train.csv"))
    write_csv(folder / "data" / "span-1" / "reviews.csv", header, data[:rows])
    return write_config(folder, label="score", features=FEATURES, extra=f"[train]\n{SMALL}{train}")


def _start_workers(config: Path, n: int = 2) -> list[subprocess.Popen]:
    """``evergreen train-worker`` once per worker, each with its TF_CONFIG, on free ports."""
    workers = []
    for tf_config in local_tf_configs(n):
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "evergreen", "train-worker", "-c", str(config), "--json"],
                env=dict(ENV, TF_CONFIG=tf_config),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return workers


def _finish(workers: list[subprocess.Popen]) -> list[dict]:
    """Wait for every worker; all exit 0; the chief's JSON records."""
    outputs = [w.communicate(timeout=900) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    return json.loads(outputs[0][0])


def _model_properties(config: Path) -> dict:
    with Project(config_mod.load(config)) as project:
        [model] = project.store.artifacts(type="Model")
        return model.properties


def _worker_reports(config: Path) -> list[dict]:
    root = config_mod.load(config).root / "distributed"
    return [json.loads(p.read_text()) for p in sorted(root.glob("session-*/job-*.worker-*.json"))]


def _held_out_accuracy(config: Path) -> tuple[float, int]:
    cfg = config_mod.load(config)
    header, rows = read_csv(dataset("fine_foods_test.csv"))
    records = [dict(zip(header, r, strict=True)) for r in rows]
    saved_model = Registry(cfg.registry_dir).get(cfg.name, "champion").path
    probabilities, classes = feed_saved_model(saved_model, records)
    predicted = [classes[i] for i in probabilities.argmax(axis=1)]
    hits = sum(p == r["score"] for p, r in zip(predicted, records, strict=True))
    return hits / len(records), len(records)


# -- config -----------------------------------------------------------------------------------


def test_scale_out_keys_default_to_one_process_and_are_validated(tmp_path: Path) -> None:
    config = write_config(tmp_path, label="score", features=FEATURES)
    train = config_mod.load(config).train
    assert (train.distribution, train.mixed_precision, train.gpu_memory_growth) == (
        "none",
        "none",
        True,
    )
    for key, value in (("distribution", "horovod"), ("mixed_precision", "float16")):
        bad = write_config(tmp_path, label="score", extra=f'[train]\n{key} = "{value}"\n')
        with pytest.raises(ConfigError, match=f"train.{key} = '?{value}'?.*use one of"):
            config_mod.load(bad)
    good = write_config(
        tmp_path,
        label="score",
        extra='[train]\ndistribution = "multi_worker"\nmixed_precision = "mixed_bfloat16"\n'
        "gpu_memory_growth = false\n",
    )
    train = config_mod.load(good).train
    assert (train.distribution, train.mixed_precision, train.gpu_memory_growth) == (
        "multi_worker",
        "mixed_bfloat16",
        False,
    )


def test_tf_config_names_this_worker_and_the_chief() -> None:
    cluster = {"worker": ["a:1", "b:2", "c:3"]}
    second = task_info({"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"index": 1}})})
    assert (second.workers, second.index, second.is_chief) == (3, 1, False)
    first = task_info({"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"index": 0}})})
    assert first.is_chief
    assert task_info({}).workers == 1 and task_info({}).is_chief
    assert task_info({"TF_CONFIG": " "}).workers == 1  # blank: unset (a launcher's empty value)
    with pytest.raises(ConfigError, match="TF_CONFIG task worker:3 is not in its cluster"):
        task_info({"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"index": 3}})})
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid"):
        task_info({"TF_CONFIG": "{cluster"})


def test_train_worker_refuses_a_config_without_multi_worker(tmp_path: Path) -> None:
    config = write_config(tmp_path, label="score", features=FEATURES)
    done = subprocess.run(
        [sys.executable, "-m", "evergreen", "train-worker", "-c", str(config)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "train.distribution = 'multi_worker'" in done.stderr


# -- one process: MirroredStrategy and mixed precision -----------------------------------------


def _run(config: Path) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "evergreen", "run", "-c", str(config), "--json"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_mirrored_strategy_trains_and_exports(tmp_path: Path) -> None:
    config = _project(tmp_path, 1500, 'epochs = 2\ndistribution = "mirrored"\n')
    [record] = _run(config)
    assert (record["mode"], record["blessed"], record["version"]) == ("full", True, 1)
    properties = _model_properties(config)
    assert properties["epochs"] == 2 and properties["rows_trained"] > 2000
    accuracy, _ = _held_out_accuracy(config)
    assert accuracy > 0.6  # the majority class is 0.66: it learned, and serves


@pytest.mark.slow
def test_mixed_float16_trains_in_float16_and_serves_float32(tmp_path: Path) -> None:
    """On this CPU TensorFlow runs float16 kernels (slowly): the real policy is exercised."""
    import keras

    from evergreen.tf import tensorflow

    tf = tensorflow()
    config = _project(tmp_path, 600, 'epochs = 1\nmixed_precision = "mixed_float16"\n')
    [record] = _run(config)
    assert record["blessed"] and record["version"] == 1
    cfg = config_mod.load(config)
    with Project(cfg) as project:
        [model_artifact] = project.store.artifacts(type="Model")
    model = keras.models.load_model(Path(model_artifact.uri) / "model.keras", compile=False)
    compute = {layer.name: layer.dtype_policy.compute_dtype for layer in model.layers}
    assert "float16" in compute.values()  # the conv / embedding layers computed in float16
    assert model.layers[-1].dtype_policy.name == "float32"  # the softmax did not
    assert model.outputs[0].dtype == "float32"
    assert all(w.dtype == "float32" for w in model.weights)  # variables stay float32
    version = Registry(cfg.registry_dir).get(cfg.name, "champion")
    serve = tf.saved_model.load(str(version.path)).signatures["serving_default"]
    names = serve.structured_input_signature[1]  # the raw columns the family reads
    raw = {"text": ["great tea", "awful"], "review": ["great tea", "awful"], "product": ["a", "b"]}
    scores = serve(**{name: tf.constant(raw[name]) for name in names})
    assert scores["scores"].dtype == tf.float32 and scores["scores"].shape == (2, 2)
    assert abs(float(tf.reduce_sum(scores["scores"][0])) - 1.0) < 1e-3


# -- several processes: MultiWorkerMirroredStrategy --------------------------------------------


@pytest.mark.slow
def test_two_workers_train_the_same_weights_as_good_as_one_process(tmp_path: Path) -> None:
    train = "epochs = 3\n"
    single = _project(tmp_path / "single", 2000, train)
    _run(single)
    multi = _project(tmp_path / "multi", 2000, train + 'distribution = "multi_worker"\n')
    [record] = _finish(_start_workers(multi))
    assert (record["mode"], record["blessed"], record["version"]) == ("full", True, 1)

    chief = _model_properties(multi)
    [other] = _worker_reports(multi)
    assert chief["workers"] == 2
    assert other["weights_sha256"] == chief["weights_sha256"]  # in step to the last bit
    assert other["optimizer_iterations"] == chief["optimizer_iterations"]
    # Global batches: 2 workers take the steps one process takes (rows / batch per epoch).
    steps = math.ceil(chief["rows_trained"] / chief["epochs"] / 64)
    assert chief["optimizer_iterations"] == steps * chief["epochs"]
    assert (Path(_model_artifact_uri(multi)) / "logs" / "validation").is_dir()  # TensorBoard

    one, n = _held_out_accuracy(single)
    two, _ = _held_out_accuracy(multi)
    noise = 2.5 * math.sqrt(one * (1 - one) / n * 2)  # unpaired difference of two accuracies
    assert abs(two - one) <= noise, (one, two, noise)


def _model_artifact_uri(config: Path) -> str:
    with Project(config_mod.load(config)) as project:
        [model] = project.store.artifacts(type="Model")
        return model.uri


def _chief_checkpoints(config: Path) -> list[Path]:
    artifacts = config_mod.load(config).artifacts_dir
    return list((artifacts / "train").glob("span-*/*/_checkpoint/checkpoint"))


@pytest.mark.slow
def test_a_worker_killed_mid_training_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    config = _project(tmp_path, 1500, 'epochs = 5\npatience = 5\ndistribution = "multi_worker"\n')
    workers = _start_workers(config)
    deadline = time.monotonic() + 600
    while not _chief_checkpoints(config):  # the first epoch is checkpointed
        assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
        assert time.monotonic() < deadline, "no epoch was ever checkpointed"
        time.sleep(0.05)
    workers[1].send_signal(signal.SIGKILL)  # the spot VM of worker 1 is preempted
    workers[1].wait()
    # The chief's collectives are aborted (TensorFlow's coordination service misses worker 1's
    # heartbeats): it says so and exits 75 (retry), leaving the checkpoint for the restart.
    _, err = workers[0].communicate(timeout=600)
    assert workers[0].returncode == 75, err
    assert "worker lost" in err and "restart every worker" in err
    with Project(config_mod.load(config)) as project:
        assert project.store.artifacts(type="Model") == []  # nothing half-trained is visible

    [record] = _finish(_start_workers(config))
    assert record["blessed"] and record["version"] == 1
    chief = _model_properties(config)
    [other] = _worker_reports(config)
    resumed = chief["resumed_from_epoch"]
    assert resumed >= 1 and other["resumed_from_epoch"] == resumed
    assert resumed + chief["epochs"] == 5  # the epochs continued, they did not start over
    steps = math.ceil(chief["rows_trained"] / chief["epochs"] / 64)
    # The optimizer's step counter came back from the checkpoint and went on counting.
    assert chief["optimizer_iterations"] == steps * 5
    assert other["weights_sha256"] == chief["weights_sha256"]
    assert not list(config_mod.load(config).artifacts_dir.rglob("_checkpoint*"))  # cleaned up


# -- an increment on two workers starts as the Keras path's does --------------------------------


def test_an_increment_re_warms_over_its_global_steps_or_keeps_the_flat_rate() -> None:
    from types import SimpleNamespace

    from evergreen.components.schedule import rewarm_schedule
    from evergreen.training.data import TrainingData, increment_rate

    data = SimpleNamespace(rows_per_epoch=1000)
    cfg = SimpleNamespace(
        incremental_schedule="rewarm",
        learning_rate=1e-3,
        rewarm_peak=2.0,
        incremental_learning_rate=1e-4,
        batch_size=64,
    )
    schedule = increment_rate(cfg, data, epochs=3)
    # 3 epochs of ceil(1000 / 64) = 16 global batches, peak 2 x learning_rate: the schedule
    # one process gets
    assert schedule.get_config() == rewarm_schedule(2e-3, 48).get_config()
    # "auto": 1 + 2 x 250 new rows / 1,000 earlier rows = 1.5 x learning_rate, 3 x 16 steps
    cfg.rewarm_peak = "auto"
    data = TrainingData(None, rows_per_epoch=1000, replayed=750, label_counts={}, history_rows=1000)
    assert (
        increment_rate(cfg, data, epochs=3).get_config() == rewarm_schedule(1.5e-3, 48).get_config()
    )
    cfg.incremental_schedule = "constant"
    assert increment_rate(cfg, data, epochs=3) == 1e-4


def _growing_project(folder: Path, train: str) -> Path:
    """Two spans; span 2 names a product span 1 never saw, so the featurizer grows."""
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    review = header.index("review")
    write_csv(folder / "data" / "span-1" / "r.csv", header, rows[:400])
    span2 = [list(row) for row in rows[400:700]]
    for row in span2[::4]:
        row[review] = "quinoabar " + row[review]
    write_csv(folder / "data" / "span-2" / "r.csv", header, span2)
    extra = (
        "[train]\nepochs = 1\nincremental_epochs = 2\nsequence_length = 40\n"
        'max_unknown_rate = 0.9\nincremental_schedule = "rewarm"\nrewarm_peak = "auto"\n'
        "shrink = 0.9\n"
        'perturb = 0.001\ndecision_threshold = "balanced_accuracy"\n'
        f"{train}\n[drift]\nenabled = false\n"
    )
    return write_config(folder, label="score", extra=extra)


def _candidate(config: Path) -> tuple[dict, Path]:
    with Project(config_mod.load(config)) as project:
        model = next(a for a in project.store.artifacts(type="Model") if a.span == 2)
        return model.properties, Path(model.uri)


def _optimizer_schedule(model_dir: Path) -> dict:
    """The learning-rate schedule saved with ``model.keras``'s compiled optimizer."""
    import zipfile

    with zipfile.ZipFile(model_dir / "model.keras") as archive:
        config = json.loads(archive.read("config.json"))
    return config["compile_config"]["optimizer"]["config"]["learning_rate"]


@pytest.mark.slow
def test_an_increment_on_two_workers_grows_re_warms_and_chooses_a_threshold(
    tmp_path: Path,
) -> None:
    """The multi-worker loop applies what the Keras path applies to an increment: embedding
    growth, the re-warm schedule, shrink-and-perturb, and the decision threshold."""
    single = _growing_project(tmp_path / "single", "")
    one = _run(single)
    multi = _growing_project(tmp_path / "multi", 'distribution = "multi_worker"\n')
    two = _finish(_start_workers(multi))
    assert [r["mode"] for r in one] == [r["mode"] for r in two] == ["full", "incremental"]

    expected, one_dir = _candidate(single)
    chief, two_dir = _candidate(multi)
    assert chief["workers"] == 2
    added = chief["embedding_rows_added"]
    assert added == expected["embedding_rows_added"] and added["embedding"] >= 1
    assert chief["schedule"] == expected["schedule"] == "rewarm"
    # rewarm_peak = "auto": both derive the peak from the same rows (span 2's train split over
    # span 1's), and record it with them
    rows = chief["rewarm_rows"]
    assert rows == expected["rewarm_rows"] and 0 < rows["new"] < rows["history"]
    peak = chief["rewarm_peak"]
    assert (
        peak == expected["rewarm_peak"] == round(min(2, 1 + 2 * rows["new"] / rows["history"]), 4)
    )
    assert chief["shrink_perturb"] == expected["shrink_perturb"] == [0.9, 0.001]
    schedule = _optimizer_schedule(two_dir)
    assert schedule["class_name"] == "CosineDecay"
    assert schedule == _optimizer_schedule(one_dir)  # the same steps, peak and floor
    decision = chief["decision"]
    assert decision["objective"] == expected["decision"]["objective"] == "balanced_accuracy"
    exported = json.loads(
        (two_dir / "saved_model" / "assets.extra" / "evergreen_decision.json").read_text()
    )
    assert exported["threshold"] == decision["threshold"]
    assert decision["rows"] == expected["decision"]["rows"]  # judged on the same eval rows

    reports = _worker_reports(multi)
    assert len(reports) == 2  # worker 1 trained both jobs (the full run and the increment)
    assert reports[-1]["weights_sha256"] == chief["weights_sha256"]  # grown and perturbed alike
    assert reports[-1]["optimizer_iterations"] == chief["optimizer_iterations"]


# -- Kubernetes: the Kubeflow training operator's TFJob ----------------------------------------


def test_tfjob_runs_train_worker_on_every_worker_with_a_multi_worker_config(tmp_path: Path):
    """TFJob is a CRD: its pod template is checked strictly as a core Job's, the rest by hand."""
    import yaml

    from evergreen.cli import cli

    k8s = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
    docs = {d["kind"]: d for d in yaml.safe_load_all((k8s / "tfjob.yaml").read_text()) if d}
    job = docs["TFJob"]
    assert (job["apiVersion"], job["metadata"]["namespace"]) == ("kubeflow.org/v1", "evergreen")
    [(role, replicas)] = job["spec"]["tfReplicaSpecs"].items()
    assert role == "Worker" and replicas["replicas"] >= 2  # worker 0 is the chief
    assert replicas["restartPolicy"] == "OnFailure"  # a preempted worker comes back and resumes
    template = replicas["template"]
    [container] = template["spec"]["containers"]
    assert container["name"] == "tensorflow"  # the operator's default container name
    argv = container["args"]
    assert argv[0] == "train-worker"
    cli.commands["train-worker"].make_context("train-worker", argv[1:]).close()

    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    as_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "tfjob-template", "namespace": "evergreen"},
        "spec": {
            "template": {**template, "spec": {**template["spec"], "restartPolicy": "OnFailure"}}
        },
    }
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(as_job, version, strict=True)
    kubernetes_validate.validate(docs["ConfigMap"], version, strict=True)

    mounted = {v["name"]: v for v in template["spec"]["volumes"]}
    assert mounted["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    claims = {d["metadata"]["name"] for d in yaml.safe_load_all((k8s / "storage.yaml").read_text())}
    assert mounted["root"]["persistentVolumeClaim"]["claimName"] in claims
    path = tmp_path / "evergreen.toml"
    path.write_text(docs["ConfigMap"]["data"]["evergreen.toml"], encoding="utf-8")
    assert config_mod.load(path).train.distribution == "multi_worker"
    assert argv[argv.index("-c") + 1] == "/etc/evergreen/evergreen.toml"
