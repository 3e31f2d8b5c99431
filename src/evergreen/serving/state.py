"""What the REST routes, the middleware, the lifespan and the gRPC services share: one object.

:class:`ServingState` holds the loaded models (the :class:`ModelManager` and its batchers), the
settings, the metrics, the audit log and the request log. Its two methods are what every
request does the same way whatever its API: :meth:`ServingState.run_model` and
:meth:`ServingState.count`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

import evergreen
from evergreen.config import ServingConfig
from evergreen.serving import codec
from evergreen.serving.audit import AuditLog, Call
from evergreen.serving.auth import ApiKeys
from evergreen.serving.metrics import ServingMetrics
from evergreen.serving.models import LoadedVersion, ModelManager
from evergreen.serving.requestlog import RequestLog

UNKNOWN_MODEL = "_unknown"  # the metrics' model label for names not served (never a model name)


@dataclass(eq=False)
class ServingState:
    """The state of one server (see the module docstring)."""

    manager: ModelManager
    metrics: ServingMetrics
    settings: ServingConfig
    audit: AuditLog
    api_keys: ApiKeys | None  # None: no authentication
    request_log: RequestLog | None  # None: no request logging
    grpc_port: int | None = None  # the bound gRPC port once started; None: off or not yet
    in_flight: int = 0  # REST requests being handled; the audit log coalesces writes while > 0
    # Metric children by label values: prometheus_client's labels() costs a lock and a tuple
    # check per call, and every request would pay it twice.
    _children: dict[tuple[Any, ...], tuple[Any, Any]] = field(default_factory=dict)

    async def run_model(
        self,
        call: Call,
        lv: LoadedVersion,
        sig: codec.Signature,
        inputs: dict[str, np.ndarray],
        *,
        timeout: float | None = None,
        sample: bool = True,
    ) -> dict[str, np.ndarray]:
        """Run ``sig`` of ``lv`` on ``inputs`` through the model's batcher.

        Args:
            call: counts the rows.
            timeout: seconds the caller still has (a gRPC deadline); the shorter of it and
                ``serving.request_timeout_ms`` applies. None: the setting's.
            sample: give the rows to the request log (when there is one).
        """
        call.rows = codec.check_batch(sig, inputs) if sig.batchable else 0
        seconds = self.settings.request_timeout_ms / 1000
        if timeout is not None:
            seconds = min(seconds, timeout)
        outputs = await self.manager.predict(lv, sig.name, inputs, time.monotonic() + seconds)
        if sample and self.request_log is not None:
            self.request_log.sample(lv.model, lv.version, sig.name, inputs)
        return outputs

    def count(self, call: Call, status: int | str, elapsed: float) -> None:
        """Count ``call`` in ``evergreen_requests`` and its latency, when it named a model.

        Only names the registry has become label values (others are ``_unknown``): a client
        can send any.
        """
        if call.model is None:
            return
        model = call.model if call.model in self.manager.discovered else UNKNOWN_MODEL
        key = (model, str(call.version or ""), call.api, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.metrics.requests.labels(key[0], key[1], key[2], str(status)),
                self.metrics.latency.labels(model, call.api),
            )
        children[0].inc()
        children[1].observe(elapsed)


def package_version() -> str:
    """Evergreen's version, as the server reports it (V2 server metadata)."""
    try:
        return version("evergreen")
    except PackageNotFoundError:
        return getattr(evergreen, "__version__", "dev")
