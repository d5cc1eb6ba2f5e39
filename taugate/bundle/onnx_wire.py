"""A strict reader of ONNX protobuf bytes (standard library only: no onnx, no protobuf).

The graph check must see exactly the graph onnxruntime will run. Where protobuf's parse is
ambiguous to a casual reader, this one refuses instead of guessing:

* a singular field that occurs more than once (protobuf MERGES repeated occurrences of a
  message field -- two ``ModelProto.graph`` fields become one graph holding both node lists --
  and keeps the last of a scalar, or the first when a proto2 enum value is unknown);
* two members of one ``oneof``; an enum value the schema does not list;
* a field number the schema does not know, or a known field with another wire type (protobuf
  keeps both as "unknown fields": a newer onnxruntime may not);
* groups, malformed or overlong varints, packed arrays that protobuf would not parse, strings
  that are not UTF-8, and messages nested deeper than :data:`MAX_DEPTH`.

:data:`SCHEMA` follows onnx/onnx.proto (onnx 1.23); a test compares it with onnx's own
descriptors. :func:`parse` returns a plain dict per message: field name -> value (singular) or
list (repeated); strings are ``str``, bytes fields a ``(start, end)`` span of the buffer,
repeated numbers are validated but not kept, and ``FunctionProto`` / ``TrainingInfoProto``
(refused by the graph check wherever they occur) are kept as spans.
"""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_DEPTH = 64  # message nesting (protobuf's own limit is 100)


class WireError(ValueError):
    """Bytes this reader will not interpret (malformed, or read differently by protobuf)."""


class Field(NamedTuple):
    name: str
    kind: str  # int64 uint64 int32 float double string bytes enum:a-b opaque, or a message
    repeated: bool


_SCALAR_WIRE = {"int64": 0, "uint64": 0, "int32": 0, "float": 5, "double": 1, "string": 2,
                "bytes": 2}
_OPAQUE = frozenset({"FunctionProto", "TrainingInfoProto"})
_SSE = "StringStringEntryProto"

