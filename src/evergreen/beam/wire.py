"""``tf.train.Example`` message classes built from protobuf alone, without importing TensorFlow.

Beam workers that only encode or decode examples (ingest, statistics) use these instead of
``tf.train``: importing TensorFlow costs each worker process seconds and hundreds of MiB. The
messages are declared field for field as in ``tensorflow/core/example/{example,feature}.proto``,
so the bytes are the same wire format (TensorFlow parses them, and they parse TensorFlow's).
``train`` has the attributes of ``tf.train`` that :mod:`evergreen.examples` uses.
"""

from __future__ import annotations

from types import SimpleNamespace

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _message(
    fd: descriptor_pb2.FileDescriptorProto, name: str, fields: list[tuple[str, int, int, int, str]]
) -> descriptor_pb2.DescriptorProto:
    """Add a message: fields are (name, number, type, label, type name)."""
    message = fd.message_type.add(name=name)
    for field_name, number, kind, label, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
    return message


def _build() -> SimpleNamespace:
    fd = descriptor_pb2.FileDescriptorProto(
        name="evergreen/example_wire.proto", package="evergreen.wire", syntax="proto3"
    )
    repeated, optional = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    _message(fd, "BytesList", [("value", 1, _F.TYPE_BYTES, repeated, "")])
    _message(fd, "FloatList", [("value", 1, _F.TYPE_FLOAT, repeated, "")])
    _message(fd, "Int64List", [("value", 1, _F.TYPE_INT64, repeated, "")])
    feature = _message(
        fd,
        "Feature",
        [
            ("bytes_list", 1, _F.TYPE_MESSAGE, optional, ".evergreen.wire.BytesList"),
            ("float_list", 2, _F.TYPE_MESSAGE, optional, ".evergreen.wire.FloatList"),
            ("int64_list", 3, _F.TYPE_MESSAGE, optional, ".evergreen.wire.Int64List"),
        ],
    )
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    features = _message(
        fd,
        "Features",
        [("feature", 1, _F.TYPE_MESSAGE, repeated, ".evergreen.wire.Features.FeatureEntry")],
    )
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=optional)
    entry.field.add(
        name="value",
        number=2,
        type=_F.TYPE_MESSAGE,
        label=optional,
        type_name=".evergreen.wire.Feature",
    )
    entry.options.map_entry = True
    _message(
        fd, "Example", [("features", 1, _F.TYPE_MESSAGE, optional, ".evergreen.wire.Features")]
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    names = ("BytesList", "FloatList", "Int64List", "Feature", "Features", "Example")
    return SimpleNamespace(
        **{
            name: message_factory.GetMessageClass(
                pool.FindMessageTypeByName(f"evergreen.wire.{name}")
            )
            for name in names
        }
    )


train = _build()
