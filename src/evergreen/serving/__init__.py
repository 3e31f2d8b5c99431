"""The model server: TF Serving REST and Open Inference Protocol, batching, hot swap.

Typical use (what ``evergreen serve`` does)::

    from evergreen.config import ServingConfig
    from evergreen.serving import build, serve

    settings = ServingConfig(port=8501, max_batch_size=32)
    serve(build(Path("registry"), settings), settings)
"""

from evergreen.serving.app import VERSION_HEADER, create_app
from evergreen.serving.auth import ApiKeys
from evergreen.serving.batching import DynamicBatcher
from evergreen.serving.requestlog import RequestLog
from evergreen.serving.server import ServerThread, build, check_settings, is_loopback, serve

__all__ = [
    "VERSION_HEADER",
    "ApiKeys",
    "DynamicBatcher",
    "RequestLog",
    "ServerThread",
    "build",
    "check_settings",
    "create_app",
    "is_loopback",
    "serve",
]
