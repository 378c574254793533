# SPDX-License-Identifier: Apache-2.0
"""Minimal reader and writer for the safetensors format, without the `safetensors` package.

File layout (https://huggingface.co/docs/safetensors)::

    [u64 little-endian N][N bytes of UTF-8 JSON header][data buffer]

The header maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` with
offsets relative to the start of the data buffer, plus an optional ``"__metadata__"`` object of
string -> string.

Contract:

* :func:`save_safetensors` writes little-endian F32 (or, for tests of readers, F16 / BF16) tensors
  in the order given, contiguously (no gaps, no overlap), with the JSON header padded with spaces
  so that ``8 + N`` is a multiple of 8. Names must be non-empty and unique, ``__metadata__`` is
  reserved, metadata keys and values must be strings. The output is a deterministic function of
  the inputs (same tensors -> same bytes).
* :func:`load_safetensors` reads F32, F16 and BF16 tensors and returns them as float32
  (BF16 -> F32 is exact: the 16 bits become the high half of the float). It validates the header
  length, the JSON, every dtype / shape / offset, and that the offsets tile the data buffer exactly;
  any problem raises :class:`SafetensorsError` (a ``ValueError``) naming the tensor.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch

__all__ = [
    "SafetensorsError",
    "serialize_safetensors",
    "save_safetensors",
    "parse_safetensors",
    "read_safetensors",
    "load_safetensors",
]

# Same cap as the reference implementation (and the C++ reader).
MAX_HEADER_BYTES = 100 << 20

_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2}


class SafetensorsError(ValueError):
    """A malformed safetensors file or an invalid request to write one."""


def _f32_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 array -> uint16 bfloat16 bit patterns, round-to-nearest-even (NaN stays NaN)."""
    bits = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        out[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)  # keep it a (quiet) NaN
    return out


def _encode(name: str, tensor, dtype: str) -> Tuple[list, bytes]:
    if isinstance(tensor, torch.Tensor):
        arr = tensor.detach().cpu().to(torch.float32).contiguous().numpy()
    else:
        arr = np.asarray(tensor, dtype=np.float32)
    shape = [int(d) for d in arr.shape]
    if dtype == "F32":
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
    elif dtype == "F16":
        data = np.ascontiguousarray(arr.astype("<f2")).tobytes()
    elif dtype == "BF16":
        data = _f32_to_bf16_bits(arr).astype("<u2").tobytes()
    else:
        raise SafetensorsError(f"{name}: unsupported dtype for writing: {dtype!r}")
    return shape, data


def serialize_safetensors(
    tensors: Mapping[str, object],
    metadata: Optional[Mapping[str, str]] = None,
    dtype: str = "F32",
) -> bytes:
    """Returns the bytes of a safetensors file holding `tensors` (in iteration order).

    `tensors` values may be torch tensors or anything numpy can turn into a float array; they are
    converted to float32 first and then stored as `dtype` ("F32", default; "F16" or "BF16").
    """
    header: Dict[str, object] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SafetensorsError(f"__metadata__: keys and values must be str, got {k!r}: {v!r}")
        header["__metadata__"] = dict(metadata)
    chunks = []
    offset = 0
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not name:
            raise SafetensorsError(f"tensor name must be a non-empty str, got {name!r}")
        if name == "__metadata__":
            raise SafetensorsError("tensor name '__metadata__' is reserved")
        shape, data = _encode(name, tensor, dtype)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    return struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(chunks)


def save_safetensors(
    path,
    tensors: Mapping[str, object],
    metadata: Optional[Mapping[str, str]] = None,
    dtype: str = "F32",
) -> None:
    """Writes :func:`serialize_safetensors` (`tensors`, `metadata`, `dtype`) to `path`."""
    data = serialize_safetensors(tensors, metadata, dtype)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _decode(name: str, dtype: str, shape: Tuple[int, ...], raw: bytes) -> torch.Tensor:
    if dtype == "F32":
        arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif dtype == "F16":
        arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif dtype == "BF16":
        arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:  # validated before
        raise SafetensorsError(f"{name}: unsupported dtype {dtype!r}")
    return torch.from_numpy(arr.reshape(shape).copy())


def parse_safetensors(data: bytes) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Validates and decodes an in-memory safetensors image -> (float32 tensors, metadata).

    Tensors are returned in order of their data offsets.
    """
    if len(data) < 8:
        raise SafetensorsError(f"file too short for the header length: {len(data)} bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        raise SafetensorsError(f"header length {n} exceeds the cap of {MAX_HEADER_BYTES}")
    if 8 + n > len(data):
        raise SafetensorsError(f"header length {n} runs past the end of the file ({len(data)} bytes)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header must be a JSON object")
    buffer = data[8 + n :]

    metadata: Dict[str, str] = {}
    if "__metadata__" in header:
        md = header.pop("__metadata__")
        if not isinstance(md, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in md.items()
        ):
            raise SafetensorsError("__metadata__ must be an object of string -> string")
        metadata = dict(md)

    entries = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise SafetensorsError(f"{name}: entry must be an object")
        dtype = info.get("dtype")
        shape = info.get("shape")
        offsets = info.get("data_offsets")
        if dtype not in _ITEMSIZE:
            raise SafetensorsError(f"{name}: unsupported dtype {dtype!r} (want F32, F16 or BF16)")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise SafetensorsError(f"{name}: shape must be a list of non-negative ints, got {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        ):
            raise SafetensorsError(f"{name}: data_offsets must be [begin, end], got {offsets!r}")
        begin, end = offsets
        if begin > end or end > len(buffer):
            raise SafetensorsError(
                f"{name}: data_offsets [{begin}, {end}] out of range of the {len(buffer)}-byte buffer"
            )
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * _ITEMSIZE[dtype]:
            raise SafetensorsError(
                f"{name}: data_offsets span {end - begin} bytes but {dtype}{shape} needs "
                f"{numel * _ITEMSIZE[dtype]}"
            )
        entries.append((begin, end, name, dtype, tuple(shape)))

    entries.sort()
    pos = 0
    for begin, end, name, _, _ in entries:
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else "leaves a gap before it"
            raise SafetensorsError(f"{name}: data_offsets begin {begin} {what} (expected {pos})")
        pos = end
    if pos != len(buffer):
        raise SafetensorsError(f"data buffer has {len(buffer) - pos} trailing bytes not owned by a tensor")

    tensors = {
        name: _decode(name, dtype, shape, buffer[begin:end]) for begin, end, name, dtype, shape in entries
    }
    return tensors, metadata


def read_safetensors(path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Reads `path` -> (float32 tensors, metadata). See :func:`parse_safetensors`."""
    with open(path, "rb") as f:
        data = f.read()
    return parse_safetensors(data)


def load_safetensors(path) -> Dict[str, torch.Tensor]:
    """Reads `path` -> dict of float32 tensors (metadata dropped)."""
    return read_safetensors(path)[0]
