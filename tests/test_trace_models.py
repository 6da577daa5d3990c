"""Conformance of ``kiln.trace`` on small models: eager PyTorch and torch.jit.trace are the oracles.

Every case is traced on one set of example inputs, then run on those and on a second set with a
different batch size (so sizes must not be baked into the graph).  The outputs are compared with
the eager module and, where this PyTorch still has one, with ``torch.jit.trace``.  The graphs
(forward, inlined, and each traced submodule's forward) must verify and print back to themselves
through the parser.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import pytest
import torch
import torch.nn.functional as F
from conftest import has_torch_jit, suppress_jit_warnings
from torch import nn

import kiln
from kiln.ir.parser import parse_graph
from kiln.ir.verify import verify

# -- models ---------------------------------------------------------------------------------------


class ConvBNReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        _randomize_bn(self.bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _randomize_bn(bn: nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode batch norm is not the identity."""
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        if bn.weight is not None:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)


class Pools(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.maxpool = nn.MaxPool2d(2)
        self.avgpool = nn.AvgPool2d(3, stride=2, padding=1)
        self.gap = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.avgpool(self.maxpool(torch.relu(self.conv(x))))
        return self.fc(torch.flatten(self.gap(h), 1))


class AdaptivePools(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.adaptive_avg_pool2d(x, (3, 2)), F.adaptive_max_pool2d(x, 2)


class ConvClassifier(nn.Module):
    """Conv stack + flatten with x.view(x.size(0), -1): the batch size must stay symbolic."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return F.log_softmax(self.classifier(h.view(h.size(0), -1)), dim=-1)


class LSTMTagger(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 8, num_layers=2, batch_first=batch_first)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, (h, c) = self.lstm(x)
        return self.head(out), h, c


class BiLSTMWithState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 7, bidirectional=True)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x, (h0, c0))
        return out


class GRUModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(6, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gru(x)


class GRUCellLoop(nn.Module):
    """A GRUCell unrolled in Python over the (fixed) number of time steps."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.GRUCell(4, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (time, batch, 4)
        h = torch.zeros(x.size(1), 6)
        outs = []
        for t in range(x.size(0)):
            h = self.cell(x[t], h)
            outs.append(self.out(h))
        return torch.stack(outs)


class MHASelfAttention(nn.Module):
    def __init__(self, batch_first: bool, need_weights: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor) -> Any:
        out, weights = self.attn(x, x, x, need_weights=self.need_weights)
        return (out, weights) if self.need_weights else out


class MHACrossAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True, kdim=16, vdim=16)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attn(q, kv, kv, key_padding_mask=pad, average_attn_weights=False)


class SDPAAttention(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class ManualAttention(nn.Module):
    """softmax(q @ k^T / sqrt(d)) v with a mask, written out by hand."""

    def __init__(self, dim: int = 12) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        scores = scores.masked_fill(pad[:, None, :], float("-inf"))
        return torch.softmax(scores, dim=-1) @ v


class ManualAttention2D(nn.Module):
    """Unbatched attention using ``k.T``; the sequence length varies instead of a batch."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.q(x), self.k(x)
        return torch.softmax(q @ k.T / math.sqrt(k.shape[-1]), dim=-1) @ x


class EmbeddingMean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 6, padding_idx=0)
        self.fc = nn.Linear(6, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids).mean(dim=1))


class EmbeddingBagModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(20, 5, mode="sum")

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.bag(ids, offsets)


class ResidualBlock(nn.Module):
    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        _randomize_bn(self.bn1)
        _randomize_bn(self.bn2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(ResidualBlock(), ResidualBlock())
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        return self.head(h.mean(dim=(2, 3)))


class InplaceOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h.add_(1.0)
        h.relu_()
        h.mul_(x)
        h.sub_(0.5).clamp_(min=-0.25)
        return h


class UpsampleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        bil = F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=False)
        ps = F.pixel_shuffle(self.conv(x), 2)
        return up, bil, ps


class SubPixelUpsample(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x)) + self.up(x).mean(dim=1, keepdim=True)


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 6)
        self.cls = nn.Linear(6, 3)
        self.reg = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.enc(x))
        return {"logits": self.cls(h), "score": self.reg(h).squeeze(-1)}


class ListTupleOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        parts = list(x.split(2, dim=1))
        return parts, (x.sum(dim=1), x.amax(dim=1))


class NestedInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fa = nn.Linear(3, 4)
        self.fb = nn.Linear(5, 4)

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor], extra: dict[str, torch.Tensor]) -> torch.Tensor:
        a, b = pair
        return self.fa(a) * extra["scale"] + self.fb(b) + extra["shift"]


class SmallTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.embed(x)).mean(dim=1))


class SharedSubmodule(nn.Module):
    """The same Linear called twice, and a ModuleList iterated in Python."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shared(x)
        for layer in self.layers:
            x = torch.relu(layer(x)) + x
        return self.shared(x)


class TrainableMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PositionalEncoding(nn.Module):
    """A buffer sliced by the input's sequence length, and a root-level Parameter."""

    def __init__(self, d: int = 8, max_len: int = 32) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
        pe = torch.zeros(max_len, d)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe[None])
        self.scale = nn.Parameter(torch.rand(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.pe[:, : x.size(1)]


class CausalSelfAttention(nn.Module):
    """A causal mask built at run time from the sequence length."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.size(1)
        q, k, v = self.qkv(x).split(x.size(-1), dim=-1)
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=1)
        att = (q @ k.transpose(1, 2)) * (1.0 / math.sqrt(k.size(-1)))
        return att.masked_fill(mask, float("-inf")).softmax(-1) @ v


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int = 2) -> None:
        super().__init__()
        self.groups = groups
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        x = self.conv(x).view(b, self.groups, c // self.groups, h, w)
        return x.transpose(1, 2).contiguous().view(b, -1, h, w)


class StackedGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, num_layers=2, bidirectional=True)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, h = self.gru(x, h0)
        return out[-1], h.sum(0)


class LSTMCellLoop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, time, 3)
        h = x.new_zeros(x.size(0), 5)
        c = torch.zeros_like(h)
        for xt in x.unbind(1):
            h, c = self.cell(xt, (h, c))
        return h


class PackedLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return h[-1]


class TransformerStack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, batch_first=True)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        memory = self.encoder(src, src_key_padding_mask=pad)
        return self.decoder(tgt, memory, memory_key_padding_mask=pad)


class MethodCallOnSubmodule(nn.Module):
    """Calls a submodule's non-forward method, and a ModuleDict by key."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = Encoder()
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 2), "b": nn.Linear(4, 3)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.enc.encode(x)
        return {k: head(h) for k, head in self.heads.items()}


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x)) * 2


class ClassifierWithLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.fc(x)
        return F.cross_entropy(logits, target), (logits.argmax(-1) == target).float().mean()


class Conv3dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm3d(4)
        _randomize_bn(self.bn)
        self.pool = nn.MaxPool3d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.bn(self.conv(x))))


class Seq1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3, padding=2, dilation=2)
        self.bn = nn.BatchNorm1d(4)
        _randomize_bn(self.bn)
        self.pool = nn.MaxPool1d(2, ceil_mode=True)
        self.avg = nn.AvgPool1d(2, count_include_pad=False, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.avg(self.pool(self.bn(self.conv(F.pad(x, (1, 2), mode="replicate")))))


# -- functions ------------------------------------------------------------------------------------


def indexing_fn(x: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return x[:, 1:3], x[..., None], x[idx], x[mask], x[:, -1], x[1:, ::2]


def indexed_assign_fn(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    z = x.clone()
    z[:, 0] = 0
    z[mask] = y[mask]
    z[:, 1:3] += 1.0
    return z


def views_fn(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    b = x.size(0)
    v = x.view(b, 12, 5)
    r = x.reshape(-1, 5)
    p = x.permute(0, 3, 1, 2).contiguous()
    t = x.transpose(1, 2)
    f = x.flatten(1)
    u = x.unsqueeze(1).squeeze(1)
    s = x[:, :1].squeeze(1)
    e = x[:, :, :1, :].expand(b, 3, 4, 5)
    return v, r, p, t, f, u, s, e + 1


def cat_stack_chunk_split_fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    c = torch.cat([x, y], dim=1)
    s = torch.stack((x, y), dim=0)
    a, b = c.chunk(2, dim=1)
    p, q, r = torch.split(c, [1, 3, 4], dim=1)
    u = torch.unbind(s, dim=0)[1]
    return c, s, a * b, p, q.sum(1), r, u


def reductions_fn(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    values, indices = x.max(dim=1, keepdim=True)
    return (x.sum(), x.sum(dim=1), x.mean(dim=(1, 2), keepdim=True), values, indices,
            x.max(), x.argmax(dim=-1), x.norm(dim=-1), torch.linalg.vector_norm(x, 2),
            torch.logsumexp(x, dim=1), x.std(dim=0), x.prod(dim=2), x.min(dim=2).values)


def masked_fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mask = x > 0
    return x.masked_fill(mask, 0.0), torch.where(mask, x, y), torch.where(x < y, x, 1.5)


def einsum_fn(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.einsum("bij,bjk->bik", a, b), torch.einsum("bi,bi->b", c, c)


def multi_input_fn(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    h = F.linear(x, w, bias) * scale
    return torch.sigmoid(h) + F.gelu(h) - F.softplus(h).pow(2) + torch.bmm(x[:, None], x[:, :, None])[:, 0]


def activations_fn(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (F.silu(x), F.elu(x), F.leaky_relu(x, 0.2), F.hardtanh(x), torch.softmax(x, -1),
            F.log_softmax(x, 0), torch.erf(x), x.abs().sqrt(), torch.clamp(x, -0.5, 0.5), x.sign())


def gather_scatter_fn(x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
    g = torch.gather(x, 1, idx)
    s = torch.zeros_like(x).scatter_(1, idx, 1.0)
    a = torch.zeros_like(x).scatter_add(1, idx, g)
    sel = x.index_select(1, torch.tensor([0, 2]))
    rows = torch.arange(x.size(0))
    return g, s, a, sel, x[rows, idx[:, 0]], x[:, idx[0]]


def sort_scan_fn(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    values, indices = x.topk(2, dim=-1)
    srt = torch.sort(x, dim=0, descending=True)
    return (values, indices, srt.values, srt.indices, x.cumsum(1),
            x.repeat(1, 2), x.tile((2, 1)), x.cummax(1).values, x.flip([0, 1]), x.roll([1], [1]))


def single_int_for_int_list_fn(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """torch takes a lone int where the schema says int[] (sizes, dims, shifts)."""
    b = x.size(0)
    return (x.view(-1), x.reshape(-1), x.flatten().reshape(b * 4), torch.zeros(4) + x, x.new_zeros(b),
            x[0].repeat(2), x[0].permute(0), x.flip(0), x.roll(1, 1), torch.roll(x, shifts=-1, dims=0))


def factories_fn(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    b, n = x.shape
    eye = torch.eye(n)
    ones = torch.ones(b, 3, dtype=x.dtype)
    full = x.new_full((b, 2), 7.0)
    ar = torch.arange(b, dtype=torch.float32)[:, None] * x
    lin = torch.linspace(0, 1, n)
    return x @ eye, ones, full, ar, x + lin, torch.empty_like(x).fill_(2.0) * x, torch.zeros(x.shape)


def dtype_fn(x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (x.double() * 2, (x > 0).long().sum(-1), ids.float() / 3, x.to(torch.float16).float(),
            x.type_as(ids), x.to(ids.dtype), x.half().to(x))


def integer_ops_fn(x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (ids * 2 + 1, ids // 3, ids % 4, torch.true_divide(ids, 2), F.one_hot(ids, 20).sum(1),
            (x > 0).sum(-1), ids.bitwise_and(5), ids.max(dim=0).indices, x.sum(-1).argsort(), torch.bincount(ids[0]))


def similarity_fn(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (F.normalize(a, dim=-1), F.cosine_similarity(a, b), torch.cdist(a, b), F.pairwise_distance(a, b),
            torch.outer(a[0], b[0]), torch.addmm(a[:, :3], a, b.T[:, :3]), F.mse_loss(a, b), F.l1_loss(a, b, reduction="none"))


def size_arith_fn(x: torch.Tensor) -> torch.Tensor:
    b, t, d = x.shape
    y = x.reshape(b * t, d)
    y = y / (t * d) + x.numel()
    return y.view(b, t * d)[:, : d * (t - 1)]


def list_input_fn(xs: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    return torch.cat(xs, dim=1) * y[:, None] + sum(xs[1:], xs[0]).sum(1, keepdim=True)


def namedtuple_output_fn(x: torch.Tensor) -> Any:
    return x.max(dim=1)


def identity_and_duplicate_fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    z = x + y
    return x, z, z, y


def int_input_fn(x: torch.Tensor, n: int) -> torch.Tensor:
    return x[:, :n] * n + x.narrow(1, 1, n) - x.new_ones((n,))


def unfold_fold_fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cols = F.unfold(x, kernel_size=2, stride=2)
    return cols, F.fold(cols, (x.size(2), x.size(3)), kernel_size=2, stride=2)


def ellipsis_mask_assign_fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = x.clone()
    y[y < 0] = 0.0
    y[..., -1] = y[..., 0] * 2
    z = x[None, ..., None, 1]
    return y, z


def index_put_fn(x: torch.Tensor, idx: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    y = x.clone()
    y[idx] = v[: idx.numel()]
    y[:, idx[0]] += 1.0
    z = x.clone()
    z.index_put_((idx,), torch.ones(()), accumulate=True)
    w = x.masked_scatter(x > 0, v.abs())
    return y, z, w, x.index_add(0, idx, v[: idx.numel()])


def nonzero_fn(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    rows, cols = torch.where(x > 0)
    return rows, cols, torch.nonzero(x > 0.5), x[x.sum(1) > 0].sum(0), (x > 0).any(1), (x > -3).all()


def grid_sample_fn(img: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(img.size()), align_corners=False)
    return F.grid_sample(img, grid, align_corners=False)


# -- the case table -------------------------------------------------------------------------------

# A case that hits a known Kiln bug carries `fails=` or `bad_graph=` with the cause: a strict
# xfail, so it turns into a failure once the bug is fixed.  None are open today.


@dataclass(frozen=True)
class Case:
    name: str
    factory: Callable[[], Any]                          # a module (put in eval mode) or a function
    inputs: Callable[[], tuple[Any, ...]]               # example inputs (the trace's)
    inputs2: Optional[Callable[[], tuple[Any, ...]]]    # another batch size / sequence length
    fails: Optional[str] = None       # a Kiln bug breaks tracing or running: both tests xfail
    bad_graph: Optional[str] = None   # a Kiln bug in the graph only: the graph test xfails


def _r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def _ids(*shape: int) -> torch.Tensor:
    return torch.randint(1, 20, shape)


def _mask(*shape: int) -> torch.Tensor:
    return torch.rand(*shape) > 0.5


def _pad_mask(b: int, t: int) -> torch.Tensor:
    """Random padding positions, never the first one (a fully masked row would be all NaN)."""
    return _mask(b, t) & (torch.arange(t) > 0)


def _bag_inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _ids(3 * batch), torch.arange(0, 3 * batch, 3)


def _bn2d() -> nn.Module:
    bn = nn.BatchNorm2d(6)
    _randomize_bn(bn)
    return nn.Sequential(nn.Conv2d(3, 6, 3), bn)


def _conv1d() -> nn.Module:
    return nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 4, 5, stride=2))


def _conv2d() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 4, 3, dilation=2))


def _conv2d_same() -> nn.Module:
    return nn.Conv2d(4, 8, 3, padding="same", groups=2, padding_mode="reflect")


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(0.3), nn.Linear(16, 3))


CASES = [
    Case("conv1d", _conv1d, lambda: (_r(2, 3, 16),), lambda: (_r(5, 3, 21),)),
    Case("conv2d_strided_dilated", _conv2d, lambda: (_r(2, 3, 16, 16),), lambda: (_r(3, 3, 20, 18),)),
    Case("conv2d_groups_padding_same", _conv2d_same, lambda: (_r(2, 4, 9, 9),), lambda: (_r(4, 4, 7, 11),)),
    Case("conv_transpose2d", lambda: nn.Sequential(nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), nn.Tanh()),
         lambda: (_r(2, 8, 5, 5),), lambda: (_r(3, 8, 6, 7),)),
    Case("conv_bn_relu", ConvBNReLU, lambda: (_r(2, 3, 8, 8),), lambda: (_r(5, 3, 8, 8),)),
    Case("batchnorm2d", _bn2d, lambda: (_r(2, 3, 6, 6),), lambda: (_r(4, 3, 6, 6),)),
    Case("layernorm", lambda: nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16)),
         lambda: (_r(2, 7, 16),), lambda: (_r(3, 4, 16),)),
    Case("groupnorm", lambda: nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(4, 8)),
         lambda: (_r(2, 3, 5, 5),), lambda: (_r(6, 3, 4, 7),)),
    Case("instancenorm", lambda: nn.Sequential(nn.InstanceNorm2d(3, affine=True), nn.InstanceNorm2d(3)),
         lambda: (_r(2, 3, 6, 6),), lambda: (_r(3, 3, 5, 8),)),
    Case("pools", Pools, lambda: (_r(2, 3, 16, 16),), lambda: (_r(3, 3, 12, 20),)),
    Case("adaptive_pools", AdaptivePools, lambda: (_r(2, 3, 9, 8),), lambda: (_r(4, 3, 12, 10),)),
    Case("conv_classifier_view_batch", ConvClassifier, lambda: (_r(2, 1, 8, 8),), lambda: (_r(7, 1, 8, 8),)),
    Case("lstm_batch_first", lambda: LSTMTagger(True), lambda: (_r(2, 5, 6),), lambda: (_r(4, 3, 6),)),
    Case("lstm_seq_first", lambda: LSTMTagger(False), lambda: (_r(5, 2, 6),), lambda: (_r(3, 4, 6),)),
    Case("lstm_bidirectional_with_state", BiLSTMWithState, lambda: (_r(4, 2, 5), _r(2, 2, 7), _r(2, 2, 7)),
         lambda: (_r(6, 3, 5), _r(2, 3, 7), _r(2, 3, 7))),
    Case("gru", GRUModel, lambda: (_r(2, 5, 6),), lambda: (_r(3, 7, 6),)),
    Case("grucell_python_loop", GRUCellLoop, lambda: (_r(4, 2, 4),), lambda: (_r(4, 5, 4),)),
    Case("mha_batch_first_weights", lambda: MHASelfAttention(True, True), lambda: (_r(2, 5, 16),),
         lambda: (_r(3, 7, 16),)),
    Case("mha_seq_first_no_weights", lambda: MHASelfAttention(False, False), lambda: (_r(5, 2, 16),),
         lambda: (_r(4, 3, 16),)),
    Case("mha_cross_attention_key_padding", MHACrossAttention,
         lambda: (_r(2, 4, 16), _r(2, 6, 16), _pad_mask(2, 6)), lambda: (_r(3, 5, 16), _r(3, 7, 16), _pad_mask(3, 7))),
    Case("sdpa_attention", SDPAAttention, lambda: (_r(2, 5, 16),), lambda: (_r(3, 6, 16),)),
    Case("manual_attention_masked", ManualAttention, lambda: (_r(2, 5, 12), _pad_mask(2, 5)),
         lambda: (_r(3, 6, 12), _pad_mask(3, 6))),
    Case("manual_attention_2d_k_T", ManualAttention2D, lambda: (_r(5, 8),), lambda: (_r(9, 8),)),
    Case("transformer_encoder_layer", SmallTransformer, lambda: (_r(2, 5, 6),), lambda: (_r(3, 4, 6),)),
    Case("embedding", EmbeddingMean, lambda: (_ids(2, 7),), lambda: (_ids(5, 3),)),
    Case("embedding_bag", EmbeddingBagModel, lambda: _bag_inputs(2), lambda: _bag_inputs(5)),
    Case("indexing", lambda: indexing_fn, lambda: (_r(4, 5), torch.tensor([0, 2, 2]), _mask(4, 5)),
         lambda: (_r(6, 5), torch.tensor([1, 5, 0, 3]), _mask(6, 5))),
    Case("indexed_assignment", lambda: indexed_assign_fn, lambda: (_r(3, 4), _r(3, 4), _mask(3, 4)),
         lambda: (_r(6, 4), _r(6, 4), _mask(6, 4))),
    Case("inplace_on_intermediate", InplaceOps, lambda: (_r(2, 5),), lambda: (_r(7, 5),)),
    Case("views", lambda: views_fn, lambda: (_r(2, 3, 4, 5),), lambda: (_r(5, 3, 4, 5),)),
    Case("cat_stack_chunk_split", lambda: cat_stack_chunk_split_fn, lambda: (_r(2, 4), _r(2, 4)),
         lambda: (_r(6, 4), _r(6, 4))),
    Case("reductions", lambda: reductions_fn, lambda: (_r(2, 3, 4),), lambda: (_r(5, 3, 4),)),
    Case("masked_fill_where", lambda: masked_fn, lambda: (_r(2, 6), _r(2, 6)), lambda: (_r(5, 6), _r(5, 6))),
    Case("dict_output", DictOutput, lambda: (_r(2, 4),), lambda: (_r(5, 4),)),
    Case("list_and_tuple_outputs", ListTupleOutput, lambda: (_r(2, 6),), lambda: (_r(4, 6),)),
    Case("nested_tuple_dict_input", NestedInput,
         lambda: ((_r(2, 3), _r(2, 5)), {"scale": _r(2, 4), "shift": _r(4)}),
         lambda: ((_r(6, 3), _r(6, 5)), {"scale": _r(6, 4), "shift": _r(4)})),
    Case("residual_block", ResidualBlock, lambda: (_r(2, 4, 6, 6),), lambda: (_r(3, 4, 5, 7),)),
    Case("tiny_resnet", TinyResNet, lambda: (_r(2, 3, 8, 8),), lambda: (_r(4, 3, 6, 6),)),
    Case("interpolate_pixel_shuffle", UpsampleNet, lambda: (_r(2, 2, 4, 5),), lambda: (_r(3, 2, 4, 5),)),
    Case("pixel_shuffle_upsample_modules", SubPixelUpsample, lambda: (_r(2, 3, 4, 4),), lambda: (_r(5, 3, 6, 3),)),
    Case("einsum", lambda: einsum_fn, lambda: (_r(2, 3, 4), _r(2, 4, 5), _r(2, 6)),
         lambda: (_r(4, 3, 4), _r(4, 4, 5), _r(4, 6))),
    Case("function_several_inputs", lambda: multi_input_fn, lambda: (_r(2, 4), _r(4, 4), _r(4), 0.5),
         lambda: (_r(5, 4), _r(4, 4), _r(4), 0.5)),
    Case("function_float_input_changes", lambda: multi_input_fn, lambda: (_r(2, 4), _r(4, 4), _r(4), 0.5),
         lambda: (_r(5, 4), _r(4, 4), _r(4), 0.25)),
    Case("activations", lambda: activations_fn, lambda: (_r(2, 7),), lambda: (_r(6, 7),)),
    Case("shared_submodule_and_modulelist", SharedSubmodule, lambda: (_r(2, 4),), lambda: (_r(5, 4),)),
    Case("mlp_layernorm_gelu_dropout_eval", _mlp, lambda: (_r(2, 6),), lambda: (_r(9, 6),)),
    Case("positional_encoding_buffer_slice", PositionalEncoding, lambda: (_r(2, 5, 8),), lambda: (_r(3, 9, 8),)),
    Case("causal_mask_from_length", CausalSelfAttention, lambda: (_r(2, 5, 8),), lambda: (_r(3, 7, 8),)),
    Case("channel_shuffle", ChannelShuffle, lambda: (_r(2, 4, 3, 3),), lambda: (_r(5, 4, 2, 6),)),
    Case("gru_stacked_bidirectional", StackedGRU, lambda: (_r(5, 2, 4), _r(4, 2, 6)),
         lambda: (_r(3, 6, 4), _r(4, 6, 6))),
    Case("lstmcell_loop_unbind", LSTMCellLoop, lambda: (_r(2, 4, 3),), lambda: (_r(6, 4, 3),)),
    Case("lstm_packed_sequence", PackedLSTM, lambda: (_r(3, 5, 3), torch.tensor([5, 2, 4])),
         lambda: (_r(4, 5, 3), torch.tensor([1, 5, 3, 3]))),
    Case("transformer_encoder_decoder_padding", TransformerStack,
         lambda: (_r(2, 5, 8), _r(2, 3, 8), _pad_mask(2, 5)), lambda: (_r(3, 6, 8), _r(3, 4, 8), _pad_mask(3, 6))),
    Case("submodule_method_and_moduledict", MethodCallOnSubmodule, lambda: (_r(2, 3),), lambda: (_r(5, 3),)),
    Case("cross_entropy_and_accuracy", ClassifierWithLoss, lambda: (_r(4, 5), torch.randint(0, 4, (4,))),
         lambda: (_r(9, 5), torch.randint(0, 4, (9,)))),
    Case("conv3d_bn3d_maxpool3d", Conv3dNet, lambda: (_r(2, 2, 4, 4, 4),), lambda: (_r(3, 2, 6, 4, 2),)),
    Case("conv1d_bn1d_pool1d_pad", Seq1d, lambda: (_r(2, 4, 9),), lambda: (_r(5, 4, 12),)),
    Case("gather_scatter_index_select", lambda: gather_scatter_fn,
         lambda: (_r(3, 4), torch.randint(0, 4, (3, 2))), lambda: (_r(5, 4), torch.randint(0, 4, (5, 2)))),
    Case("topk_sort_cumsum_flip_roll_repeat", lambda: sort_scan_fn, lambda: (_r(3, 4),), lambda: (_r(6, 4),)),
    Case("factories_with_traced_sizes", lambda: factories_fn, lambda: (_r(2, 3),), lambda: (_r(5, 3),)),
    Case("dtype_conversions", lambda: dtype_fn, lambda: (_r(2, 3), _ids(2, 3)), lambda: (_r(4, 3), _ids(4, 3))),
    Case("integer_ops", lambda: integer_ops_fn, lambda: (_r(2, 3), _ids(2, 3)), lambda: (_r(4, 3), _ids(4, 3))),
    Case("single_int_for_int_list", lambda: single_int_for_int_list_fn, lambda: (_r(3, 4),), lambda: (_r(5, 4),)),
    Case("similarity_and_losses", lambda: similarity_fn, lambda: (_r(3, 4), _r(3, 4)), lambda: (_r(6, 4), _r(6, 4))),
    Case("size_arithmetic", lambda: size_arith_fn, lambda: (_r(2, 3, 4),), lambda: (_r(5, 6, 4),)),
    Case("list_of_tensors_input", lambda: list_input_fn, lambda: ([_r(2, 3), _r(2, 3), _r(2, 3)], _r(2)),
         lambda: ([_r(5, 3), _r(5, 3), _r(5, 3)], _r(5))),
    Case("namedtuple_output", lambda: namedtuple_output_fn, lambda: (_r(2, 5),), lambda: (_r(4, 5),)),
    Case("identity_and_duplicate_outputs", lambda: identity_and_duplicate_fn, lambda: (_r(2, 3), _r(2, 3)),
         lambda: (_r(4, 3), _r(4, 3))),
    Case("int_input_changes", lambda: int_input_fn, lambda: (_r(2, 5), 2), lambda: (_r(3, 5), 3)),
    Case("unfold_fold", lambda: unfold_fold_fn, lambda: (_r(2, 3, 4, 6),), lambda: (_r(3, 3, 6, 4),)),
    Case("mask_and_ellipsis_assignment", lambda: ellipsis_mask_assign_fn, lambda: (_r(2, 3, 4),),
         lambda: (_r(5, 3, 4),)),
    Case("index_put_and_scatter", lambda: index_put_fn,
         lambda: (_r(4, 3), torch.tensor([0, 2]), _r(4, 3)), lambda: (_r(6, 3), torch.tensor([2, 5, 1]), _r(6, 3))),
    Case("nonzero_and_bool_reductions", lambda: nonzero_fn, lambda: (_r(3, 4),), lambda: (_r(7, 4),)),
    Case("affine_grid_sample", lambda: grid_sample_fn, lambda: (_r(2, 3, 5, 6), _r(2, 2, 3)),
         lambda: (_r(4, 3, 7, 5), _r(4, 2, 3))),
]


def _params(graph_test: bool) -> list[Any]:
    out = []
    for c in CASES:
        reason = c.fails or (c.bad_graph if graph_test else None)
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        out.append(pytest.param(c, id=c.name, marks=marks))
    return out


# -- checks ---------------------------------------------------------------------------------------


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, tuple):
        return tuple(_clone(o) for o in obj)
    if isinstance(obj, list):
        return [_clone(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj


def _make(case: Case) -> tuple[Any, list[tuple[Any, ...]]]:
    model = case.factory()
    if isinstance(model, nn.Module):
        model.eval()
    sets = [case.inputs()]
    if case.inputs2 is not None:
        sets.append(case.inputs2())
    return model, sets


def _jit_outputs(model: Any, args: tuple[Any, ...], example: tuple[Any, ...]) -> Any:
    """torch.jit.trace's answer on ``args`` (traced on ``example``).

    torch.jit.trace takes only tensors (and containers of them): Python scalars among the
    inputs are closed over, and the function re-traced for each set of scalar values."""
    scalar = [not isinstance(a, (torch.Tensor, tuple, list, dict)) for a in args]
    with suppress_jit_warnings():
        if not any(scalar):
            ts = torch.jit.trace(model, _clone(example), strict=False, check_trace=False)
            return ts(*_clone(args))

        def tensors_only(*tensors: Any) -> Any:
            it = iter(tensors)
            return model(*[a if s else next(it) for a, s in zip(args, scalar)])

        ts = torch.jit.trace(tensors_only, tuple(_clone(a) for a, s in zip(example, scalar) if not s),
                             strict=False, check_trace=False)
        return ts(*[_clone(a) for a, s in zip(args, scalar) if not s])


@pytest.mark.parametrize("case", _params(graph_test=False))
def test_outputs_match_eager_and_torch_jit(case: Case) -> None:
    model, sets = _make(case)
    traced = kiln.trace(model, _clone(sets[0]))
    with torch.no_grad():
        for args in sets:  # sets[1] has another batch size: sizes must not be baked in
            torch.testing.assert_close(traced(*_clone(args)), model(*_clone(args)))
        if has_torch_jit():
            for args in sets:
                expected = _jit_outputs(model, args, sets[0])
                got = traced(*_clone(args))
                if isinstance(got, list) and isinstance(expected, tuple):
                    expected = list(expected)
                torch.testing.assert_close(got, expected)


def _roundtrip(g: kiln.Graph) -> None:
    text = str(g)
    assert str(parse_graph(text)) == text
    verify(g)


@pytest.mark.parametrize("case", _params(graph_test=True))
def test_graphs_verify_and_roundtrip(case: Case) -> None:
    model, sets = _make(case)
    traced = kiln.trace(model, _clone(sets[0]))
    _roundtrip(traced.graph)
    _roundtrip(traced.inlined_graph)
    assert "def " in traced.code
    if isinstance(traced, kiln.ScriptModule):
        for _, sub in traced.named_modules():
            if isinstance(sub, kiln.ScriptModule) and "forward" in sub.method_names:
                _roundtrip(sub.graph)


def test_enough_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


# -- training through a trace ---------------------------------------------------------------------


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


TRAINABLE = {
    "mlp": (TrainableMLP, lambda: (_r(8, 6),)),
    "conv_bn": (ConvBNReLU, lambda: (_r(4, 3, 6, 6),)),
    "grucell": (GRUCellLoop, lambda: (_r(3, 4, 4),)),
    "lstm": (lambda: LSTMTagger(True), lambda: (_r(3, 4, 6),)),
    "sdpa_attention": (SDPAAttention, lambda: (_r(2, 5, 16),)),
    "transformer": (SmallTransformer, lambda: (_r(2, 5, 6),)),
}


@pytest.mark.parametrize("name", list(TRAINABLE))
def test_traced_module_trains_like_eager(name: str) -> None:
    factory, example = TRAINABLE[name]
    model = factory()
    model.eval()  # batch norm / dropout: a deterministic function on both sides
    eager = copy.deepcopy(model)  # before tracing: the trace shares the parameters of `model`
    traced = kiln.trace(model, example())
    assert {n for n, _ in traced.named_parameters()} == {n for n, _ in eager.named_parameters()}

    opt_t = torch.optim.SGD(traced.parameters(), lr=0.05, momentum=0.9)
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.05, momentum=0.9)
    for _ in range(4):
        x = example()
        target = torch.randn_like(_first(eager(*x)))
        for net, opt in ((traced, opt_t), (eager, opt_e)):
            opt.zero_grad()
            F.mse_loss(_first(net(*_clone(x))), target).backward()
            opt.step()
    for (name, p_t), (_, p_e) in zip(traced.named_parameters(), eager.named_parameters()):
        torch.testing.assert_close(p_t, p_e, msg=lambda m, name=name: f"{name}: {m}")
    # the trace shares its parameters with the module it traced, and they moved
    for p_m, p_t in zip(model.parameters(), traced.parameters()):
        assert p_m is p_t
    x = example()
    with torch.no_grad():
        torch.testing.assert_close(traced(*x), eager(*x))


# -- state, mutation and training mode ------------------------------------------------------------


def add_into_input(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x.add_(y)
    return x * 2


def test_inplace_on_an_input_mutates_the_callers_tensor() -> None:
    traced = kiln.trace(add_into_input, (_r(2, 3), _r(2, 3)))
    x, y = _r(4, 3), _r(4, 3)
    x_eager = x.clone()
    out_eager = add_into_input(x_eager, y)
    out = traced(x, y)
    torch.testing.assert_close(out, out_eager)
    torch.testing.assert_close(x, x_eager)


def test_batchnorm_in_training_mode_updates_running_stats() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU())
    model.train()
    eager = copy.deepcopy(model)
    traced = kiln.trace(model, (_r(4, 3, 6, 6),), check_trace=False)
    # tracing ran the module once: bring the shared buffers back to the eager copy's state
    model.load_state_dict(eager.state_dict())
    for batch in (3, 5):
        x = _r(batch, 3, 6, 6)
        torch.testing.assert_close(traced(x), eager(x))
    torch.testing.assert_close(model[1].running_mean, eager[1].running_mean)
    torch.testing.assert_close(model[1].running_var, eager[1].running_var)
    assert int(model[1].num_batches_tracked) == int(eager[1].num_batches_tracked)


def test_dropout_in_training_mode_draws_like_eager() -> None:
    model = nn.Sequential(nn.Linear(6, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, 4), nn.Dropout(0.2))
    model.train()
    traced = kiln.trace(model, (_r(4, 6),), check_trace=False)
    x = _r(7, 6)
    torch.manual_seed(123)
    out = traced(x)
    torch.manual_seed(123)
    torch.testing.assert_close(out, model(x))
    torch.manual_seed(124)
    assert not torch.allclose(traced(x), out)  # the mask is drawn at run time, not baked in


def test_forward_hook_on_submodule_is_traced() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).eval()
    model[0].register_forward_hook(lambda mod, args, out: out * 10)
    traced = kiln.trace(model, (_r(2, 3),))
    x = _r(5, 3)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
        if has_torch_jit():
            torch.testing.assert_close(traced(x), _jit_outputs(model, (x,), (_r(2, 3),)))
