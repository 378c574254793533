# SPDX-License-Identifier: Apache-2.0
"""Aaren model directories: ``config.json`` + ``model.safetensors`` (DESIGN.md section 2).

Contract:

* :func:`save_model_dir` writes ``config.json`` (``json.dump(indent=2)`` of
  :meth:`AarenConfig.to_dict`, trailing newline) and ``model.safetensors`` (every ``state_dict()``
  tensor as contiguous little-endian float32, in state_dict order). The output bytes are a
  deterministic function of the config, the weights and `metadata`.
* :func:`load_model_dir` reads both files back into an :class:`AarenModel` in eval mode. The
  tensor set must be exactly the DESIGN.md table for the config (missing, unexpected and
  mis-shaped tensors raise ``ValueError`` naming them); F16/BF16 files are accepted and widened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from .model import AarenConfig, AarenModel, expected_tensor_shapes
from .safetensors_io import read_safetensors, save_safetensors

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "save_model_dir", "load_model_dir", "load_config"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

PathLike = Union[str, os.PathLike]


def save_model_dir(
    model: AarenModel, directory: PathLike, metadata: Optional[Mapping[str, str]] = None
) -> None:
    """Writes `model` to `directory` (created if needed) as config.json + model.safetensors."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / CONFIG_FILE, "w", encoding="utf-8") as f:
        json.dump(model.config.to_dict(), f, indent=2)
        f.write("\n")
    tensors = {k: v.detach().to(torch.float32).cpu().contiguous() for k, v in model.state_dict().items()}
    expected = expected_tensor_shapes(model.config)
    if set(tensors) != set(expected):
        raise ValueError(f"state_dict keys differ from the DESIGN.md set: {sorted(set(tensors) ^ set(expected))}")
    save_safetensors(d / WEIGHTS_FILE, tensors, metadata=metadata)


def load_config(directory: PathLike) -> AarenConfig:
    """Parses `directory`/config.json."""
    with open(Path(directory) / CONFIG_FILE, "r", encoding="utf-8") as f:
        return AarenConfig.from_dict(json.load(f))


def load_model_dir(directory: PathLike) -> AarenModel:
    """Loads `directory` into a float32 :class:`AarenModel` in eval mode."""
    config = load_config(directory)
    tensors, _ = read_safetensors(Path(directory) / WEIGHTS_FILE)
    expected = expected_tensor_shapes(config)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{directory}: missing tensors {missing}, unexpected tensors {unexpected}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{directory}: tensor {name} has shape {tuple(tensors[name].shape)}, expected {shape}")
    model = AarenModel(config)
    model.load_state_dict(tensors, strict=True)
    return model.eval()
