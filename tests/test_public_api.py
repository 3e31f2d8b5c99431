"""The public API is what __init__ exports: pinned so that changing it is deliberate."""

import evergreen


def test_exported_members() -> None:
    assert sorted(evergreen.__all__) == [
        "Config",
        "ConfigError",
        "DataError",
        "EvergreenError",
        "MetadataError",
        "MetadataStore",
        "NotFound",
        "Project",
        "SchemaError",
        "SpanBlocked",
        "SpanOutcome",
        "load_config",
    ]
    for name in evergreen.__all__:
        assert getattr(evergreen, name) is not None
