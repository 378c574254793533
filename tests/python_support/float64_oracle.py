# SPDX-License-Identifier: Apache-2.0
"""An independent float64 oracle of an Aaren model: every output recomputed from the model's
state_dict with plain tensor ops and a masked O(N^2) softmax over each prefix, using none of the
reference module's attention code. Shared by tests/python (the reference module's own tests) and
tests/image (the container's Score)."""

import math

import numpy as np
import torch


def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def sinusoidal_pe(positions, D):
    out = np.zeros((len(positions), D))
    for r, t in enumerate(positions):
        for j in range(D):
            ang = t / 10000.0 ** (2 * (j // 2) / D)
            out[r, j] = math.sin(ang) if j % 2 == 0 else math.cos(ang)
    return torch.from_numpy(out)


def oracle_forward(model, inputs, position=0):
    """float64 outputs [B, N, out] and final per-layer states (m, u, w) of the whole prefix."""
    cfg = model.config
    sd = {k: v.detach().to(torch.float64) for k, v in model.state_dict().items()}
    D, H = cfg.d_model, cfg.n_heads
    dh = D // H
    eps = cfg.norm_eps
    if cfg.input_kind == "tokens":
        x = sd["embed.weight"][inputs]
    else:
        x = inputs.to(torch.float64) @ sd["input.weight"].T + sd["input.bias"]
    B, N = x.shape[:2]
    if cfg.position == "sinusoidal":
        x = x + sinusoidal_pe(range(position, position + N), D)
    states = []
    causal = torch.tril(torch.ones(N, N, dtype=torch.bool))
    for l in range(cfg.n_layers):
        p = f"layers.{l}."
        h = _ln(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        k = (h @ sd[p + "attn.key.weight"].T + sd[p + "attn.key.bias"]).reshape(B, N, H, dh)
        v = (h @ sd[p + "attn.value.weight"].T + sd[p + "attn.value.bias"]).reshape(B, N, H, dh)
        s = torch.einsum("bnhd,hd->bhn", k, sd[p + "attn.query"]) / math.sqrt(dh)  # [B, H, N]
        logits = s[:, :, None, :].expand(B, H, N, N).masked_fill(~causal, float("-inf"))
        wts = torch.softmax(logits, dim=-1)  # row k: softmax over i <= k
        o = torch.einsum("bhki,bihd->bkhd", wts, v).reshape(B, N, D)
        x = x + o @ sd[p + "attn.out.weight"].T + sd[p + "attn.out.bias"]
        h2 = _ln(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        x = x + _gelu(h2 @ sd[p + "ffn.up.weight"].T + sd[p + "ffn.up.bias"]) @ sd[p + "ffn.down.weight"].T + sd[
            p + "ffn.down.bias"]
        m = s.max(-1).values  # [B, H]
        e = torch.exp(s - m[..., None])
        states.append((m, e.sum(-1), torch.einsum("bhn,bnhd->bhd", e, v)))
    y = _ln(x, sd["norm_f.weight"], sd["norm_f.bias"], eps) @ sd["head.weight"].T + sd["head.bias"]
    return y, states


