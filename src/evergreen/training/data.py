"""What a training run reads: featurized shards as ``tf.data`` batches, replay and weights.

Shared by the single-process trainer (:class:`evergreen.components.train.TrainModel`) and the
multi-worker loop (:mod:`evergreen.training.multi_worker`), which is why it sits below both:
:class:`TrainJob` is what a worker needs to rebuild a run's data (config, family, mode, span).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evergreen.components.evaluate import allocate
from evergreen.config import TrainConfig
from evergreen.examples import shard_paths
from evergreen.metadata import Artifact
from evergreen.models.contract import ModelFamily
from evergreen.models.featurized import parse_spec
from evergreen.pipeline import Inputs, per_span

# Early-stopping patience when train.patience is 0: enough epochs for each family to converge
# (tabular and image models improve in small steps; patience 1 stopped them after 2-6 epochs).
FAMILY_PATIENCE = {"text": 2, "tabular": 3, "image": 4}


def early_stopping_patience(cfg: TrainConfig, family_name: str) -> int:
    """``train.patience``, or when it is 0 the family's default (:data:`FAMILY_PATIENCE`; 2)."""
    return cfg.patience or FAMILY_PATIENCE.get(family_name, 2)


@dataclass(frozen=True)
class TrainingData:
    """One run's training input: batches, rows per epoch, and how many of them are replay."""

    train: Any
    rows_per_epoch: int
    replayed: int
    label_counts: dict[str, float]  # rows per label in an epoch (replay: expected counts)
    history_rows: int = 0  # incremental: train rows of the earlier spans (the champion's history)

    @property
    def new_rows(self) -> int:
        """Rows of the new span in an epoch (an incremental run's; a full run's: all of them)."""
        return self.rows_per_epoch - self.replayed


# class_weights = "auto" weighs classes when the largest has more than SKEW x the rows of the
# smallest. Measured on churn (6:1, tests/test_tabular.py's stream): balanced weights cost AUC
# (incremental 0.881 -> 0.866, full 0.892 -> 0.880) and minority F1 (0.68 -> 0.61) for a higher
# balanced accuracy at argmax (0.78 -> 0.82), so moderate skew is left unweighted; the issue's
# loan table (5.7 % positives, 16:1), whose models never predicted the minority, is weighted.
SKEW = 10.0


def class_weights(
    counts: Mapping[str, float], labels: list[str], setting: str
) -> dict[int, float] | None:
    """Balanced class weights (rows / (classes x rows of the class)) when labels are skewed.

    Args:
        counts: training rows per label.
        labels: the model's classes, in output order.
        setting: ``train.class_weights``: ``auto`` (weights when the largest class has more
            than ``SKEW`` times the rows of the smallest), ``balanced`` (weights whenever the
            classes differ in size) or ``none``.

    Returns:
        ``{class index: weight}`` for ``Model.fit``, or None (unweighted). A class with no
        training rows gets weight 1.
    """
    present = {label: float(counts.get(label, 0)) for label in labels if counts.get(label, 0)}
    if setting == "none" or len(present) < 2:
        return None
    largest, smallest = max(present.values()), min(present.values())
    if largest == smallest or setting == "auto" and largest <= SKEW * smallest:
        return None
    total = sum(present.values())
    return {
        i: total / (len(present) * present[label]) if label in present else 1.0
        for i, label in enumerate(labels)
    }


def _train_counts(artifact: Artifact, scale: float = 1.0) -> dict[str, float]:
    counts = (artifact.properties.get("labels") or {}).get("train") or {}
    return {label: n * scale for label, n in counts.items()}


def _add(total: dict[str, float], more: Mapping[str, float]) -> dict[str, float]:
    for label, n in more.items():
        total[label] = total.get(label, 0.0) + n
    return total


@dataclass(frozen=True)
class ReplayWindow:
    """A replay folder of ``available`` rows read as a moving window (``train.replay_rotate``):
    ``pool`` rows from ``offset`` on (wrapping round to the folder's start), of which each epoch
    replays a fresh uniform ``quota`` (drawn with ``seed``)."""

    offset: int
    pool: int
    quota: int
    available: int
    seed: int


