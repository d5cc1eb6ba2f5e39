"""The mixed-mode model's per-row modes tensor: the ``BYTES`` input [N] of an inference body
naming each row's mode, as JSON strings or the binary extension's bytes
(:mod:`taugate.server.oip_bytes` decodes them)."""

from __future__ import annotations

from taugate.server import oip_bytes
from taugate.server.oip_tensors import OipError, checked_shape, echo, parameters_of


def modes_data(tensor: dict, where: str, binary: memoryview, offset: int) -> tuple[list, int]:
    """The per-row mode names of the mixed model's ``BYTES`` input [N], and the new offset."""
    if tensor.get("datatype") != "BYTES":
        raise OipError(400, f"{where}.datatype: expected 'BYTES' (one mode name per row), got "
                            f"{echo(tensor.get('datatype'))}")
    shape = checked_shape(tensor, where)
    if len(shape) != 1:
        raise OipError(400, f"{where}.shape: expected [N] (one mode name per row), got "
                            f"{echo(shape)}")
    size = parameters_of(tensor, where).get("binary_data_size")
    try:
        if size is None:
            if "data" not in tensor:
                raise OipError(400, f"{where}: expected data (a list of strings) or "
                                    f"parameters.binary_data_size")
            return oip_bytes.decode_json(tensor["data"], shape, where), offset
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise OipError(400, f"{where}.parameters.binary_data_size: expected a non-negative "
                                f"integer, got {echo(size)}")
        if "data" in tensor:
            raise OipError(400, f"{where}: has both binary_data_size and data; send one")
        if offset + size > len(binary):
            raise OipError(400, f"{where}: binary_data_size {size} runs past the "
                                f"{len(binary) - offset} bytes of binary data left in the body")
        return oip_bytes.decode_binary(binary[offset:offset + size], shape, where), \
            offset + size
    except oip_bytes.BytesRefused as exc:
        raise OipError(400, str(exc)) from None
