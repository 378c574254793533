# SPDX-License-Identifier: Apache-2.0
"""aaren_torch: the PyTorch reference implementation of Aaren Serve's model format.

* :mod:`aaren_torch.model` — :class:`AarenConfig`, :class:`AarenModel` (exact, chunked Aaren
  attention with a carried recurrent state), :func:`random_model` for tests.
* :mod:`aaren_torch.safetensors_io` — safetensors reader/writer (F32 out; F32/F16/BF16 in).
* :mod:`aaren_torch.model_dir` — model directories (config.json + model.safetensors).

A model trained with :class:`AarenModel` and saved with :func:`save_model_dir` is a model
directory the server loads as is.
"""

from .model import (
    AarenAttention,
    AarenBlock,
    AarenConfig,
    AarenModel,
    LayerState,
    aaren_prefix_attention,
    expected_tensor_shapes,
    identity_state,
    random_model,
    sinusoidal_position_encoding,
)
from .model_dir import load_config, load_model_dir, save_model_dir
from .safetensors_io import (
    SafetensorsError,
    load_safetensors,
    parse_safetensors,
    read_safetensors,
    save_safetensors,
    serialize_safetensors,
)

__all__ = [
    "AarenAttention",
    "AarenBlock",
    "AarenConfig",
    "AarenModel",
    "LayerState",
    "aaren_prefix_attention",
    "expected_tensor_shapes",
    "identity_state",
    "random_model",
    "sinusoidal_position_encoding",
    "load_config",
    "load_model_dir",
    "save_model_dir",
    "SafetensorsError",
    "load_safetensors",
    "parse_safetensors",
    "read_safetensors",
    "save_safetensors",
    "serialize_safetensors",
]
