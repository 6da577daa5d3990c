"""TorchScript's builtins on lists, dicts and strings, under TorchScript's names.

List operators are generic over the element type ``t`` (``aten::append.t``), except where
TorchScript gives one overload per element type (``aten::remove.int``, ``aten::sort.str``).
Dict operators have one overload per key type, named after it (``aten::keys.str``,
``aten::__getitem__.Dict_int``).  Strings are Python strings (TorchScript's are bytes, so
only ASCII text behaves the same there).  See :mod:`kiln.ir.builtins` for the semantics rules.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Optional

from kiln.ir.builtins import Emit, builtin, call, method, named

_ELEMS = ("int", "float", "bool", "Tensor", "str")   # TorchScript's typed list overloads
_KEYS = ("str", "int", "bool", "float", "complex", "Tensor")


def _fn(name: str, body: Callable[..., Any]) -> Callable[..., Any]:
    return named(body, name, __name__)


def _index(n: Any, a: list[str]) -> str:
    return f"{a[0]}[{a[1]}]"


def _slice(n: Any, a: list[str]) -> str:
    return f"{a[0]}[{a[1]}:{a[2]}:{a[3]}]"


def _compare(symbol: str) -> Emit:
    return lambda n, a: f"({a[0]} {symbol} {a[1]})"


def _sort(n: Any, a: list[str]) -> str:
    return f"{a[0]}.sort(reverse={a[1]})"


# -- lists ------------------------------------------------------------------------------------------

def set_item(lst: list[Any], idx: int, el: Any) -> list[Any]:
    lst[idx] = el
    return lst


def append(lst: list[Any], el: Any) -> list[Any]:
    lst.append(el)
    return lst


def extend(lst: list[Any], other: list[Any]) -> None:
    lst.extend(other)


def insert(lst: list[Any], idx: int, el: Any) -> None:
    lst.insert(idx, el)


def pop(c: Any, key: Any = -1, *default: Any) -> Any:
    """``l.pop(idx)`` (``idx`` defaults to -1), ``d.pop(key)``, ``d.pop(key, default)``."""
    return c.pop(key, *default)


def clear(c: Any) -> None:
    c.clear()


def delete(c: Any, key: Any) -> None:
    del c[key]


def reverse(lst: list[Any]) -> None:
    lst.reverse()


def sort(lst: list[Any], reverse: bool = False) -> None:
    lst.sort(reverse=reverse)


def copy(c: Any) -> Any:
    return c.copy()


def to_list(seq: Any) -> list[Any]:
    return list(seq)


def add_inplace(lst: list[Any], other: list[Any]) -> list[Any]:
    lst += other
    return lst


def repeat(lst: list[Any], n: int) -> list[Any]:
    return lst * n


def repeat_right(n: int, lst: list[Any]) -> list[Any]:
    return n * lst


def repeat_inplace(lst: list[Any], n: int) -> list[Any]:
    lst *= n
    return lst


def slice_(seq: Any, start: Optional[int] = None, end: Optional[int] = None, step: int = 1) -> Any:
    return seq[start:end:step]


def contains(container: Any, item: Any) -> bool:
    return item in container


def sum_float(values: list[Any]) -> float:
    return float(sum(values))


_LIST_OPS: tuple[tuple[str, Callable[..., Any], Optional[Emit]], ...] = (
    ("aten::len.t(t[] a) -> int", len, call("len")),
    ("aten::len.any(Any[] a) -> int", len, call("len")),
    ("aten::__getitem__.t(t[](a) list, int idx) -> t(*)", operator.getitem, _index),
    ("aten::select.t(t[](a) list, int idx) -> t(*)", operator.getitem, _index),
    ("aten::_set_item.t(t[](a!) l, int idx, t(b -> *) el) -> t[](a!)", set_item, None),
    ("aten::append.t(t[](a!) self, t(c -> *) el) -> t[](a!)", append, None),
    ("aten::extend.t(t[](a!) self, t[] other) -> ()", extend, method("extend")),
    ("aten::insert.t(t[](a!) self, int idx, t(b -> *) el) -> ()", insert, method("insert")),
    ("aten::pop.t(t[](a!) self, int idx=-1) -> t(*)", pop, method("pop")),
    ("aten::clear.t(t[](a!) self) -> ()", clear, method("clear")),
    ("aten::Delete.t(t[](a!) self, int idx) -> ()", delete, lambda n, a: f"del {a[0]}[{a[1]}]"),
    ("aten::reverse.t(t[](a!) self) -> ()", reverse, method("reverse")),
    ("aten::sort.any(t[](a!) self, bool reverse=False) -> ()", sort, _sort),
    ("aten::sorted.any(t[](a) self) -> t[]", sorted, call("sorted")),
    ("aten::copy.t(t[](a) self) -> t[]", copy, method("copy")),
    ("aten::list.t(t[] l) -> t[]", to_list, call("list")),
    ("aten::list(str t) -> str[]", to_list, call("list")),
    ("aten::add.t(t[] a, t[] b) -> t[]", operator.add, lambda n, a: f"({a[0]} + {a[1]})"),
    ("aten::add_.t(t[](a!) self, t[] b) -> t[]", add_inplace, None),
    ("aten::mul.left_t(t[] l, int n) -> t[]", repeat, lambda n, a: f"({a[0]} * {a[1]})"),
    ("aten::mul.right_(int n, t[] l) -> t[]", repeat_right, lambda n, a: f"({a[0]} * {a[1]})"),
    ("aten::mul_.t(t[](a!) l, int n) -> t[](a!)", repeat_inplace, None),
    ("aten::slice.t(t[] l, int? start=None, int? end=None, int step=1) -> t[]", slice_, _slice),
    ("aten::sum.int(int[] self) -> int", sum, call("sum")),
    ("aten::sum.float(float[] self) -> float", sum_float, None),
    ("aten::sum.complex(complex[] self) -> complex", sum, None),
    ("aten::sum.bool(bool[] self) -> int", sum, call("sum")),
    *((f"aten::any.{t}({t}[] self) -> bool", any, call("any")) for t in ("str", "int", "float", "bool")),
    *((f"aten::all.{t}({t}[] self) -> bool", all, call("all")) for t in ("int", "float", "bool")),
    *((f"aten::__contains__.{t}_list({t}[] l, {t} item) -> bool", contains,
       lambda n, a: f"({a[1]} in {a[0]})") for t in ("int", "str", "float")),
)

for _schema, _impl, _emit in _LIST_OPS:
    builtin(_schema, _impl, _emit)

for _t in _ELEMS:
    builtin(f"aten::remove.{_t}({_t}[](a!) self, {_t} el) -> ()", list.remove, method("remove"))
    builtin(f"aten::index.list_{_t}({_t}[] self, {_t} el) -> int", list.index, method("index"))
    builtin(f"aten::count.{_t}({_t}[] self, {_t} el) -> int", list.count, method("count"))
    builtin(f"aten::sort.{_t}({_t}[](a!) self, bool reverse=False) -> ()", sort, _sort)
    builtin(f"aten::sorted.{_t}({_t}[](a) input) -> {_t}[]", sorted, call("sorted"))
    if _t != "Tensor":
        for _op, _fn_cmp, _sym in (("eq", operator.eq, "=="), ("ne", operator.ne, "!=")):
            builtin(f"aten::{_op}.{_t}_list({_t}[] a, {_t}[] b) -> bool", _fn_cmp, _compare(_sym))
for _op, _fn_cmp in (("eq", operator.eq), ("ne", operator.ne)):
    builtin(f"aten::{_op}.Tensor_list(Tensor[] a, Tensor[] b) -> bool", _fn_cmp)


# -- dicts ------------------------------------------------------------------------------------------

def dict_set_item(d: dict[Any, Any], key: Any, value: Any) -> None:
    d[key] = value


def keys(d: dict[Any, Any]) -> list[Any]:
    return list(d)


def values(d: dict[Any, Any]) -> list[Any]:
    return list(d.values())


def items(d: dict[Any, Any]) -> list[tuple[Any, Any]]:
    return list(d.items())


def get(d: dict[Any, Any], key: Any, default: Any = None) -> Any:
    return d.get(key, default)


def setdefault(d: dict[Any, Any], key: Any, default: Any) -> Any:
    return d.setdefault(key, default)


def popitem(d: dict[Any, Any]) -> tuple[Any, Any]:
    return d.popitem()


def update(d: dict[Any, Any], other: dict[Any, Any]) -> None:
    d.update(other)


def to_dict(src: Any = ()) -> dict[Any, Any]:
    return dict(src)


_DICT_OPS = (  # {K}: the key type; overload names as TorchScript spells them
    ("aten::len.Dict_{K}(Dict({K}, t) self) -> int", len, call("len")),
    ("aten::__getitem__.Dict_{K}(Dict({K}, t) self, {K} key) -> t(*)", operator.getitem, _index),
    ("aten::_set_item.{K}(Dict({K}, t)(a!) l, {K}(b -> *) idx, t(c -> *) v) -> ()", dict_set_item,
     lambda n, a: f"{a[0]}[{a[1]}] = {a[2]}"),
    ("aten::keys.{K}(Dict({K}, t) self) -> {K}[](*)", keys, call("list")),
    ("aten::values.{K}(Dict({K}, t) self) -> t[](*)", values, None),
    ("aten::items.{K}(Dict({K}, t) self) -> (({K}, t)[])", items, None),
    ("aten::get.{K}(Dict({K}, t) self, {K} key) -> t(*)?", get, method("get")),
    ("aten::get.default_{K}(Dict({K}, t) self, {K} key, t default_value) -> t(*)", get, method("get")),
    ("aten::setdefault.{K}(Dict({K}, t)(a!) self, {K}(b -> *) key, t(c -> *) default_value) -> t(*)",
     setdefault, method("setdefault")),
    ("aten::pop.Dict_{K}(Dict({K}, t)(a!) self, {K} key) -> t(*)", pop, method("pop")),
    ("aten::pop.Dict_default_{K}(Dict({K}, t)(a!) self, {K} key, t default_value) -> t(*)", pop,
     method("pop")),
    ("aten::popitem.{K}(Dict({K}, t)(a!) self) -> (({K}, t))", popitem, method("popitem")),
    ("aten::update.{K}(Dict({K}, t)(a!) self, Dict({K}, t)(a!) to_add) -> ()", update, method("update")),
    ("aten::clear.{K}(Dict({K}, t)(a!) self) -> ()", clear, method("clear")),
    ("aten::copy.Dict_{K}(Dict({K}, t)(a) self) -> Dict({K}, t)", copy, method("copy")),
    ("aten::__contains__.{K}(Dict({K}, t) dict, {K} key) -> bool", contains,
     lambda n, a: f"({a[1]} in {a[0]})"),
    ("aten::Delete.Dict_{K}(Dict({K}, t)(a!) self, {K} key) -> ()", delete,
     lambda n, a: f"del {a[0]}[{a[1]}]"),
    ("aten::dict.{K}(({K}, tVal)[] inputs) -> Dict({K}, tVal)", to_dict, call("dict")),
    ("aten::dict.Dict_{K}(Dict({K}, t)(a) self) -> Dict({K}, t)", to_dict, call("dict")),
)

builtin("aten::dict() -> Dict(str, Tensor)", to_dict, lambda n, a: "{}")
for _template, _impl, _emit in _DICT_OPS:
    for _k in _KEYS:
        builtin(_template.replace("{K}", _k), _impl, _emit)


# -- strings ----------------------------------------------------------------------------------------

def _end(s: str, end: int) -> int:
    """TorchScript's ``end`` argument: a negative one counts from one past the end, so the
    default ``-1`` means the whole string (``s.find(x)`` searches all of ``s``)."""
    return max(0, len(s) + end + 1) if end < 0 else end


def find(s: str, sub: str, start: int = 0, end: int = -1) -> int:
    return s.find(sub, start, _end(s, end))


def rfind(s: str, sub: str, start: int = 0, end: int = -1) -> int:
    return s.rfind(sub, start, _end(s, end))


def str_index(s: str, sub: str, start: int = 0, end: int = -1) -> int:
    return s.index(sub, start, _end(s, end))


def rindex(s: str, sub: str, start: int = 0, end: int = -1) -> int:
    return s.rindex(sub, start, _end(s, end))


def str_count(s: str, sub: str, start: int = 0, end: int = -1) -> int:
    return s.count(sub, start, _end(s, end))


def startswith(s: str, prefix: str, start: int = 0, end: int = -1) -> bool:
    return s.startswith(prefix, start, _end(s, end))


def endswith(s: str, suffix: str, start: int = 0, end: int = -1) -> bool:
    return s.endswith(suffix, start, _end(s, end))


def split(s: str, separator: Optional[str] = None, max: int = -1) -> list[str]:
    return s.split(separator, max)


def rsplit(s: str, separator: str = " ", max: int = -1) -> list[str]:
    return s.rsplit(separator, max)


_WHITESPACE = " \n\t\f\v"   # TorchScript's default for strip (it leaves "\r" alone)


def strip(s: str, chars: str = _WHITESPACE) -> str:
    return s.strip(chars)


def lstrip(s: str, chars: str = _WHITESPACE) -> str:
    return s.lstrip(chars)


def rstrip(s: str, chars: str = _WHITESPACE) -> str:
    return s.rstrip(chars)


def join(sep: str, values: list[str]) -> str:
    return sep.join(values)


def percent_format(fmt: str, *args: Any) -> str:
    """``fmt % values``: TorchScript passes the values as one input (a tuple, or one value)."""
    return fmt % (args[0] if len(args) == 1 else args)


def _str_methods() -> list[tuple[str, Callable[..., Any], Optional[Emit]]]:
    rows: list[tuple[str, Callable[..., Any], Optional[Emit]]] = []
    for name in ("isdigit isalpha isalnum isspace islower isupper istitle isdecimal isnumeric "
                 "isidentifier isprintable").split():
        rows.append((f"aten::{name}(str self) -> bool", getattr(str, name), method(name)))
    for name in "lower upper title capitalize swapcase".split():
        rows.append((f"aten::{name}(str self) -> str", getattr(str, name), method(name)))
    for name, fn in (("strip", strip), ("lstrip", lstrip), ("rstrip", rstrip)):
        rows.append((f'aten::{name}(str self, str chars=" \\n\\t\\f\\v") -> str', fn, method(name)))
    for name in "center ljust rjust".split():
        rows.append((f'aten::{name}(str self, int width, str fillchar=" ") -> str', getattr(str, name),
                     method(name)))
    searches: tuple[tuple[str, Callable[..., Any], str], ...] = (
        ("find", find, "int"), ("rfind", rfind, "int"), ("index.str", str_index, "int"),
        ("rindex", rindex, "int"), ("count", str_count, "int"), ("startswith", startswith, "bool"),
        ("endswith", endswith, "bool"))
    for name, impl, ret in searches:
        rows.append((f"aten::{name}(str self, str substr, int start=0, int end=-1) -> {ret}", impl, None))
    return rows


_STR_OPS: tuple[tuple[str, Callable[..., Any], Optional[Emit]], ...] = (
    ("aten::len.str(str s) -> int", len, call("len")),
    ("aten::__getitem__.str(str s, int index) -> str", operator.getitem, _index),
    ("prim::StringIndex(str string, int index) -> str", operator.getitem, _index),
    ("aten::slice.str(str string, int? start=None, int? end=None, int step=1) -> str", slice_, _slice),
    ("aten::add.str(str a, str b) -> str", operator.add, lambda n, a: f"({a[0]} + {a[1]})"),
    ("aten::split.str(str self, str? separator=None, int max=-1) -> str[]", split, method("split")),
    ("aten::rsplit(str self, str separator=\" \", int max=-1) -> str[]", rsplit, method("rsplit")),
    ("aten::join(str self, str[] values) -> str", join, method("join")),
    ("aten::replace(str self, str old, str new, int max=-1) -> str", str.replace, method("replace")),
    ("aten::splitlines(str self, bool keepends=False) -> str[]", str.splitlines, method("splitlines")),
    ("aten::zfill(str self, int width) -> str", str.zfill, method("zfill")),
    ("aten::expandtabs(str self, int tabsize=8) -> str", str.expandtabs, method("expandtabs")),
    ("aten::partition(str self, str separator) -> (str, str, str)", str.partition, method("partition")),
    ("aten::rpartition(str self, str separator) -> (str, str, str)", str.rpartition, method("rpartition")),
    ("aten::ord(str string) -> int", ord, call("ord")),
    ("aten::chr(int i) -> str", chr, call("chr")),
    ("aten::hex(int i) -> str", hex, call("hex")),
    ("aten::bin(int i) -> str", bin, call("bin")),
    ("aten::oct(int i) -> str", oct, call("oct")),
    ("aten::str(t elem) -> str", str, call("str")),
    ("aten::format(str self, ...) -> str", str.format, method("format")),
    ("aten::percentFormat(str self, ...) -> str", percent_format, None),
    *_str_methods(),
)

for _schema, _impl, _emit in _STR_OPS:
    builtin(_schema, _impl, _emit)
