"""Which versions are loaded, and where each request goes: loading, warm-up, hot swap, canary.

The :class:`ModelManager` polls the registry's aliases (``aliases.json``) every
``poll_seconds``. When an alias moves, the new version is loaded and warmed up in a thread
while the old one keeps serving; only when the new version has answered its warm-up calls is
the routing table switched (one assignment on the event loop, so no request sees half a swap).
The old version is retired: new requests no longer reach it, requests already holding it finish
on it, and the last one to finish unloads it (reference counting, :meth:`acquire` /
:meth:`release`). A version that fails to load or warm up is never routed to; the old one stays.

Routing: a request that names a version or a label gets that; one that names neither gets the
``champion``, except ``canary_percent`` of them that go to the ``canary`` when there is one. A
model that never had a champion alias serves its latest version (TF Serving's default policy).

Integrity: every version is verified against its manifest (and, with ``serving.verify_key``,
its signature) before it is loaded; one that fails is never routed to, like one that fails to
load.

A damaged registry affects only itself. Per model, never for the whole server:

- an unreadable ``aliases.json`` freezes that model's routing where it is (at startup: nothing
  of that model serves) and is reported;
- an alias pointing at a version that is not on disk (or whose folder was deleted while it
  served) keeps the label on the version it had; a model whose champion alias disappears keeps
  its champion. Neither ever falls back to the highest version;
- a damaged version fails its own load only.

Problems are logged when they appear and when they clear, exported as
``evergreen_registry_problem{model,version,kind}`` and shown in the model's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evergreen import signing
from evergreen.config import ServingConfig
from evergreen.errors import BadRequest, IntegrityError, NotFound, RegistryError, Unavailable
from evergreen.models.tfserving_signatures import (
    CLASSIFY_INPUTS,
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    signature_defs,
)
from evergreen.registry import CHAMPION, Registry
from evergreen.serving.batching import DynamicBatcher, Inputs, Outputs
from evergreen.serving.classify import examples_from_arrays
from evergreen.serving.codec import Signature
from evergreen.serving.metrics import ServingMetrics

log = logging.getLogger("evergreen.serving")

CANARY = "canary"
SERIALIZED_EXAMPLES = "inputs"  # the input of TF Serving's classify/regress signatures
DEFAULT_SIGNATURE = "serving_default"
# A 1x1 grayscale PNG (made with Pillow, checked by tests/test_serving_families.py): warm-up
# input for byte-string inputs that look like images.
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
    "0000000a49444154789c636000000002000148afa4710000000049454e44ae426082"
)


@dataclass
class LoadedVersion:
    """One version in memory, with its signatures and (lazily made) batchers."""

    model: str
    version: int
    path: Path
    signatures: dict[str, Signature]
    functions: dict[str, Any]
    load_seconds: float
    loaded: Any = None  # the tf.saved_model.load object; dropping it frees the version
    refs: int = 0  # requests holding this version
    retired: bool = False
    batchers: dict[str, DynamicBatcher] = field(default_factory=dict)
    # TF Serving's view of the signatures: the SignatureDefMap proto read from saved_model.pb
    # (tensor names, DataTypes, method names), for the metadata API and Classify/Regress.
    signature_defs: Any = None
    methods: dict[str, str] = field(default_factory=dict)  # signature -> method_name

    def signature(self, name: str | None) -> Signature:
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise BadRequest(
                f"signature {name!r} not found in model {self.model!r} version {self.version}; "
                f"signatures: {', '.join(sorted(self.signatures))}"
            )
        return self.signatures[name]

    def call(self, signature: str, inputs: Inputs) -> Outputs:
        """Run one signature on NumPy inputs (blocking: call it from a thread)."""
        from evergreen.tf import tensorflow

        tf = tensorflow()
        sig = self.signatures[signature]
        tensors = {
            name: tf.constant(value, dtype=sig.inputs[name].dtype) for name, value in inputs.items()
        }
        out = self.functions[signature](**tensors)
        # Sorted: a loaded signature returns its outputs in no fixed order, responses should.
        return {name: out[name].numpy() for name in sorted(out)}


@dataclass(frozen=True)
class Problem:
    """Something wrong in the registry that the server works around, and says so.

    ``kind``: ``aliases`` (aliases.json damaged, or the champion alias gone), ``missing`` (an
    alias points at a version not on disk, or the model folder is gone), ``integrity`` (a
    version fails its digests or signature), ``load`` (loading or warm-up failed). ``code`` is
    the TF Serving error code shown in the model status.
    """

    kind: str
    message: str
    version: int | None = None
    code: str = "UNKNOWN"


@dataclass(frozen=True)
class _Wanted:
    """One model's labels as the registry says now; a None target keeps the label's routing."""

    labels: dict[str, int | None]
    problems: list[Problem]
    champion_alias: bool  # the champion comes from aliases.json, not TF Serving's default


@dataclass
class _ModelState:
    name: str
    labels: dict[str, int] = field(default_factory=dict)  # routing: label -> version
    versions: dict[int, LoadedVersion] = field(default_factory=dict)
    canary_credit: float = 0.0


class ModelManager:
    """Loads the registry's labelled versions and routes requests to them.

    Args:
        registry: the registry to serve (every model in it).
        settings: the ``[serving]`` settings (batching, canary share, poll interval).
        metrics: where load times, loaded versions, batch sizes and queue depth go.
    """

    def __init__(
        self, registry: Registry, settings: ServingConfig, metrics: ServingMetrics
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, _ModelState] = {}
        self.loading: dict[tuple[str, int], float] = {}  # (model, version) -> started
        self.errors: dict[tuple[str, int], Problem] = {}  # versions that failed to load
        self.problems: dict[str, list[Problem]] = {}  # per model, found by the latest poll
        self.discovered: set[str] = set()  # models seen in the registry
        # Public key the versions must be signed with; read now, so a bad key stops startup.
        self.verify_key = (
            signing.load_public_key(settings.verify_key) if settings.verify_key else None
        )
        self._last_wanted: dict[str, dict[str, int | None]] = {}
        self._champion_alias: set[str] = set()  # models whose champion came from an alias
        self._reported: set[tuple[str, int | None, str, str]] = set()
        self.executor = ThreadPoolExecutor(
            max_workers=max(4, 2 * settings.batch_threads), thread_name_prefix="evergreen-model"
        )
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._unloading: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load what the registry labels now, then watch it."""
        await self.refresh()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="registry-watch")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for state in self.models.values():
            for lv in list(state.versions.values()):
                await self._unload(lv)
            state.versions.clear()
        if self._unloading:
            await asyncio.gather(*self._unloading, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            try:
                await self.refresh()
            except Exception:  # a bad poll must not kill the watcher; the next one retries
                log.exception("registry poll failed")

    @property
    def ready(self) -> bool:
        """True when some model serves a champion and every other one has settled.

        Settled: its champion is loaded, or a reported problem keeps it from serving. A damaged
        model must not take the healthy ones out of a load balancer.
        """
        serving = {n for n in self.discovered if CHAMPION in self.labels(n)}
        return bool(serving) and all(
            name in serving or self.model_problems(name) for name in self.discovered
        )

    def model_problems(self, model: str) -> list[Problem]:
        """What is wrong with ``model`` now: the latest poll's findings and failed loads."""
        failed = [p for (m, _), p in sorted(self.errors.items()) if m == model]
        return [*self.problems.get(model, []), *failed]

    # --------------------------------------------------------------------------- refresh

    async def refresh(self) -> None:
        """One poll: load newly labelled versions, switch routing, retire unlabelled ones.

        Each model is handled on its own: what is wrong with one never stops the others.
        """
        async with self._lock:
            loop = asyncio.get_running_loop()
            wanted = await loop.run_in_executor(None, self._wanted)
            for model in sorted(wanted):
                try:
                    await self._refresh_model(model, wanted[model])
                except Exception as e:  # a bug for one model must not freeze the others
                    log.exception("model %s: refresh failed", model)
                    self.problems[model] = [Problem("load", f"refresh failed: {e}")]
            for model in self.discovered - set(wanted):
                self.problems[model] = [
                    Problem(
                        "missing",
                        f"model {model!r} is no longer in the registry {self.registry.root}; "
                        "the versions in memory keep serving until it is back",
                        code="NOT_FOUND",
                    )
                ]
            self._report_problems()

    async def _refresh_model(self, model: str, wanted: _Wanted) -> None:
        loop = asyncio.get_running_loop()
        labels = wanted.labels
        self.discovered.add(model)
        self.problems[model] = wanted.problems
        if wanted.champion_alias:
            self._champion_alias.add(model)
        if self._last_wanted.get(model) != labels:
            # An alias moved: versions that failed before get another chance.
            self._last_wanted[model] = labels
            for key in [k for k in self.errors if k[0] == model]:
                del self.errors[key]
        state = self.models.get(model) or _ModelState(model)
        if labels == state.labels:
            return
        for version in sorted({v for v in labels.values() if v is not None}):
            if version in state.versions or (model, version) in self.errors:
                continue
            self.loading[(model, version)] = time.time()
            try:
                lv = await loop.run_in_executor(None, self._load, model, version)
            except Exception as e:
                self.errors[(model, version)] = _load_problem(version, e)
                continue
            finally:
                self.loading.pop((model, version), None)
            state.versions[version] = lv
            self.metrics.load_seconds.labels(model, str(version)).set(lv.load_seconds)
            self.metrics.loaded.labels(model, str(version)).set(1)
        # Labels whose version could not be loaded (or is not on disk) keep their old target.
        routed = {
            label: v if v in state.versions else state.labels[label]
            for label, v in labels.items()
            if v in state.versions or label in state.labels
        }
        self._switch(state, routed)
        self.models[model] = state

    def _wanted(self) -> dict[str, _Wanted]:
        """What the registry labels now, model by model (read in a thread)."""
        wanted = {}
        for model in self.registry.models():
            try:
                wanted[model] = self._wanted_model(model)
            except OSError as e:  # e.g. a folder made unreadable: this model keeps its routing
                current = self.labels(model)
                problem = Problem(
                    "aliases",
                    f"the registry folder of model {model!r} cannot be read ({e}); routing "
                    f"stays {_routing(current)}",
                )
                keep: dict[str, int | None] = {label: None for label in current}
                wanted[model] = _Wanted(keep, [problem], model in self._champion_alias)
        return wanted

    def _wanted_model(self, model: str) -> _Wanted:
        """One model's labels; only version numbers are read, never an old version's manifest."""
        numbers = self.registry.version_numbers(model)
        current = self.labels(model)
        try:
            aliases = self.registry.aliases(model)
        except RegistryError as e:
            keep: dict[str, int | None] = {label: None for label in current}
            frozen = _routing(current)
            problem = Problem("aliases", f"{e}. Routing stays {frozen}", code="DATA_LOSS")
            return _Wanted(keep, [problem], champion_alias=model in self._champion_alias)
        labels: dict[str, int | None] = {}
        problems = []
        for label, version in sorted(aliases.items()):
            if version in numbers:
                labels[label] = version
                continue
            labels[label] = None
            stays = f"version {current[label]}" if label in current else "nothing"
            problems.append(
                Problem(
                    "missing",
                    f"alias {label!r} of model {model!r} points at version {version}, which is "
                    f"not in the registry (versions: {_numbers(numbers)}); {label!r} keeps "
                    f"serving {stays}. Re-publish the version or move the alias "
                    "(`evergreen rollback -c CONFIG VERSION`)",
                    version=version,
                    code="NOT_FOUND",
                )
            )
        if CHAMPION in aliases:
            return _Wanted(labels, problems, champion_alias=True)
        if model in self._champion_alias:
            labels[CHAMPION] = None
            problems.append(
                Problem(
                    "aliases",
                    f"model {model!r} no longer has a {CHAMPION!r} alias in "
                    f"{self.registry.root / model / 'aliases.json'}; the champion stays "
                    f"{_routing(current)}. Set it again (`evergreen rollback -c CONFIG VERSION`)",
                    code="NOT_FOUND",
                )
            )
        elif numbers:
            labels[CHAMPION] = numbers[-1]  # never had a champion alias: TF Serving's default
        return _Wanted(labels, problems, champion_alias=False)

    def _report_problems(self) -> None:
        """Log problems as they appear and clear, and keep the problem gauge in step."""
        now = {
            (model, p.version, p.kind, p.message)
            for model in self.discovered
            for p in self.model_problems(model)
        }
        for model, *_, message in sorted(now - self._reported, key=str):
            log.error("model %s: %s", model, message)
        for model, *_, message in sorted(self._reported - now, key=str):
            log.info("model %s: resolved: %s", model, message)
        gauge = self.metrics.registry_problem
        old = {(m, "" if v is None else str(v), k) for m, v, k, _ in self._reported}
        new = {(m, "" if v is None else str(v), k) for m, v, k, _ in now}
        for labels in old - new:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        for labels in new:
            gauge.labels(*labels).set(1)
        self._reported = now

    def _switch(self, state: _ModelState, labels: dict[str, int]) -> None:
        old = state.labels
        state.labels = labels
        if old and old != labels:
            self.metrics.swaps.labels(state.name).inc()
            log.info("model %s: routing %s -> %s", state.name, old, labels)
        for label in set(old) - set(labels):
            self.metrics.label_version.remove(state.name, label)
        for label, version in labels.items():
            self.metrics.label_version.labels(state.name, label).set(version)
        live = set(labels.values())
        for version, lv in list(state.versions.items()):
            if version in live:
                continue
            del state.versions[version]
            lv.retired = True
            if lv.refs == 0:
                self._schedule_unload(lv)

    def _load(self, model: str, version: int) -> LoadedVersion:
        """Load and warm up one version (blocking: runs in a thread)."""
        from evergreen.tf import tensorflow

        tf = tensorflow()
        started = time.perf_counter()
        # Verified first: a version whose files changed never reaches TensorFlow.
        verified = self.registry.verify(model, version, self.verify_key or False)
        for warning in verified.warnings:
            log.warning("%s", warning)
        path = verified.version.path
        loaded = tf.saved_model.load(str(path))
        functions = {
            name: fn for name, fn in loaded.signatures.items() if not name.startswith("__")
        }
        signatures = {
            name: Signature.from_concrete_function(name, fn) for name, fn in functions.items()
        }
        defs = signature_defs(path)
        lv = LoadedVersion(
            model=model,
            version=version,
            path=path,
            signatures=signatures,
            functions=functions,
            load_seconds=0.0,
            loaded=loaded,
            signature_defs=defs,
            methods={name: sig.method_name for name, sig in defs.signature_def.items()},
        )
        recorded = _recorded_warmup(lv)
        for name, sig in signatures.items():
            if not sig.batchable:
                continue
            if name == DEFAULT_SIGNATURE and recorded:
                try:
                    for inputs in recorded:  # real rows, from the version's warm-up file
                        lv.call(name, inputs)
                    continue
                except Exception as e:  # the file is an aid: synthetic rows decide the load
                    log.warning(
                        "model %s version %s: a recorded warm-up request failed (%s); warming up "
                        "with synthetic rows",
                        model,
                        version,
                        e,
                    )
            for rows in sorted({1, self.settings.max_batch_size}):
                try:
                    lv.call(name, warmup_for(lv, name, rows))
                except Exception as e:
                    raise RuntimeError(
                        f"warm-up call of signature {name!r} with {rows} synthetic row(s) failed: "
                        f"{e}"
                    ) from e
        lv.load_seconds = time.perf_counter() - started
        log.info("model %s version %s loaded in %.2fs", model, version, lv.load_seconds)
        return lv

    # --------------------------------------------------------------------------- routing

    def acquire(
        self, model: str, version: str | None = None, label: str | None = None
    ) -> LoadedVersion:
        """The version a request goes to, held until :meth:`release`.

        Raises:
            NotFound: no such model, version or label is being served.
            BadRequest: ``version`` is not a number.
            Unavailable: the model exists but nothing of it is loaded yet.
        """
        state = self.models.get(model)
        if state is None or not state.versions:
            problems = self.model_problems(model)
            if problems and not any(m == model for m, _ in self.loading):
                raise Unavailable(
                    f"model {model!r} has no version loaded: "
                    + "; ".join(_describe_problem(p) for p in problems)
                    + ". Fix it or move the champion alias; the server retries when it moves"
                )
            if model in self.discovered or any(m == model for m, _ in self.loading):
                raise Unavailable(f"model {model!r} is not loaded yet; retry in a moment")
            served = ", ".join(sorted(self.models)) or "none"
            raise NotFound(f"model {model!r} is not served here; models: {served}")
        if version is not None:
            if not version.isdigit():
                raise BadRequest(
                    f"version {version!r} of model {model!r} is not a number; use e.g. /versions/3"
                )
            lv = state.versions.get(int(version))
            if lv is None:
                raise NotFound(
                    f"model {model!r} has no loaded version {version}; loaded: "
                    f"{_describe(state)}. Versions are loaded while an alias points at them"
                )
        elif label is not None:
            if label not in state.labels:
                raise NotFound(
                    f"model {model!r} has no label {label!r}; labels: "
                    + (", ".join(f"{k}={v}" for k, v in sorted(state.labels.items())) or "none")
                )
            lv = state.versions[state.labels[label]]
        else:
            if CHAMPION not in state.labels:
                problems = self.model_problems(model)
                raise Unavailable(
                    f"model {model!r} has no champion serving"
                    + (": " + "; ".join(map(_describe_problem, problems)) if problems else "")
                    + f". Labels served: {_routing(state.labels)}; ask for one of them"
                )
            lv = state.versions[state.labels[CHAMPION]]
            canary = state.labels.get(CANARY)
            pct = self.settings.canary_percent
            if canary is not None and canary != lv.version and pct > 0:
                # A credit counter, not a coin: exactly pct of every 100 requests, evenly spread.
                state.canary_credit += pct
                if state.canary_credit >= 100:
                    state.canary_credit -= 100
                    lv = state.versions[canary]
        lv.refs += 1
        return lv

    def release(self, lv: LoadedVersion) -> None:
        lv.refs -= 1
        if lv.refs == 0 and lv.retired:
            self._schedule_unload(lv)

    async def predict(
        self, lv: LoadedVersion, signature: str, inputs: Inputs, deadline: float
    ) -> Outputs:
        """Run ``signature`` of a held version on ``inputs`` through its batcher."""
        sig = lv.signatures[signature]
        if not sig.batchable:
            return await asyncio.get_running_loop().run_in_executor(
                self.executor, lv.call, signature, inputs
            )
        batcher = lv.batchers.get(signature)
        if batcher is None:
            s = self.settings
            batch_hist = self.metrics.batch_size.labels(lv.model, str(lv.version), signature)
            depth = self.metrics.queue_depth.labels(lv.model)
            batcher = DynamicBatcher(
                lambda x, _s=signature: lv.call(_s, x),
                max_batch_size=s.max_batch_size,
                max_delay=s.batch_timeout_ms / 1000,
                max_queue=s.max_queue,
                workers=s.batch_threads if s.max_batch_size > 1 else max(2, s.batch_threads),
                executor=self.executor,
                on_batch=batch_hist.observe,
                on_queue=depth.inc,
                name=f"model {lv.model!r} version {lv.version} signature {signature!r}",
            )
            lv.batchers[signature] = batcher
        return await batcher.submit(inputs, deadline)

    def status(self, model: str) -> list[dict[str, Any]]:
        """TF Serving's ``model_version_status`` list for ``model``: loaded, loading, failed.

        A version that failed (or an alias target not on disk) is ``END`` with its error. A
        loaded version keeps ``AVAILABLE`` but carries the model's registry problem, if any
        (its routing is frozen by a damaged ``aliases.json``, its folder was deleted...).

        Raises:
            NotFound: the model is not in the registry.
            Unavailable: nothing of the model is loaded and a problem with no version number
                (a damaged ``aliases.json``) is the reason; the message says what it is.
        """
        state = self.models.get(model)
        if state is None and model not in self.discovered:
            served = ", ".join(sorted(self.models)) or "none"
            raise NotFound(f"model {model!r} is not served here; models: {served}")
        entries: dict[int, dict[str, Any]] = {}
        general = []  # problems of the model, not of one version
        for p in self.model_problems(model):
            if p.version is None:
                general.append(p)
            else:
                entries[p.version] = _status(p.version, "END", p.code, p.message)
        for m, v in self.loading:
            if m == model:
                entries[v] = _status(v, "LOADING")
        for v in state.versions if state is not None else ():
            own = [p for p in self.model_problems(model) if p.version == v] + general
            code, message = (own[0].code, "; ".join(p.message for p in own)) if own else ("OK", "")
            entries[v] = _status(v, "AVAILABLE", code, message)
        if not entries and general:
            raise Unavailable(
                f"model {model!r} has no version loaded: " + "; ".join(p.message for p in general)
            )
        return [entries[v] for v in sorted(entries, reverse=True)]

    def labels(self, model: str) -> dict[str, int]:
        state = self.models.get(model)
        return dict(state.labels) if state else {}

    # --------------------------------------------------------------------------- unload

    def _schedule_unload(self, lv: LoadedVersion) -> None:
        task = asyncio.get_running_loop().create_task(self._unload(lv))
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)

    async def _unload(self, lv: LoadedVersion) -> None:
        for batcher in lv.batchers.values():
            await batcher.close()
        lv.batchers.clear()
        lv.functions.clear()
        lv.loaded = None  # the last reference: TensorFlow frees the graph and variables
        with contextlib.suppress(KeyError):
            self.metrics.loaded.remove(lv.model, str(lv.version))
        log.info("model %s version %s unloaded", lv.model, lv.version)