# message -> "number name kind" entries; a kind starting with * is a repeated field
_TEXT = {
    "ModelProto": "1 ir_version int64; 8 opset_import *OperatorSetIdProto; 2 producer_name string;"
                  " 3 producer_version string; 4 domain string; 5 model_version int64;"
                  " 6 doc_string string; 7 graph GraphProto; 14 metadata_props *SSE;"
                  " 20 training_info *TrainingInfoProto; 25 functions *FunctionProto;"
                  " 26 configuration *DeviceConfigurationProto",
    "OperatorSetIdProto": "1 domain string; 2 version int64",
    "GraphProto": "1 node *NodeProto; 2 name string; 5 initializer *TensorProto;"
                  " 15 sparse_initializer *SparseTensorProto; 10 doc_string string;"
                  " 11 input *ValueInfoProto; 12 output *ValueInfoProto;"
                  " 13 value_info *ValueInfoProto; 14 quantization_annotation *TensorAnnotation;"
                  " 16 metadata_props *SSE",
    "NodeProto": "1 input *string; 2 output *string; 3 name string; 4 op_type string;"
                 " 7 domain string; 8 overload string; 5 attribute *AttributeProto;"
                 " 6 doc_string string; 9 metadata_props *SSE;"
                 " 10 device_configurations *NodeDeviceConfigurationProto",
    "AttributeProto": "1 name string; 21 ref_attr_name string; 13 doc_string string;"
                      " 20 type enum:0-14; 2 f float; 3 i int64; 4 s bytes; 5 t TensorProto;"
                      " 6 g GraphProto; 22 sparse_tensor SparseTensorProto; 14 tp TypeProto;"
                      " 7 floats *float; 8 ints *int64; 9 strings *bytes; 10 tensors *TensorProto;"
                      " 11 graphs *GraphProto; 23 sparse_tensors *SparseTensorProto;"
                      " 15 type_protos *TypeProto",
    "TensorProto": "1 dims *int64; 2 data_type int32; 3 segment TensorProto.Segment;"
                   " 4 float_data *float; 5 int32_data *int32; 6 string_data *bytes;"
                   " 7 int64_data *int64; 8 name string; 12 doc_string string; 9 raw_data bytes;"
                   " 13 external_data *SSE; 14 data_location enum:0-1; 10 double_data *double;"
                   " 11 uint64_data *uint64; 16 metadata_props *SSE",
    "TensorProto.Segment": "1 begin int64; 2 end int64",
    _SSE: "1 key string; 2 value string",
    "SparseTensorProto": "1 values TensorProto; 2 indices TensorProto; 3 dims *int64",
    "ValueInfoProto": "1 name string; 2 type TypeProto; 3 doc_string string; 4 metadata_props *SSE",
    "TypeProto": "1 tensor_type TypeProto.Tensor; 4 sequence_type TypeProto.Sequence;"
                 " 5 map_type TypeProto.Map; 9 optional_type TypeProto.Optional;"
                 " 8 sparse_tensor_type TypeProto.SparseTensor; 7 opaque_type TypeProto.Opaque;"
                 " 6 denotation string",
    "TypeProto.Tensor": "1 elem_type int32; 2 shape TensorShapeProto",
    "TypeProto.Sequence": "1 elem_type TypeProto",
    "TypeProto.Map": "1 key_type int32; 2 value_type TypeProto",
    "TypeProto.Optional": "1 elem_type TypeProto",
    "TypeProto.SparseTensor": "1 elem_type int32; 2 shape TensorShapeProto",
    "TypeProto.Opaque": "1 domain string; 2 name string",
    "TensorShapeProto": "1 dim *TensorShapeProto.Dimension",
    "TensorShapeProto.Dimension": "1 dim_value int64; 2 dim_param string; 3 denotation string",
    "TensorAnnotation": "1 tensor_name string; 2 quant_parameter_tensor_names *SSE",
    "NodeDeviceConfigurationProto": "1 configuration_id string; 2 sharding_spec *ShardingSpecProto;"
                                    " 3 pipeline_stage int32",
    "ShardingSpecProto": "1 tensor_name string; 2 device *int64;"
                         " 3 index_to_device_group_map *IntIntListEntryProto;"
                         " 4 sharded_dim *ShardedDimProto",
    "IntIntListEntryProto": "1 key int64; 2 value *int64",
    "ShardedDimProto": "1 axis int64; 2 simple_sharding *SimpleShardedDimProto",
    "SimpleShardedDimProto": "1 dim_value int64; 2 dim_param string; 3 num_shards int64",
    "DeviceConfigurationProto": "1 name string; 2 num_devices int32; 3 device *string",
}
ONEOFS = {"TypeProto": frozenset({1, 4, 5, 9, 8, 7}),
          "TensorShapeProto.Dimension": frozenset({1, 2}),
          "SimpleShardedDimProto": frozenset({1, 2})}


def _schema() -> dict[str, dict[int, Field]]:
    out: dict[str, dict[int, Field]] = {}
    for message, text in _TEXT.items():
        fields = {}
        for entry in text.split(";"):
            number, name, kind = entry.split()
            repeated = kind.startswith("*")
            kind = kind.lstrip("*").replace("SSE", _SSE)
            if kind in _OPAQUE:
                kind = "opaque"
            fields[int(number)] = Field(name, kind, repeated)
        out[message] = fields
    return out


SCHEMA = _schema()  # message -> field number -> Field


# -- the wire format ---------------------------------------------------------------------------

