"""Kiln's main job in a few lines: trace or script a model, look at its graph and code, run it."""

import torch

import kiln


class MyCell(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        new_h = torch.tanh(self.linear(x) + h)
        return new_h, new_h


def main() -> None:
    torch.manual_seed(0)
    cell = MyCell()
    x, h = torch.rand(3, 4), torch.rand(3, 4)
    traced = kiln.trace(cell, (x, h))

    print("== traced.graph ==")
    print(traced.graph)
    print("== traced.code ==")
    print(traced.code)

    x2, h2 = torch.rand(5, 4), torch.rand(5, 4)   # another batch size: sizes are not baked in
    ours, expected = traced(x2, h2), cell(x2, h2)
    torch.testing.assert_close(ours, expected)
    print(f"Kiln and eager PyTorch agree on a new input; max |diff| = "
          f"{(ours[0] - expected[0]).abs().max().item():.2e}")


def clip_norm(x: torch.Tensor, max_norm: float) -> torch.Tensor:
    n = x.norm()
    if n > max_norm:          # data-dependent: a script keeps this branch, a trace would bake it
        x = x * (max_norm / n)
    return x


def script_demo() -> None:
    scripted = kiln.script(clip_norm)
    print("== scripted.code ==")
    print(scripted.code)
    for x in (torch.ones(4), torch.ones(4) * 10):
        torch.testing.assert_close(scripted(x, 5.0), clip_norm(x, 5.0))
    print("kiln.script keeps the branch: both paths agree with eager PyTorch")


def relu_mlp(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.relu(x * 2.0 + 1.0) @ w


def optimize_demo() -> None:
    x, w = torch.randn(64, 64), torch.randn(64, 8)
    fn = kiln.script(relu_mlp)
    with torch.no_grad():
        graph = fn.graph_for(x, w)      # runs once, specializes to these inputs, fuses
        print("== graph_for: the pointwise chain is one fused kernel, the matmul stays outside ==")
        print("\n".join(line for line in str(graph).splitlines() if "prim::Constant" not in line))
        torch.testing.assert_close(fn(x, w), relu_mlp(x, w))
    print("the specialized, fused function agrees with eager PyTorch")


def archive_demo() -> None:
    """Save a scripted module as a TorchScript .pt archive and load it back; where this PyTorch
    still has torch.jit, load Kiln's archive there too."""
    import os
    import tempfile
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    m = kiln.script(model)
    x = torch.randn(3, 4)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.pt")
        kiln.save(m, path, extra_files={"meta.txt": "quickstart"})
        loaded = kiln.load(path)
        torch.testing.assert_close(loaded(x), model(x))
        print(f"== archive: {os.path.getsize(path)} bytes; kiln.load gives the same outputs ==")
        print(loaded.code)
        try:
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ts = torch.jit.load(path)
            torch.testing.assert_close(ts(x), model(x))
            print("torch.jit.load reads Kiln's archive and agrees")
        except (AttributeError, RuntimeError):
            print("(this PyTorch has no torch.jit to cross-check with)")


if __name__ == "__main__":
    main()
    script_demo()
    optimize_demo()
    archive_demo()
