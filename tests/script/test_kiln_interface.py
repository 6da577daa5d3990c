"""``kiln.interface``: class interfaces (an attribute, parameter, result, list element or field
holds an object of any script class implementing it; a method call on it runs the method of
the object's class at run time) and module interfaces (a submodule may be any module
implementing it), compiled by ``kiln.script`` and compared with eager Python and with
``torch.jit.script`` of the same classes; saved for TorchScript and loaded back."""

# TorchScript reads typing names in annotations; no future import here.
# ruff: noqa: UP006, UP035

import functools
import io
from typing import Dict, List

import pytest
import torch
from torch import Tensor, nn

import kiln


@kiln.interface
class Shape:
    def area(self) -> float:
        pass

    def grown(self, by: float) -> Tensor:
        pass


class Square:
    def __init__(self, side: float) -> None:
        self.side = side

    def area(self) -> float:
        return self.side * self.side

    def grown(self, by: float) -> Tensor:
        self.side = self.side + by          # objects are shared: the change is seen everywhere
        return torch.full((2,), self.side)


class Rect:
    def __init__(self, w: float, h: float) -> None:
        self.w = w
        self.h = h

    def area(self) -> float:
        return self.w * self.h

    def grown(self, by: float) -> Tensor:
        return torch.tensor([self.w + by, self.h + by])


class Holder:
    """A script class with an interface-typed field."""

    def __init__(self, inner: Shape) -> None:
        self.inner = inner

    def double_area(self) -> float:
        return 2.0 * self.inner.area()