def _windowed(records: Any, window: ReplayWindow) -> Any:
    """The records of one replay folder as :class:`ReplayWindow` says. Skipping to the offset
    seeks past records without decoding them (about 0.02 CPU s per 50,000 rows measured)."""
    part = records.skip(window.offset).take(window.pool)
    wrapped = window.offset + window.pool - window.available
    if wrapped > 0:
        part = part.concatenate(records.take(wrapped))
    if window.pool > window.quota:  # another draw each epoch (each iteration reshuffles)
        part = part.shuffle(window.pool, seed=window.seed, reshuffle_each_iteration=True)
        part = part.take(window.quota)
    return part


def featurized_dataset(
    folders: list[Path],
    labels: list[str],
    featurizer: Any,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    take_per_folder: int | Sequence[int | ReplayWindow | None] | None = None,
    only_label: str | None = None,
) -> Any:
    """A ``tf.data`` pipeline of ``(model_inputs, label_id)`` batches from featurized shards.

    Records are parsed with the featurizer's spec and turned into model inputs in-graph by
    ``featurizer.model_inputs`` (e.g. images are decoded here, in parallel).

    Args:
        take_per_folder: read only the first this many records of each folder (None: all),
            or one such count (or a :class:`ReplayWindow`) per folder.
        only_label: keep only the records of this label (before ``take_per_folder``).

    Returns:
        The batches, or None when no folder has a shard.
    """
    from evergreen.tf import tensorflow

    tf = tensorflow()
    dataset = _serialized_records(folders, take_per_folder, only_label)
    if dataset is None:
        return None
    if shuffle_seed is not None:
        dataset = dataset.shuffle(20_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(labels), tf.range(len(labels), dtype=tf.int64)
        ),
        default_value=-1,
    )
    spec = parse_spec(featurizer.feature_spec())

    def parse(batch: Any) -> Any:
        parsed = tf.io.parse_example(batch, spec)
        return featurizer.model_inputs(parsed), table.lookup(parsed["label"])

    return (
        dataset.batch(batch_size)
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _serialized_records(
    folders: list[Path],
    take_per_folder: int | Sequence[int | ReplayWindow | None] | None,
    only_label: str | None,
) -> Any:
    """The folders' shard records, in folder order (None: no shard anywhere)."""
    from evergreen.tf import tensorflow

    tf = tensorflow()
    label_only = {"label": tf.io.FixedLenFeature([], tf.string)}

    def keep(record: Any) -> Any:
        return tf.io.parse_single_example(record, label_only)["label"] == only_label

    takes = (
        list(take_per_folder)
        if isinstance(take_per_folder, Sequence)
        else [take_per_folder] * len(folders)
    )
    parts = []
    for folder, take in zip(folders, takes, strict=True):
        paths = [str(p) for p in shard_paths(folder)]
        if not paths:
            continue
        # Files read one after the other: a prefix is the same rows on every machine (the
        # interleave this replaced alternated between as many files as the machine had
        # cores), and no function is traced per folder.
        part = tf.data.TFRecordDataset(paths)
        if only_label is not None:
            part = part.filter(keep)
        if isinstance(take, ReplayWindow):
            part = _windowed(part, take)
        elif take is not None:
            part = part.take(take)
        parts.append(part)
    if not parts:
        return None
    dataset = parts[0]
    for part in parts[1:]:
        dataset = dataset.concatenate(part)
    return dataset


@dataclass(frozen=True)
class TrainInputs(Inputs):
    """What training reads: the fitted featurizer, the featurized spans, the champion.

    Args:
        featurizer: the fitted featurizer artifact (its labels are the model's outputs).
        spans: featurized examples by span; full mode trains on all of them, incremental on
            the new one plus a replay sample of the others.
        champion: the model an incremental run starts from (None in full mode).
    """

    featurizer: Artifact
    spans: dict[int, Artifact] = per_span("span")
    champion: Artifact | None = None

    def to_json(self) -> dict[str, Any]:
        """The inputs as a job file holds them (for the other workers of a multi-worker run)."""
        return {
            "featurizer": asdict(self.featurizer),
            "spans": {str(s): asdict(a) for s, a in self.spans.items()},
            "champion": asdict(self.champion) if self.champion is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainInputs:
        champion = data.get("champion")
        return cls(
            featurizer=Artifact(**data["featurizer"]),
            spans={int(s): Artifact(**a) for s, a in data["spans"].items()},
            champion=Artifact(**champion) if champion is not None else None,
        )


@dataclass
class Start:
    """What training starts from (:meth:`TrainModel.start`, shared by the multi-worker loop):
    the model, built or the champion's (grown), its data, epochs and learning rate."""

    model: Any
    data: TrainingData
    epochs: int
    learning_rate: Any  # a float, or the re-warm schedule (schedule.py)
    grown_rows: dict[str, int] = field(default_factory=dict)  # embedding rows added, by layer

    @property
    def schedule(self) -> bool:
        """A schedule owns the rate (no ReduceLROnPlateau beside it)."""
        return not isinstance(self.learning_rate, float | int)


class TrainJob:
    """One training run's settings and how its data is assembled from featurized spans.

    Args:
        cfg: the ``[train]`` config.
        family: the model family (builds a full run's model).
        mode: ``full`` (every span's train split) or ``incremental`` (the new span's train
            split plus a replay sample of the earlier spans).
        reason: why this mode (recorded with the model).
        new_span: the span this run is for.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        family: ModelFamily,
        *,
        mode: str,
        reason: str,
        new_span: int,
    ) -> None:
        self.cfg = cfg
        self.family = family
        self.mode = mode
        self.reason = reason
        self.new_span = new_span

    def start(
        self,
        inputs: TrainInputs,
        spans: Mapping[int, Artifact],
        labels: list[str],
        featurizer: Any,
    ) -> Start:
        """The model (built, or the champion's, grown), its data, epochs and learning rate.

        The model is not compiled: each trainer compiles it where it must (the multi-worker
        loop inside its strategy's scope).
        """
        from evergreen.models.adopted import load_model
        from evergreen.models.contract import freeze_lower
        from evergreen.training.strategy import float32_outputs

        cfg = self.cfg
        if self.mode == "full":
            model = self.family.build_model(featurizer, len(labels), cfg)
            model = float32_outputs(model, cfg)  # train.mixed_precision: float32 probabilities
            data = self._full_data(spans, labels, featurizer)
            return Start(model, data, cfg.epochs, cfg.learning_rate)
        if hasattr(self.family, "module"):  # a custom module may register its own layers
            self.family.module()
        assert inputs.champion is not None, "an incremental run starts from the champion"
        model = load_model(Path(inputs.champion.uri) / "model.keras", own_artifact=True)
        # New ids of a grown featurizer get embedding rows (a copy of the unknown id's row; the
        # same on every worker of a multi-worker run).
        model, grown_rows = grow_embeddings(model, featurizer)
        freeze_lower(model, cfg.freeze_lower_layers)
        data = self._incremental_data(spans, labels, featurizer)
        epochs = cfg.incremental_epochs
        return Start(model, data, epochs, increment_rate(cfg, data, epochs), grown_rows)

    def _validation(
        self,
        spans: Mapping[int, Artifact],
        take: Mapping[int, int],
        labels: list[str],
        featurizer: Any,
    ) -> Any:
        """The eval rows early stopping judges on: :func:`pooled_eval_take`'s, as batches."""
        parts = [
            featurized_dataset(
                [Path(spans[s].uri) / "eval"],
                labels,
                featurizer,
                self.cfg.batch_size,
                take_per_folder=None if s == self.new_span else n,
            )
            for s, n in take.items()
        ]
        parts = [part for part in parts if part is not None]
        if not parts:
            return None
        validation = parts[0]
        for part in parts[1:]:
            validation = validation.concatenate(part)
        return validation

    def _full_data(self, spans: Mapping[int, Artifact], labels: list[str], featurizer: Any) -> Any:
        """Every span's train split, shuffled."""
        cfg = self.cfg
        train = featurized_dataset(
            [Path(a.uri) / "train" for a in spans.values()],
            labels,
            featurizer,
            cfg.batch_size,
            shuffle_seed=cfg.seed,
        )
        rows = sum(int(a.properties["rows"]["train"]) for a in spans.values())
        counts: dict[str, float] = {}
        for artifact in spans.values():
            _add(counts, _train_counts(artifact))
        return TrainingData(train, rows, 0, counts)

    def _incremental_data(
        self, spans: Mapping[int, Artifact], labels: list[str], featurizer: Any
    ) -> Any:
        """The new span's train split plus a uniform replay sample of all earlier spans."""
        cfg = self.cfg
        new = Path(spans[self.new_span].uri)
        new_rows = int(spans[self.new_span].properties["rows"]["train"])
        counts = _train_counts(spans[self.new_span])
        quotas = {s: q for s, q in self.replay_quotas(spans, new_rows).items() if q}
        if cfg.replay_class_balanced:
            train, replayed = self._balanced_data(spans, quotas, labels, featurizer, counts)
        else:
            # One pipeline over the new rows and every span's replay prefix (in that order):
            # one parse function and one label table, whatever the number of spans (a
            # pipeline per span cost a trace per span: an update slowed as spans piled up).
            folders: list[Path] = [new / "train"]
            takes: list[int | ReplayWindow | None] = [None]
            replayed = 0
            for span, quota in quotas.items():
                folders.append(Path(spans[span].uri) / "replay")
                takes.append(self._replay_take(spans[span], span, quota))
                replayed += self._replay_counts(spans[span], quota, counts)
            train = featurized_dataset(
                folders, labels, featurizer, cfg.batch_size, take_per_folder=takes
            ).unbatch()
        train = train.shuffle(20_000, seed=cfg.seed).batch(cfg.batch_size)
        history = sum(
            int(a.properties["rows"].get("train", 0))
            for s, a in spans.items()
            if s != self.new_span
        )
        return TrainingData(train, new_rows + replayed, replayed, counts, history)

    def _balanced_data(
        self,
        spans: Mapping[int, Artifact],
        quotas: Mapping[int, int],
        labels: list[str],
        featurizer: Any,
        counts: dict[str, float],
    ) -> tuple[Any, int]:
        """Class-balanced replay: the new rows, then each span's quota split over the classes
        (fewer rows for a class the span has fewer of); returns unbatched rows and the rows
        replayed."""
        cfg = self.cfg
        new = Path(spans[self.new_span].uri) / "train"
        train = featurized_dataset([new], labels, featurizer, cfg.batch_size).unbatch()
        parts = []
        for span, quota in quotas.items():
            _add(counts, {label: quota / len(labels) for label in labels})
            folder = Path(spans[span].uri) / "replay"
            for label, k in allocate(quota, dict.fromkeys(labels, quota)).items():
                parts.append(
                    featurized_dataset(
                        [folder],
                        labels,
                        featurizer,
                        cfg.batch_size,
                        take_per_folder=k,
                        only_label=label,
                    )
                )
        parts = [part for part in parts if part is not None]
        replayed = sum(1 for part in parts for _ in part.unbatch())
        for part in parts:
            train = train.concatenate(part.unbatch())
        return train, replayed

    def _replay_take(self, artifact: Artifact, span: int, quota: int) -> int | ReplayWindow:
        """What one earlier span replays: its replay folder's first ``quota`` rows, or with
        ``train.replay_rotate`` a window of ``quota`` x ``incremental_epochs`` rows from which
        each epoch draws ``quota`` afresh, the window moving on by its length with every later
        span, so that successive increments replay other rows of the span, not the same prefix
        (the prefix replays the same few rows of a span in every increment, every epoch)."""
        available = int(artifact.properties["rows"].get("replay", 0))
        if not self.cfg.replay_rotate or available <= 0:
            return quota
        quota = min(quota, available)
        pool = min(available, quota * self.cfg.incremental_epochs)
        offset = (self.new_span - span - 1) * pool % available
        return ReplayWindow(offset, pool, quota, available, self.cfg.seed + span)

    def _replay_counts(self, artifact: Artifact, quota: int, counts: dict[str, float]) -> int:
        """The rows one span replays (its quota, or fewer if its replay folder holds fewer), and
        their expected labels added to ``counts``: a prefix of the replay folder is uniform, so
        its expected class mix is the span's."""
        rows = int(artifact.properties["rows"].get("train", 0)) or 1
        available = int(artifact.properties["rows"].get("replay", quota))
        _add(counts, _train_counts(artifact, min(quota, available) / rows))
        return min(quota, available)

    def replay_quotas(self, spans: Mapping[int, Artifact], new_rows: int) -> dict[int, int]:
        """Rows to replay from each earlier span: ``replay_ratio`` × the new rows in all.

        Replay at most replay_ratio old rows per new one: the cost stays proportional to the
        new data, and old and new weigh in the update as the ratio says. Spread over the
        earlier spans in proportion to their train rows, so the replay is a uniform sample of
        the whole history, stratified by span (each span's replay folder is in random order).
        """
        budget = int(self.cfg.replay_ratio * new_rows)
        if self.cfg.replay_rows:  # an optional cap (0: none)
            budget = min(budget, self.cfg.replay_rows)
        sizes = {
            s: int(a.properties["rows"].get("train", 0))
            for s, a in spans.items()
            if s != self.new_span
        }
        return allocate(budget, sizes)


def grow_embeddings(model: Any, featurizer: Any) -> tuple[Any, dict[str, int]]:
    """The champion with embeddings enlarged for a grown featurizer's new ids (see growth.py)."""
    rows = getattr(featurizer, "embedding_rows", None)
    if rows is None:
        return model, {}
    from evergreen.models.growth import grow_model

    return grow_model(model, rows())


def rewarm_multiple(cfg: TrainConfig, data: TrainingData) -> float:
    """The re-warm peak in multiples of ``learning_rate``: ``train.rewarm_peak``, or for
    ``"auto"`` :func:`~evergreen.components.schedule.auto_peak` of the increment's new rows
    and the earlier spans' train rows (``data.history_rows``), kept to a peak rate of at most 1
    (a number is checked at load; "auto" is the default, so a large ``learning_rate`` must not
    make a config that never set it invalid)."""
    if cfg.rewarm_peak == "auto":
        from evergreen.components.schedule import auto_peak

        return min(auto_peak(data.new_rows, data.history_rows), 1.0 / cfg.learning_rate)
    return float(cfg.rewarm_peak)


def schedule_record(cfg: TrainConfig, data: TrainingData) -> dict[str, Any]:
    """An increment's schedule as its model records it: the name and, re-warmed, the peak
    (x ``learning_rate``) with the rows ``"auto"`` derived it from."""
    record: dict[str, Any] = {"schedule": cfg.incremental_schedule}
    if cfg.incremental_schedule == "rewarm":
        record["rewarm_peak"] = round(rewarm_multiple(cfg, data), 4)
        record["rewarm_rows"] = {"new": data.new_rows, "history": data.history_rows}
    return record


def increment_rate(cfg: TrainConfig, data: TrainingData, epochs: int) -> Any:
    """An increment's learning rate: the re-warm schedule over its steps, or the flat rate.

    Steps are global batches of ``cfg.batch_size``, as many as one process takes, so both
    trainers get the same schedule (restored with the optimizer's step count on a resume).
    """
    if cfg.incremental_schedule == "rewarm":  # re-warm to the full rate, decay (schedule.py)
        from evergreen.components.schedule import rewarm_schedule

        return rewarm_schedule(
            rewarm_multiple(cfg, data) * cfg.learning_rate,
            epochs * -(-data.rows_per_epoch // cfg.batch_size),
        )
    return cfg.incremental_learning_rate
