"""Kiln's main job in a few lines: trace a model, look at its graph and code, run it."""

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


if __name__ == "__main__":
    main()
