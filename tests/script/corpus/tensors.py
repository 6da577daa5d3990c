"""torch.* functions, Tensor methods, indexing and index assignment, torch.nn.functional, devices, dtypes."""

# ruff: noqa: UP006, UP035

from typing import List, Tuple

import torch
import torch.nn.functional as F

from ._case import Case


def _seeded(*shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(sum(shape) * 7 + len(shape))
    return torch.randn(*shape, generator=g)


def creation(n: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    a = torch.zeros(n, 2)
    b = torch.ones(2, n, dtype=torch.int64)
    c = torch.full((n,), 1.5)
    d = torch.arange(0, n * 2, 2)
    e = torch.linspace(0.0, 1.0, n + 1)
    f = torch.eye(n)
    return a, b, c, d, e, f


def creation_like_and_tensor(x: torch.Tensor, xs: List[float]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.zeros_like(x), torch.ones_like(x) * 3, torch.tensor(xs), torch.tensor([1, 2, 3], dtype=torch.float64)


def reductions(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    values, indices = x.max(dim=1)
    return x.sum(), x.sum(0), x.mean(dim=-1, keepdim=True), values, indices, x.argmin(), torch.cumsum(x, dim=0)


def shape_ops(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (x.reshape(-1), x.view(x.shape[1], x.shape[0]), x.permute(1, 0), x.transpose(0, 1).contiguous(),
            x.unsqueeze(0).squeeze(0), x.flatten())


def cat_stack_split(x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor], List[torch.Tensor]]:
    c = torch.cat([x, y], dim=0)
    s = torch.stack([x, y], dim=1)
    parts = torch.split(c, 2)
    chunks = c.chunk(2, dim=1)
    return c, s, list(parts), list(chunks)


def expand_repeat(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return x.unsqueeze(1).expand(-1, 3), x.repeat(2), x.view(-1, 1) * x.view(1, -1)


def elementwise(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return x.exp(), torch.log(x.abs() + 1), x.clamp(-0.5, 0.5), torch.where(x > 0, x, x * 0.1), x.sigmoid(), torch.tanh(x).pow(2)


def matmul_family(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return a @ b, torch.mm(a, b), torch.matmul(a.unsqueeze(0), b).squeeze(0), torch.einsum("ij,jk->ik", a, b)


def comparisons_and_masks(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool, bool]:
    m = x > 0
    return m, x.masked_fill(m, 0.0), (x == 0) | (x < -1), bool(m.any()), bool(m.all())


def sort_topk(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    values, indices = torch.sort(x, descending=True)
    top_v, top_i = x.topk(2)
    return values, indices, top_v, top_i, torch.argsort(x)


def in_place_ops(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    y = x.clone()
    y.add_(1).mul_(2)
    z = x.clone()
    z.zero_()
    z.fill_(3.0)
    x.sub_(1)
    return y, z


def indexing_read(x: torch.Tensor, i: torch.Tensor, m: torch.Tensor) -> List[torch.Tensor]:
    return [x[0], x[-1], x[None, 0], x[..., 1], x[::2], x[1:, None, ::2], x[0, -1], x[i], x[:, i], x[m],
            x[-2:, 1:3]]


def indexing_write(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x[0] = 1
    x[:, 1] += y
    x[x > 8] = 0
    x[..., -1] = 7
    x[1:, :2] *= -1
    return x


def index_with_int_and_tensor(x: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    idx = torch.tensor([k, 0])
    return x[k], x[idx].sum(0)


def no_grad_block(x: torch.Tensor) -> Tuple[bool, bool, torch.Tensor]:
    with torch.no_grad():
        y = x * 2
    z = x * 3
    return y.requires_grad, z.requires_grad, y.detach() + z.detach()


def device_handling(x: torch.Tensor, d: torch.device) -> Tuple[torch.Tensor, bool, torch.device, bool]:
    y = x.to(d)
    return y + 1, y.device == d, y.device, x.is_cuda


def dtype_handling(x: torch.Tensor, dt: torch.dtype) -> Tuple[torch.Tensor, bool, bool, torch.Tensor, torch.Tensor]:
    y = x.to(dt)
    return y, y.dtype == torch.float64, x.is_floating_point(), torch.zeros(2, dtype=dt), x.to(dtype=torch.int32)


def shape_queries(x: torch.Tensor) -> Tuple[int, int, int, int, List[int], int]:
    return x.shape[0], x.size(1), x.dim(), x.numel(), list(x.shape), x.size(-1)


def scalar_extraction(x: torch.Tensor) -> Tuple[float, int, float, bool, List[float]]:
    flat: List[float] = x.flatten().tolist()
    return x.sum().item(), int(x.sum()), float(x[0, 0]), bool(x[0, 0] > 0), flat


def type_promotion(i: torch.Tensor, f: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return i + 1.5, i * f, i / 2, (i > 1).to(torch.int64) + i


def functional_activations(x: torch.Tensor) -> List[torch.Tensor]:
    return [F.relu(x), F.gelu(x), F.softmax(x, dim=-1), F.log_softmax(x, dim=0), F.leaky_relu(x, 0.2),
            F.silu(x), F.dropout(x, p=0.5, training=False)]


def functional_linear_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y = F.linear(x, w, b)
    return y, F.layer_norm(y, [y.shape[-1]]), F.normalize(y, dim=1)


def functional_conv_pool(x: torch.Tensor, w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    y = F.conv2d(x, w, padding=1)
    return y, F.max_pool2d(y, 2), F.avg_pool2d(x, kernel_size=2, stride=1), F.adaptive_avg_pool2d(y, [1, 1])


def functional_pad_interpolate(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (F.pad(x, [1, 1, 2, 0]), F.pad(x, [1, 1], mode="constant", value=-1.0),
            F.interpolate(x, scale_factor=2.0, mode="nearest"),
            F.interpolate(x, size=[5, 3], mode="bilinear", align_corners=False))


def functional_losses(x: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return F.mse_loss(x, target), F.cross_entropy(x, labels), F.l1_loss(x, target, reduction="sum")


def integer_tensors(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return x // 3, torch.remainder(x, 3), x & 6, x.bitwise_xor(x >> 1)


CASES = [
    Case(creation, [(3,), (1,)]),
    Case(creation_like_and_tensor, [(torch.arange(4.0).view(2, 2), [1.0, 2.5]), (torch.ones(3, dtype=torch.int64), [])]),
    Case(reductions, [(torch.arange(12.0).reshape(3, 4),), (_seeded(2, 5),)]),
    Case(shape_ops, [(torch.arange(6.0).reshape(2, 3),), (_seeded(4, 1),)]),
    Case(cat_stack_split, [(torch.arange(8.0).reshape(2, 4), torch.ones(2, 4)), (_seeded(3, 2), _seeded(3, 2) * 2)]),
    Case(expand_repeat, [(torch.arange(3.0),), (torch.tensor([5.0]),)]),
    Case(elementwise, [(_seeded(3, 4),), (torch.linspace(-2, 2, 5),)]),
    Case(matmul_family, [(_seeded(2, 3), _seeded(3, 4)), (torch.eye(2), torch.arange(4.0).view(2, 2))]),
    Case(comparisons_and_masks, [(torch.tensor([-2.0, 0.0, 1.0]),), (torch.ones(2, 2),)]),
    Case(sort_topk, [(torch.tensor([3.0, 1.0, 4.0, 1.5, 5.0]),), (torch.tensor([2.0, -2.0]),)]),
    Case(in_place_ops, [(torch.arange(3.0),), (torch.ones(2, 2),)]),
    Case(indexing_read, [(torch.arange(12.0).reshape(3, 4), torch.tensor([0, 2]), torch.tensor([True, False, True])),
                         (_seeded(4, 4), torch.tensor([3, 1, 1]), torch.tensor([False, True, False, True]))]),
    Case(indexing_write, [(torch.arange(12.0).reshape(3, 4), torch.ones(3)), (torch.zeros(2, 3), torch.tensor([5.0, 9.0]))]),
    Case(index_with_int_and_tensor, [(torch.arange(6.0).view(3, 2), 2), (torch.arange(6.0).view(3, 2), -1)]),
    Case(no_grad_block, [(torch.ones(2, requires_grad=True),), (torch.arange(3.0),)]),
    Case(device_handling, [(torch.arange(3.0), torch.device("cpu"))]),
    Case(dtype_handling, [(torch.arange(3.0), torch.float64), (torch.arange(3), torch.int16)]),
    Case(shape_queries, [(torch.zeros(2, 3),), (torch.zeros(4, 1, 5),)]),
    Case(scalar_extraction, [(torch.arange(4.0).view(2, 2),), (torch.tensor([[-1.5, 2.0]]),)]),
    Case(type_promotion, [(torch.arange(4), torch.full((4,), 0.5)), (torch.tensor([7, -3]), torch.tensor([2.0, 2.0]))]),
    Case(functional_activations, [(_seeded(2, 5),), (torch.linspace(-3, 3, 7),)]),
    Case(functional_linear_norm, [(_seeded(3, 4), _seeded(5, 4), _seeded(5)), (torch.ones(1, 4), torch.ones(5, 4), torch.zeros(5))]),
    Case(functional_conv_pool, [(_seeded(1, 2, 4, 4), _seeded(3, 2, 3, 3)), (torch.ones(2, 2, 6, 6), torch.ones(3, 2, 3, 3))]),
    Case(functional_pad_interpolate, [(torch.arange(12.0).view(1, 2, 2, 3),), (_seeded(2, 1, 3, 3),)]),
    Case(functional_losses, [(_seeded(4, 3), _seeded(4, 3) * 0.5, torch.tensor([0, 2, 1, 1])),
                             (torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([2, 0]))]),
    Case(integer_tensors, [(torch.arange(-5, 6),), (torch.tensor([[100, 7], [8, 9]]),)]),
]