def _recorded_warmup(lv: LoadedVersion) -> list[Inputs]:
    """The inputs of the version's ``tf_serving_warmup_requests`` for serving_default that fit
    its signature ([] when it has none: synthetic inputs are used)."""
    from evergreen import warmup

    sig = lv.signatures.get(DEFAULT_SIGNATURE)
    out = []
    for request in warmup.read_warmup_requests(lv.path):
        if request.model_spec.signature_name not in ("", DEFAULT_SIGNATURE) or sig is None:
            continue
        arrays = warmup.request_arrays(request)
        if set(arrays) == set(sig.inputs):
            out.append(arrays)
    return out


def warmup_for(lv: LoadedVersion, name: str, rows: int) -> Inputs:
    """Synthetic warm-up inputs for signature ``name`` of ``lv``: raw inputs, or for a
    Classify/Regress signature the same raw inputs as serialized ``tf.Example``."""
    sig = lv.signatures[name]
    if (
        lv.methods.get(name) in (CLASSIFY_METHOD, REGRESS_METHOD)
        and DEFAULT_SIGNATURE in lv.signatures
    ):
        raw = warmup_inputs(lv.signatures[DEFAULT_SIGNATURE], rows)
        return {CLASSIFY_INPUTS: examples_from_arrays(raw)}
    return warmup_inputs(sig, rows)