def varint(buf, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``pos``; at most 10 bytes, at most 64 bits."""
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result >> 64:
                raise WireError(f"varint ending at byte {pos} exceeds 64 bits")
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError(f"varint longer than 10 bytes at byte {pos}")


def fields(buf, start: int = 0, end: int | None = None):
    """Yield ``(field_number, wire_type, value)`` of one message; value is an int (varint), the
    start of a fixed32/fixed64, or a ``(start, end)`` span (length-delimited). Groups are
    refused."""
    pos, end = start, len(buf) if end is None else end
    while pos < end:
        key, pos = varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos, end)
        elif wire == 1:
            value, pos = pos, pos + 8
        elif wire == 5:
            value, pos = pos, pos + 4
        elif wire == 2:
            length, pos = varint(buf, pos, end)
            value, pos = (pos, pos + length), pos + length
        else:
            raise WireError(f"unsupported wire type {wire} (field {number}) at byte {pos}")
        if pos > end:
            raise WireError(f"field {number} runs past the end of its message")
        yield number, wire, value


# a varint with 9 continuation bytes whose 10th byte is more than 1: overlong or over 64 bits
_BAD_PACKED_VARINT = re.compile(rb"[\x80-\xff]{9}[\x02-\xff]")


def _packed(buf, span, kind: str, where: str) -> None:
    start, end = span
    size = {"float": 4, "double": 8}.get(kind)
    if size is not None:
        if (end - start) % size:
            raise WireError(f"{where}: packed {kind}s of {end - start} bytes (not a multiple "
                            f"of {size})")
    elif end > start and (buf[end - 1] >= 0x80 or _BAD_PACKED_VARINT.search(buf, start, end)):
        raise WireError(f"{where}: malformed packed varints")


def _scalar(buf, wire: int, value, field: Field, where: str):
    kind = field.kind
    if kind == "string":
        try:
            return bytes(buf[value[0]:value[1]]).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(f"{where}: not valid UTF-8") from None
    if kind == "bytes":
        return value
    if kind.startswith("enum:"):
        low, high = (int(x) for x in kind[5:].split("-"))
        if not low <= value <= high:
            raise WireError(f"{where}: enum value {value} is not one of {low}..{high}")
        return value
    if kind == "int64" and value >> 63:
        return value - (1 << 64)
    return value  # int32 / uint64 (unused by the check), float / double (their offset)


def parse(buf, message: str, start: int = 0, end: int | None = None, depth: int = 0) -> dict:
    """The fields of one ``message`` (a :data:`SCHEMA` name) in ``buf[start:end]``.

    Raises :class:`WireError` naming the message and field for anything listed in the module
    docstring."""
    if depth > MAX_DEPTH:
        raise WireError(f"messages nested deeper than {MAX_DEPTH}")
    schema, oneof = SCHEMA[message], ONEOFS.get(message, ())
    out: dict = {}
    for number, wire, value in fields(buf, start, end):
        f = schema.get(number)
        if f is None:
            raise WireError(f"{message}: unknown field number {number} (wire type {wire}); "
                            f"known: {sorted(schema)}")
        where = f"{message}.{f.name}"
        scalar_wire = _SCALAR_WIRE.get(f.kind, 0 if f.kind.startswith("enum:") else 2)
        if wire != scalar_wire and not (f.repeated and wire == 2 and scalar_wire != 2):
            raise WireError(f"{where} (field {number}): wire type {wire}, expected "
                            f"{scalar_wire}")
        if not f.repeated and f.name in out:
            raise WireError(f"{where} (field {number}) occurs more than once: protobuf would "
                            f"merge the occurrences; a singular field must occur at most once")
        if number in oneof and any(schema[n].name in out for n in oneof):
            taken = [schema[n].name for n in oneof if schema[n].name in out]
            raise WireError(f"{where} (field {number}): more than one member of a oneof is "
                            f"set ({taken[0]} too)")
        if f.kind in SCHEMA:
            item = parse(buf, f.kind, value[0], value[1], depth + 1)
        elif f.kind == "opaque":
            item = value
        elif f.repeated and f.kind not in ("string", "bytes"):
            if wire == 2:
                _packed(buf, value, f.kind, where)
            continue  # repeated numbers are checked, not kept
        else:
            item = _scalar(buf, wire, value, f, where)
        if f.repeated:
            out.setdefault(f.name, []).append(item)
        else:
            out[f.name] = item
    return out
