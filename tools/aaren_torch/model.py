# SPDX-License-Identifier: Apache-2.0
"""PyTorch reference implementation of the Aaren model served by Aaren Serve (DESIGN.md s.1-2).

Contract:

* ``AarenModel(config).state_dict()`` has exactly the tensor names and shapes of the DESIGN.md
  table (``embed.weight`` or ``input.weight``/``input.bias``, ``layers.{l}.norm1.*``,
  ``layers.{l}.attn.{query,key.*,value.*,out.*}``, ``layers.{l}.norm2.*``,
  ``layers.{l}.ffn.{up,down}.*``, ``norm_f.*``, ``head.*``) and nothing else, so it exports to a
  model directory directly (see :mod:`aaren_torch.model_dir`).
* ``AarenModel.forward(inputs, state=None, position=0, chunk_size=256)`` computes the outputs of
  every input position and the recurrent state after the last one. ``inputs`` are int64 tokens
  ``[B, N]`` or float features ``[B, N, F]``; ``state`` is ``None`` (the empty session) or what a
  previous call returned; ``position`` is the absolute session position of ``inputs[:, 0]`` (an int,
  or an int64 tensor ``[B]``). Calling it on a sequence in pieces, carrying the state and advancing
  the position, gives the same outputs as one call on the whole sequence (to float rounding), for
  any ``chunk_size >= 1``.
* The Aaren attention is exact (no approximation) and runs in ``O(N * chunk_size)`` memory: the
  sequence is cut into chunks; inside a chunk the prefix softmax is a causally masked
  ``[chunk, chunk]`` weight matrix taken relative to the running max, and chunks are chained
  through the ``(m, u, w)`` state. ``chunk_size=1`` is the pure streaming recurrence
  ``state = state (+) leaf(x_t)``.
* State per layer: a tuple ``(m [B, H], u [B, H], w [B, H, d_head])``; the identity (empty) state is
  ``(-inf, 0, 0)`` and contributes exactly zero (never NaN).
* The running max ``m`` is a numerical stabiliser the outputs do not depend on, so it carries no
  gradient (like the max in a stable logsumexp); gradients of the outputs are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AarenConfig",
    "AarenAttention",
    "AarenBlock",
    "AarenModel",
    "LayerState",
    "identity_state",
    "aaren_prefix_attention",
    "sinusoidal_position_encoding",
    "expected_tensor_shapes",
    "random_model",
]

# (m [B, H], u [B, H], w [B, H, d_head])
LayerState = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class AarenConfig:
    """Mirror of an Aaren model directory's ``config.json`` (DESIGN.md section 2).

    ``input`` is ``{"kind": "tokens", "vocab_size": V}`` or ``{"kind": "features", "n_features": F}``;
    ``position`` is ``"none"`` or ``"sinusoidal"``.
    """

    d_model: int
    n_heads: int
    n_layers: int
    d_ff: int
    input: Dict[str, Any]
    output_dim: int
    position: str = "none"
    norm_eps: float = 1e-5
    model_type: str = "aaren"

    def __post_init__(self) -> None:
        self.validate()

    # --- derived ---------------------------------------------------------------------------
    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def input_kind(self) -> str:
        return self.input["kind"]

    @property
    def vocab_size(self) -> int:
        return int(self.input["vocab_size"])

    @property
    def n_features(self) -> int:
        return int(self.input["n_features"])

    def state_floats(self) -> int:
        """Floats in one session's state: n_layers x n_heads x (m, u, w[d_head])."""
        return self.n_layers * self.n_heads * (2 + self.d_head)

    # --- (de)serialisation -----------------------------------------------------------------
    def validate(self) -> None:
        """Raises ValueError naming the field when the config is not a valid Aaren config."""
        if self.model_type != "aaren":
            raise ValueError(f"model_type must be 'aaren', got {self.model_type!r}")
        for name in ("d_model", "n_heads", "n_layers", "d_ff", "output_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not isinstance(self.input, dict):
            raise ValueError(f"input must be an object, got {self.input!r}")
        kind = self.input.get("kind")
        key = {"tokens": "vocab_size", "features": "n_features"}.get(kind)
        if key is None:
            raise ValueError(f"input.kind must be 'tokens' or 'features', got {kind!r}")
        v = self.input.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"input.{key} must be an int >= 1, got {v!r}")
        if self.position not in ("none", "sinusoidal"):
            raise ValueError(f"position must be 'none' or 'sinusoidal', got {self.position!r}")
        if not (isinstance(self.norm_eps, (int, float)) and math.isfinite(self.norm_eps) and self.norm_eps > 0):
            raise ValueError(f"norm_eps must be a finite number > 0, got {self.norm_eps!r}")

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "AarenConfig":
        """Builds a config from parsed config.json; unknown keys are ignored."""
        inp = dict(d["input"])
        kind = inp.get("kind")
        inp = {"kind": kind, **{k: inp[k] for k in ("vocab_size", "n_features") if k in inp}}
        return cls(
            model_type=d.get("model_type", "aaren"),
            d_model=d["d_model"],
            n_heads=d["n_heads"],
            n_layers=d["n_layers"],
            d_ff=d["d_ff"],
            input=inp,
            output_dim=d["output_dim"],
            position=d.get("position", "none"),
            norm_eps=float(d.get("norm_eps", 1e-5)),
        )

    def to_dict(self) -> Dict[str, Any]:
        """The config.json object (keys in the canonical order)."""
        key = "vocab_size" if self.input_kind == "tokens" else "n_features"
        return {
            "model_type": self.model_type,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "n_layers": self.n_layers,
            "d_ff": self.d_ff,
            "input": {"kind": self.input_kind, key: int(self.input[key])},
            "output_dim": self.output_dim,
            "position": self.position,
            "norm_eps": float(self.norm_eps),
        }