def warmup_inputs(sig: Signature, rows: int) -> Inputs:
    """Synthetic inputs of ``rows`` rows for ``sig``: text, zeros, false, or a 1x1 PNG."""
    arrays: Inputs = {}
    for name, info in sig.inputs.items():
        assert info.shape is not None
        shape = (rows, *[1 if d is None else d for d in info.shape[1:]])
        if info.dtype == "string":
            sample = _PNG if ("image" in name or name.endswith("_bytes")) else b"warm up"
            if name == SERIALIZED_EXAMPLES:  # an empty tf.Example: its features' defaults
                sample = b""
            arrays[name] = np.full(shape, sample, dtype=object)
        elif info.dtype == "bool":
            arrays[name] = np.zeros(shape, dtype=bool)
        else:
            arrays[name] = np.zeros(
                shape, dtype=info.dtype if info.dtype != "bfloat16" else "float32"
            )
    return arrays


def _load_problem(version: int, e: Exception) -> Problem:
    if isinstance(e, IntegrityError):
        return Problem("integrity", str(e), version=version, code="DATA_LOSS")
    return Problem(
        "load", f"version {version} failed to load: {type(e).__name__}: {e}", version=version
    )


def _describe_problem(p: Problem) -> str:
    return p.message


def _routing(labels: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "empty (nothing serves)"


def _numbers(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers)) or "none"


def _status(version: int, state: str, code: str = "OK", message: str = "") -> dict[str, Any]:
    return {
        "version": str(version),
        "state": state,
        "status": {"error_code": code, "error_message": message},
    }


def _describe(state: _ModelState) -> str:
    names = {v: [k for k, t in sorted(state.labels.items()) if t == v] for v in state.versions}
    return (
        ", ".join(
            f"{v}" + (f" ({', '.join(names[v])})" if names[v] else "")
            for v in sorted(state.versions)
        )
        or "none"
    )