@kiln.interface
class Layer(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        pass


class Doubler(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * 2


class Shift(nn.Module):
    def __init__(self, d: float) -> None:
        super().__init__()
        self.d = d

    def forward(self, x: Tensor) -> Tensor:
        return x + self.d


def total_area(shapes: List[Shape]) -> float:
    s = 0.0
    for sh in shapes:
        s += sh.area()
    return s


def first(shapes: List[Shape]) -> Shape:
    return shapes[0]


class Scene(nn.Module):
    main: Shape
    shapes: List[Shape]
    layer: Layer

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.main = Square(2.0)
        self.shapes = [Square(1.0), Rect(2.0, 3.0)]
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        a = self.main.area() + total_area(self.shapes) + Holder(first(self.shapes)).double_area()
        return self.layer(x) * a + self.main.grown(0.5).sum()

    @torch.jit.export
    def replace(self, w: float, h: float) -> None:
        if w == h:
            self.main = Square(w)
        else:
            self.main = Rect(w, h)

    @torch.jit.export
    def areas(self) -> List[float]:
        out = [self.main.area()]
        for s in self.shapes:
            out.append(s.area())
        return out

    @torch.jit.export
    def current(self) -> Shape:
        return self.main


@functools.cache
def _declare_for_torchscript() -> None:
    """The same classes declared to torch.jit (once per process)."""
    torch.jit.interface(Shape)
    torch.jit.interface(Layer)
    for cls in (Square, Rect, Holder):
        torch.jit.script(cls)


def _steps(m) -> list[object]:
    """Calls on a Scene, including ones that replace the interface-typed attribute."""
    x = torch.arange(4.0)
    out: list[object] = [m(x), m.areas()]
    m.replace(3.0, 3.0)
    out += [m(x), m.areas()]
    m.replace(1.5, 4.0)
    out += [m(x), m.areas(), m.current().area()]
    return out


def _assert_same(got: list[object], want: list[object]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, Tensor):
            torch.testing.assert_close(g, w)
        else:
            assert g == pytest.approx(w)


@pytest.mark.parametrize("layer", [Doubler, lambda: Shift(0.25)], ids=["doubler", "shift"])
def test_interfaces_match_eager_and_torchscript(jit, layer) -> None:
    want = _steps(Scene(layer()))
    _assert_same(_steps(kiln.script(Scene(layer()))), want)
    _declare_for_torchscript()
    _assert_same(_steps(jit.script(Scene(layer()))), want)


def test_dispatch_is_on_the_run_time_class() -> None:
    m = kiln.script(Scene(Doubler()))
    graph = str(m.graph)
    assert 'prim::CallMethod[name="area"]' in graph and "InterfaceType<" in graph
    assert type(m.current()).__name__ == "ScriptObject"          # converted when scripted
    assert m.current().area() == 4.0                             # compiled methods, callable from Python
    m.replace(2.0, 5.0)
    assert m.current().area() == 10.0
    assert m.areas() == [10.0, 1.0, 6.0]


class Shared(nn.Module):
    main: Shape
    shapes: List[Shape]

    def __init__(self) -> None:
        super().__init__()
        sq = Square(1.0)
        self.main = sq
        self.shapes = [sq, Rect(1.0, 1.0)]

    def forward(self, x: Tensor) -> Tensor:
        self.main.grown(1.0)
        return x * self.shapes[0].area()


def test_an_object_held_twice_stays_one_object() -> None:
    x = torch.ones(2)
    m = kiln.script(Shared())
    torch.testing.assert_close(m(x), Shared()(x))
    assert m.main is m.shapes[0]
    blob = kiln.serialize(m)
    loaded = kiln.load(blob)
    assert loaded.main is loaded.shapes[0]
    torch.testing.assert_close(loaded(x), m(x))


def test_functions_take_and_return_interface_values(jit) -> None:
    fn = kiln.script(total_area)
    shapes = [Square(2.0), Rect(1.0, 3.0)]
    assert fn(shapes) == total_area(shapes) == 7.0          # Python objects dispatch too
    assert kiln.script(first)(shapes) is shapes[0]
    _declare_for_torchscript()
    assert jit.script(total_area)([Square(2.0), Rect(1.0, 3.0)]) == 7.0


def test_saved_for_torchscript_and_loaded_back(jit) -> None:
    m = kiln.script(Scene(Shift(1.0)))
    m.replace(2.0, 3.0)
    blob = kiln.serialize(m)
    code = kiln.load(blob).code
    assert "def forward" in code
    _declare_for_torchscript()
    x = torch.arange(4.0)
    ts = jit.load(io.BytesIO(blob))
    torch.testing.assert_close(ts(x), m(x))
    _assert_same(_steps(ts), _steps(kiln.load(blob)))
    again = kiln.serialize(kiln.load(blob))
    assert kiln.serialize(kiln.load(again)) == again


def test_saved_interfaces_are_written_as_torchscript_writes_them() -> None:
    blob = kiln.serialize(kiln.script(Scene(Doubler())))
    from kiln.serialization.archive import open_archive
    reader = open_archive(blob)
    code = "\n".join(reader.read(n).decode() for n in reader.names() if n.endswith(".py"))
    assert "class Shape(Interface):\n  def area(self) -> float:\n    pass\n" \
           "  def grown(self, by: float) -> Tensor:\n    pass\n" in code
    assert "class Layer(ModuleInterface):\n  def forward(self, x: Tensor) -> Tensor:\n    pass\n" in code
    assert "  main : __torch__." in code and ".Shape\n" in code
    assert "  layer : __torch__." in code and ".Layer\n" in code


class Mixed(nn.Module):
    """Interface values in local variables (joined by an ``if``), lists and dicts built by code."""

    shapes: List[Shape]
    named: Dict[str, Shape]

    def __init__(self) -> None:
        super().__init__()
        self.shapes = []
        self.named = {"r": Rect(1.0, 2.0)}

    def forward(self, n: int) -> float:
        for i in range(n):
            self.shapes.append(Square(float(i)))
        s: Shape = Square(1.0)
        if n > 2:
            s = Rect(2.0, 2.0)
        self.named["s"] = s
        if n > 4:
            self.named["q"] = Square(0.5)
        out = 0.0
        for sh in self.shapes:
            out += sh.area()
        for k in self.named:
            out += self.named[k].area()
        return out


def _mixed_steps(m) -> list[float]:
    return [m(1), m(3), m(5), m(0)]


def test_interface_values_in_variables_lists_and_dicts(jit) -> None:
    want = _mixed_steps(Mixed())
    _assert_same(_mixed_steps(kiln.script(Mixed())), want)
    _declare_for_torchscript()
    _assert_same(_mixed_steps(jit.script(Mixed())), want)
    m = kiln.script(Mixed())
    m(3)
    blob = kiln.serialize(m)
    _assert_same(_mixed_steps(jit.load(io.BytesIO(blob))), _mixed_steps(kiln.load(blob)))


# -- what is refused -----------------------------------------------------------------------------

class NoGrow:
    def __init__(self) -> None:
        self.k = 1.0

    def area(self) -> float:
        return self.k


class IntArea:
    def __init__(self) -> None:
        self.k = 1

    def area(self) -> int:
        return self.k

    def grown(self, by: float) -> Tensor:
        return torch.zeros(1)


class OtherName:
    def __init__(self) -> None:
        pass

    def area(self) -> float:
        return 1.0

    def grown(self, amount: float) -> Tensor:
        return torch.zeros(1)


class HoldsBad(nn.Module):
    main: Shape

    def __init__(self, obj: object) -> None:
        super().__init__()
        self.main = obj

    def forward(self, x: Tensor) -> Tensor:
        return x * self.main.area()


@pytest.mark.parametrize(("obj", "why"), [
    (NoGrow, "it has no method grown()"),
    (IntArea, "its method area() -> int does not match the interface's area() -> float"),
    (OtherName, "its method grown(amount: float) -> Tensor does not match the interface's "
                "grown(by: float) -> Tensor"),
])
def test_attribute_of_a_class_that_does_not_implement(obj, why: str) -> None:
    with pytest.raises(kiln.CompileError) as info:
        kiln.script(HoldsBad(obj()))
    message = str(info.value)
    assert f"attribute 'main' of HoldsBad is expected to be Shape (an interface), but class {obj.__name__} " \
           "does not implement it" in message
    assert why in message


class AssignsBad(nn.Module):
    main: Shape

    def __init__(self) -> None:
        super().__init__()
        self.main = Square(1.0)

    def forward(self, x: Tensor) -> Tensor:
        self.main = NoGrow()
        return x


class CallsOutside(nn.Module):
    main: Shape

    def __init__(self) -> None:
        super().__init__()
        self.main = Square(1.0)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.main.side


class WrongLayer(nn.Module):
    def forward(self, x: Tensor, y: int) -> Tensor:
        return x


class Stack(nn.Module):
    layer: Layer

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


def test_code_assigning_an_object_that_does_not_implement() -> None:
    with pytest.raises(kiln.CompileError) as info:
        kiln.script(AssignsBad())
    e = info.value
    assert e.filename == __file__ and "self.main = NoGrow()" in str(e)
    assert "class NoGrow does not implement it: it has no method grown()" in e.cause


def test_interface_values_have_only_the_interface_methods() -> None:
    with pytest.raises(kiln.CompileError, match="interface Shape has no method 'side'"):
        kiln.script(CallsOutside())


def test_submodule_that_does_not_implement_the_module_interface() -> None:
    assert kiln.script(Stack(Doubler()))(torch.ones(2)).tolist() == [2.0, 2.0]
    with pytest.raises(kiln.CompileError, match=r"submodule 'layer' of Stack is declared Layer \(a module "
                                                r"interface\), but WrongLayer does not implement it: its "
                                                r"method forward\(x: Tensor, y: int\)"):
        kiln.script(Stack(WrongLayer()))


def test_interface_decorator_refuses_what_is_not_an_interface() -> None:
    with pytest.raises(kiln.CompileError, match="takes a class"):
        kiln.interface(total_area)

    class Base:
        pass

    class Derived(Base):
        def area(self) -> float:
            pass

    with pytest.raises(kiln.CompileError, match="must derive directly from object"):
        kiln.interface(Derived)
    with pytest.raises(kiln.CompileError, match="Shape is an interface: it has no objects"):
        kiln.script(make_shape)


def make_shape() -> float:
    return Shape().area()