def expected_tensor_shapes(config: AarenConfig) -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every tensor a model with `config` has (DESIGN.md table), in state_dict order."""
    D, H, dff = config.d_model, config.n_heads, config.d_ff
    out: Dict[str, Tuple[int, ...]] = {}
    if config.input_kind == "tokens":
        out["embed.weight"] = (config.vocab_size, D)
    else:
        out["input.weight"] = (D, config.n_features)
        out["input.bias"] = (D,)
    for l in range(config.n_layers):
        p = f"layers.{l}."
        out[p + "norm1.weight"] = (D,)
        out[p + "norm1.bias"] = (D,)
        out[p + "attn.query"] = (H, config.d_head)
        for lin in ("key", "value", "out"):
            out[p + f"attn.{lin}.weight"] = (D, D)
            out[p + f"attn.{lin}.bias"] = (D,)
        out[p + "norm2.weight"] = (D,)
        out[p + "norm2.bias"] = (D,)
        out[p + "ffn.up.weight"] = (dff, D)
        out[p + "ffn.up.bias"] = (dff,)
        out[p + "ffn.down.weight"] = (D, dff)
        out[p + "ffn.down.bias"] = (D,)
    out["norm_f.weight"] = (D,)
    out["norm_f.bias"] = (D,)
    out["head.weight"] = (config.output_dim, D)
    out["head.bias"] = (config.output_dim,)
    return out


def sinusoidal_position_encoding(
    positions: torch.Tensor, d_model: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """PE for integer `positions` (any shape) -> ``positions.shape + (d_model,)``.

    ``PE[t, 2i] = sin(t / 10000^(2i/D))``, ``PE[t, 2i+1] = cos(t / 10000^(2i/D))`` (one frequency per
    pair; for odd D the last column is a sin). Computed in float64 and then cast to `dtype`, so it
    stays accurate for positions in the millions.
    """
    t = positions.to(torch.float64).unsqueeze(-1)  # [..., 1]
    j = torch.arange(d_model, dtype=torch.float64, device=positions.device)
    pair = torch.div(j, 2, rounding_mode="floor")  # i for columns 2i and 2i+1
    base = torch.tensor(10000.0, dtype=torch.float64, device=positions.device)
    inv_freq = torch.pow(base, -(2.0 * pair) / d_model)
    angle = t * inv_freq  # t / 10000^(2i/D)
    is_sin = (j.to(torch.int64) % 2) == 0
    pe = torch.where(is_sin, torch.sin(angle), torch.cos(angle))
    return pe.to(dtype)


def identity_state(
    batch: int, n_heads: int, d_head: int, dtype: torch.dtype = torch.float32, device=None
) -> LayerState:
    """The empty-prefix state ``(m=-inf, u=0, w=0)`` of one layer."""
    m = torch.full((batch, n_heads), float("-inf"), dtype=dtype, device=device)
    u = torch.zeros((batch, n_heads), dtype=dtype, device=device)
    w = torch.zeros((batch, n_heads, d_head), dtype=dtype, device=device)
    return m, u, w


def aaren_prefix_attention(
    s: torch.Tensor,
    v: torch.Tensor,
    state: Optional[LayerState] = None,
    chunk_size: int = 256,
) -> Tuple[torch.Tensor, LayerState]:
    """Exact Aaren prefix attention, chunked.

    Args:
      s: scores ``[B, N, H]``.
      v: values ``[B, N, H, d_head]``.
      state: ``(m [B, H], u [B, H], w [B, H, d_head])`` of the prefix before ``s[:, 0]``; None is
        the identity.
      chunk_size: tokens per chunk (>= 1); memory is ``O(B * H * N * chunk_size)``.

    Returns:
      ``(o [B, N, H, d_head], new_state)`` where ``o[:, k] = w_k / u_k`` and ``w_k, u_k`` are the
      state after combining the leaves ``(s_i, 1, v_i)``, ``i <= k``, onto `state`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B, N, H = s.shape
    dh = v.shape[-1]
    if v.shape[:3] != (B, N, H):
        raise ValueError(f"values shape {tuple(v.shape)} does not match scores {tuple(s.shape)}")
    if state is None:
        state = identity_state(B, H, dh, dtype=s.dtype, device=s.device)
    m, u, w = state
    m = m.detach()  # stabiliser only (see module docstring)
    neg_inf = torch.tensor(float("-inf"), dtype=s.dtype, device=s.device)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    outs: List[torch.Tensor] = []
    full_mask = torch.ones(min(chunk_size, N), min(chunk_size, N), dtype=torch.bool, device=s.device).tril()
    for c0 in range(0, N, chunk_size):
        sc = s[:, c0 : c0 + chunk_size].transpose(1, 2)  # [B, H, C]
        vc = v[:, c0 : c0 + chunk_size].permute(0, 2, 1, 3)  # [B, H, C, dh]
        C = sc.shape[-1]
        with torch.no_grad():
            mk = torch.maximum(m.unsqueeze(-1), torch.cummax(sc, dim=-1).values)  # [B, H, C]
        # E[k, i] = exp(s_i - m_k) for i <= k, else 0. Mask before exp: no inf, no NaN gradients.
        causal = full_mask[:C, :C]
        diff = sc.unsqueeze(-2) - mk.unsqueeze(-1)  # [B, H, C(k), C(i)]
        E = torch.exp(torch.where(causal, diff, neg_inf))
        # Carry of the previous state, exp(m_prev - m_k); exactly 0 for the identity (m_prev=-inf).
        m_prev = m.unsqueeze(-1)
        carry = torch.exp(torch.where(torch.isneginf(m_prev), neg_inf, m_prev - mk))  # [B, H, C]
        uk = u.unsqueeze(-1) * carry + E.sum(-1)  # [B, H, C]
        wk = w.unsqueeze(-2) * carry.unsqueeze(-1) + E @ vc  # [B, H, C, dh]
        # u_k >= 1 whenever s is finite (the max leaf contributes exp(0)); guard the empty case.
        denom = torch.where(uk > 0, uk, torch.ones((), dtype=s.dtype, device=s.device))
        o = torch.where((uk > 0).unsqueeze(-1), wk / denom.unsqueeze(-1), zero)
        outs.append(o.permute(0, 2, 1, 3))  # [B, C, H, dh]
        m, u, w = mk[..., -1], uk[..., -1], wk[..., -1, :]
    if N == 0:
        return v.new_zeros((B, 0, H, dh)), (m, u, w)
    return torch.cat(outs, dim=1), (m, u, w)


