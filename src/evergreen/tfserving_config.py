"""``<registry>/models.config``: the registry as a real TF Serving reads it.

TF Serving knows nothing of ``aliases.json``. Pointed at this file::

    tensorflow_model_server --model_config_file=<registry>/models.config \\
        --allow_version_labels_for_unavailable_models

it serves, for each model, the versions our aliases point at, with the aliases as TF Serving's
*version labels* (``/v1/models/reviews/labels/champion``), so champion moves and rollbacks reach
it too (it re-reads the file every ``--model_config_file_poll_wait_seconds``). The file is a
``ModelServerConfig`` text proto (``tensorflow_serving/config/model_server_config.proto``),
rewritten whole and renamed into place after every alias move. A model without aliases is
served at its latest version, TF Serving's own default.

``base_path`` is the model's folder as this machine sees it; a TF Serving in a container must
see the registry at the same path (mount it there, as ``docker/compose.yaml`` does).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Mapping
from pathlib import Path

FILE = "models.config"


def render(models: Mapping[str, tuple[Path, Mapping[str, int]]]) -> str:
    """The text proto for ``{model: (base_path, {label: version})}``, models in name order."""
    lines = ["model_config_list {"]
    for name in sorted(models):
        base_path, labels = models[name]
        lines += [
            "  config {",
            f"    name: {_quote(name)}",
            f"    base_path: {_quote(str(base_path))}",
            '    model_platform: "tensorflow"',
        ]
        versions = sorted(set(labels.values()))
        if versions:
            lines.append("    model_version_policy {")
            lines.append("      specific {")
            lines += [f"        versions: {v}" for v in versions]
            lines.append("      }")
            lines.append("    }")
        else:
            lines.append("    model_version_policy { latest { num_versions: 1 } }")
        for label in sorted(labels):
            lines.append(f"    version_labels {{ key: {_quote(label)} value: {labels[label]} }}")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write(root: Path, collect: Callable[[], Mapping[str, tuple[Path, Mapping[str, int]]]]) -> Path:
    """Rewrite ``<root>/models.config`` atomically from what ``collect()`` reads.

    ``collect`` runs under a registry-wide lock, so two models moving aliases at once both end
    up in the file.
    """
    path = root / FILE
    with open(root / f".{FILE}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        tmp = root / f".tmp-{FILE}-{os.getpid()}"
        tmp.write_text(render(collect()), encoding="utf-8")
        os.replace(tmp, path)
    return path


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