class AarenAttention(nn.Module):
    """Aaren attention with one learned query per head (parameters ``query``, ``key``, ``value``, ``out``)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.query = nn.Parameter(torch.empty(n_heads, self.d_head))
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        nn.init.normal_(self.query, 0.0, 1.0)

    def scores_and_values(self, h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """h ``[B, N, D]`` -> (scores ``[B, N, H]``, values ``[B, N, H, d_head]``)."""
        B, N, _ = h.shape
        k = self.key(h).view(B, N, self.n_heads, self.d_head)
        v = self.value(h).view(B, N, self.n_heads, self.d_head)
        s = (k * self.query).sum(-1) / math.sqrt(self.d_head)
        return s, v

    def forward(
        self, h: torch.Tensor, state: Optional[LayerState] = None, chunk_size: int = 256
    ) -> Tuple[torch.Tensor, LayerState]:
        B, N, D = h.shape
        s, v = self.scores_and_values(h)
        o, new_state = aaren_prefix_attention(s, v, state, chunk_size)
        return self.out(o.reshape(B, N, D)), new_state


class FeedForward(nn.Module):
    """``down(gelu(up(x)))`` with the exact (erf) GELU."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class AarenBlock(nn.Module):
    """Pre-norm block: ``x += out(Aaren(norm1(x)))``; ``x += ffn(norm2(x))``."""

    def __init__(self, config: AarenConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.attn = AarenAttention(config.d_model, config.n_heads)
        self.norm2 = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.ffn = FeedForward(config.d_model, config.d_ff)

    def forward(
        self, x: torch.Tensor, state: Optional[LayerState] = None, chunk_size: int = 256
    ) -> Tuple[torch.Tensor, LayerState]:
        a, new_state = self.attn(self.norm1(x), state, chunk_size)
        x = x + a
        x = x + self.ffn(self.norm2(x))
        return x, new_state


class AarenModel(nn.Module):
    """The Aaren model of DESIGN.md section 2; see the module docstring for the contract."""

    def __init__(self, config: AarenConfig):
        super().__init__()
        config.validate()
        self.config = config
        if config.input_kind == "tokens":
            self.embed = nn.Embedding(config.vocab_size, config.d_model)
        else:
            self.input = nn.Linear(config.n_features, config.d_model)
        self.layers = nn.ModuleList([AarenBlock(config) for _ in range(config.n_layers)])
        self.norm_f = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.head = nn.Linear(config.d_model, config.output_dim)

    def _param_dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def init_state(self, batch: int, dtype: Optional[torch.dtype] = None, device=None) -> List[LayerState]:
        """The empty-session state: a list of ``(m=-inf, u=0, w=0)`` per layer."""
        dtype = dtype or self._param_dtype()
        device = device if device is not None else self.head.weight.device
        return [
            identity_state(batch, self.config.n_heads, self.config.d_head, dtype, device)
            for _ in range(self.config.n_layers)
        ]

    def embed_inputs(self, inputs: torch.Tensor, position: Union[int, torch.Tensor] = 0) -> torch.Tensor:
        """inputs -> x ``[B, N, D]`` (embedding / input projection plus position encoding)."""
        cfg = self.config
        if cfg.input_kind == "tokens":
            if inputs.dim() != 2 or inputs.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"token inputs must be an int tensor [B, N], got {inputs.dtype} {tuple(inputs.shape)}")
            x = self.embed(inputs.long())
        else:
            if inputs.dim() != 3 or inputs.shape[-1] != cfg.n_features:
                raise ValueError(f"feature inputs must be [B, N, {cfg.n_features}], got {tuple(inputs.shape)}")
            x = self.input(inputs.to(self._param_dtype()))
        if cfg.position == "sinusoidal":
            B, N = x.shape[0], x.shape[1]
            pos = torch.as_tensor(position, dtype=torch.int64, device=x.device)
            if pos.dim() == 0:
                pos = pos.expand(B)
            t = pos.unsqueeze(1) + torch.arange(N, dtype=torch.int64, device=x.device)  # [B, N]
            x = x + sinusoidal_position_encoding(t, cfg.d_model, dtype=x.dtype).to(x.device)
        return x

    def forward(
        self,
        inputs: torch.Tensor,
        state: Optional[Sequence[Optional[LayerState]]] = None,
        position: Union[int, torch.Tensor] = 0,
        chunk_size: int = 256,
    ) -> Tuple[torch.Tensor, List[LayerState]]:
        """Returns ``(outputs [B, N, output_dim], new_state)``; see the module docstring."""
        x = self.embed_inputs(inputs, position)
        if state is not None and len(state) != self.config.n_layers:
            raise ValueError(f"state has {len(state)} layers, model has {self.config.n_layers}")
        new_state: List[LayerState] = []
        for l, layer in enumerate(self.layers):
            x, st = layer(x, None if state is None else state[l], chunk_size)
            new_state.append(st)
        return self.head(self.norm_f(x)), new_state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def random_model(
    config: AarenConfig,
    seed: int = 0,
    query_scale: float = 2.0,
    dtype: torch.dtype = torch.float32,
) -> AarenModel:
    """A deterministic random model for tests (same seed -> same weights, independent of global RNG).

    Linear weights are ``N(0, 1/fan_in)`` so activations stay of order 1; biases ``N(0, 0.1^2)``;
    LayerNorm weights ``1 + N(0, 0.1^2)``, biases ``N(0, 0.1^2)``; embeddings ``N(0, 1)``. The keys
    after LayerNorm have roughly unit-variance components, so ``query ~ N(0, query_scale^2)`` per
    component makes the scores ``q . k / sqrt(d_head)`` roughly ``N(0, query_scale^2)``: varied
    weights, neither near-uniform nor one-hot, at the default ``query_scale=2``.
    """
    model = AarenModel(config)
    g = torch.Generator().manual_seed(int(seed))
    shapes = expected_tensor_shapes(config)
    new_sd = {}
    for name, shape in shapes.items():
        r = torch.randn(shape, generator=g, dtype=torch.float64)
        if name.endswith("attn.query"):
            t = r * query_scale
        elif name.startswith("embed."):
            t = r
        elif ".norm" in name or name.startswith("norm_f."):
            t = (1.0 + 0.1 * r) if name.endswith(".weight") else 0.1 * r
        elif name.endswith(".weight"):
            t = r / math.sqrt(shape[1])
        else:
            t = 0.1 * r
        new_sd[name] = t
    model.load_state_dict({k: v.to(torch.float32) for k, v in new_sd.items()}, strict=True)
    return model.to(dtype)
