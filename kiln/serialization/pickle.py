"""The pickle layer of TorchScript archives: a safe allow-list pickle VM and a deterministic pickler.

TorchScript stores a module's object tree (``data.pkl``), the tensors its code bakes in
(``constants.pkl``) and debug tables as protocol-2 pickles.  Python's own unpickler would import
and call whatever a pickle names, which makes loading a model equivalent to running it.  This
module reads the same bytes without ever importing or calling anything the archive names:

* **Globals are data, not imports.**  ``GLOBAL``/``STACK_GLOBAL`` of a module under ``__torch__``
  (the archive's own classes, e.g. ``__torch__.torch.nn.modules.linear Linear``) becomes a
  :class:`ClassRef`, a name only.  Any other global must be a key of the ``globals`` mapping the
  caller passes (:func:`kiln.serialization.tensors.torch_globals` is the one Kiln uses); that
  object is pushed instead.  Everything else (``os.system``, ``builtins.eval``, copy_reg aliases,
  ``pkgutil.resolve_name``, ...) is refused *at the GLOBAL opcode*, before anything could be
  called, with a :class:`PickleError` naming it.  A mapping value that is a
  :class:`RejectedGlobal` is a known-but-unsupported global (quantized tensors, an exotic
  storage type): its own error is raised at the GLOBAL instead.
* **Only allow-listed callables are called.**  ``REDUCE`` calls an object only if a GLOBAL of this
  load produced it from ``globals``; on a :class:`ClassRef` with one argument it makes a
  :class:`PickledEnum` (TorchScript's enum form).  ``NEWOBJ`` works only on a :class:`ClassRef`
  with no arguments and makes a :class:`PickledObject`, whose state the following ``BUILD`` sets
  exactly once.  No ``__setstate__``, ``__reduce__`` or class of the archive ever runs.
* **Only data opcodes.**  The opcodes TorchScript writers use plus the harmless data opcodes of
  protocols 0-4 are read.  Object-building forms that name classes inline (``INST``, ``OBJ``,
  ``NEWOBJ_EX``), extension registries (``EXT1/2/4``), the text ``PERSID``, and protocol-5
  buffers raise :class:`UnsupportedFeature`.  ``PROTO`` must come first, once, and be <= 4.
* **Containers are mutated only while they are being built.**  ``APPEND(S)``/``SETITEM(S)``/
  ``ADDITEMS`` work only on a list/dict/set made by this load and not yet placed inside another
  container, and ``BUILD`` only on a fresh :class:`PickledObject`.  Once a value is inside
  another container it is *sealed*; this both refuses CVE-2026-24747-style in-place rewrites and
  keeps the nesting depth of every container exact, so deep structures are refused up front.
* **Bounded.**  Every length field is checked against the bytes that remain before anything is
  sliced or allocated; op count, MARK/container nesting depth and memo size are capped by
  :class:`~kiln.serialization.limits.Limits`.  The memo is a dict, and memo references share the
  object (a DAG, never a copy), so "billion laughs" pickles stay as small as their file.  Cycles
  (``L.append(L)``) are allowed and terminate; walkers of the result must expect them.
* **One error tree.**  Every rejection is a :class:`~kiln.errors.ModelFormatError` subclass whose
  message names the record and the byte offset of the opcode at fault; no ``IndexError``,
  ``struct.error``, ``RecursionError``... escapes.

:func:`dump_pickle` is the writer: deterministic protocol-2 output in TorchScript's own forms
(see its docstring), so ``torch.jit.load`` reads what Kiln saves.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, cast

from kiln.errors import ModelFormatError, PickleError, ResourceLimitExceeded, UnsupportedFeature
from kiln.serialization.limits import Limits

__all__ = [
    "Call", "ClassRef", "Global", "GlobalRef", "MarkedTuple", "PickledEnum", "PickledObject",
    "RejectedGlobal", "dump_pickle", "load_pickle",
]

_DEFAULT_LIMITS = Limits()
_TORCH_MODULE = "__torch__"
_MAX_GLOBAL_NAME = 1024      # longest module or class name a GLOBAL may spell


# -- the values a load produces (and a dump consumes) -------------------------------------------

@dataclass(frozen=True)
class ClassRef:
    """A class of the archive (a GLOBAL from a ``__torch__`` module), by name only.

    ``qualname`` is the module part and the class name joined by a dot, e.g.
    ``__torch__.torch.nn.modules.linear.Linear``; every part is a Python identifier."""

    qualname: str


@dataclass
class PickledObject:
    """An object of an archive class: ``NEWOBJ`` on a :class:`ClassRef`, then ``BUILD(state)``.

    TorchScript's state is a dict of attribute name -> value (or a custom ``__getstate__``
    result); it is kept as loaded, never applied to any Python class."""

    qualname: str
    state: Any = None


@dataclass(frozen=True)
class PickledEnum:
    """An enum value of an archive class: ``REDUCE`` of a :class:`ClassRef` on the bare value."""

    qualname: str
    value: Any


class Global(Protocol):
    """An allow-listed callable: the only things ``REDUCE`` ever calls.

    ``call`` gets the REDUCE argument tuple as the archive spelled it and must validate it; it
    raises :class:`~kiln.errors.ModelFormatError` subclasses for bad arguments."""

    def call(self, args: tuple[Any, ...]) -> Any: ...


@dataclass(frozen=True)
class RejectedGlobal:
    """A ``globals`` entry for a global Kiln knows but refuses (quantized tensors, float8
    storages...): the load fails at its GLOBAL with ``error(message)``, so the user learns
    *what* is unsupported instead of a bare "not allowed"."""

    error: type[ModelFormatError]
    message: str

    def call(self, args: tuple[Any, ...]) -> Any:
        raise self.error(self.message)


# -- writer-only values ----------------------------------------------------------------------------

@dataclass(frozen=True)
class GlobalRef:
    """A reference to ``module.name`` written as a (memoized) ``GLOBAL`` -- e.g. the storage class
    ``torch FloatStorage`` inside a tensor's persistent id."""

    module: str
    name: str


@dataclass(eq=False)
class Call:
    """``GLOBAL module name``, the pickled ``args`` tuple, ``REDUCE``: how TorchScript spells
    tensors, typed lists, dicts with a type tag, devices and complex numbers.

    ``memoize`` writes a ``BINPUT`` after the ``REDUCE`` even when the call appears only once (as
    TorchScript does for tensors); a Call that appears more than once is memoized anyway, so the
    second occurrence is a ``BINGET`` of the same object."""

    module: str
    name: str
    args: tuple[Any, ...]
    memoize: bool = False


class MarkedTuple(tuple[Any, ...]):
    """A tuple the writer spells ``MARK ... TUPLE`` whatever its length.

    TorchScript writes a tensor's argument, size and stride tuples this way (and short tuples
    elsewhere as ``TUPLE1/2/3``); using it keeps Kiln's bytes identical to TorchScript's.  The
    reader returns plain tuples."""

    __slots__ = ()


# -- opcodes -----------------------------------------------------------------------------------------

_OPCODE_NAMES: dict[int, str] = {
    0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT",
    0x49: "INT", 0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2", 0x4E: "NONE",
    0x50: "PERSID", 0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING", 0x54: "BINSTRING",
    0x55: "SHORT_BINSTRING", 0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND", 0x62: "BUILD",
    0x63: "GLOBAL", 0x64: "DICT", 0x7D: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET", 0x68: "BINGET",
    0x69: "INST", 0x6A: "LONG_BINGET", 0x6C: "LIST", 0x5D: "EMPTY_LIST", 0x6F: "OBJ", 0x70: "PUT",
    0x71: "BINPUT", 0x72: "LONG_BINPUT", 0x73: "SETITEM", 0x74: "TUPLE", 0x29: "EMPTY_TUPLE",
    0x75: "SETITEMS", 0x47: "BINFLOAT", 0x80: "PROTO", 0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2",
    0x84: "EXT4", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE",
    0x8A: "LONG1", 0x8B: "LONG4", 0x42: "BINBYTES", 0x43: "SHORT_BINBYTES",
    0x8C: "SHORT_BINUNICODE", 0x8D: "BINUNICODE8", 0x8E: "BINBYTES8", 0x8F: "EMPTY_SET",
    0x90: "ADDITEMS", 0x91: "FROZENSET", 0x92: "NEWOBJ_EX", 0x93: "STACK_GLOBAL", 0x94: "MEMOIZE",
    0x95: "FRAME", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
}

# Known opcodes Kiln refuses: they name classes inline, consult registries, take the text form
# of persistent ids, or carry out-of-band protocol-5 buffers.  TorchScript writes none of them.
_UNSUPPORTED = frozenset({0x50, 0x69, 0x6F, 0x82, 0x83, 0x84, 0x92, 0x96, 0x97, 0x98})

_MAX_PROTOCOL = 4

# Opcodes handled by one parameterised method: code -> (method name, arguments).  The others are
# handled by the method ``_op_<name>``.
_HANDLERS: dict[int, tuple[str, tuple[Any, ...]]] = {
    0x4E: ("_push", (None,)), 0x88: ("_push", (True,)), 0x89: ("_push", (False,)),
    0x29: ("_push", ((),)),
    0x4B: ("_fixed_int", (1, False)), 0x4D: ("_fixed_int", (2, False)), 0x4A: ("_fixed_int", (4, True)),
    0x8A: ("_long", (1,)), 0x8B: ("_long", (4,)),
    0x58: ("_counted", (4, "utf-8")), 0x8C: ("_counted", (1, "utf-8")), 0x8D: ("_counted", (8, "utf-8")),
    0x54: ("_counted", (4, "ascii")), 0x55: ("_counted", (1, "ascii")),     # py2 str: ASCII as Python
    0x42: ("_counted", (4, None)), 0x43: ("_counted", (1, None)), 0x8E: ("_counted", (8, None)),
    0x85: ("_tuple_n", (1,)), 0x86: ("_tuple_n", (2,)), 0x87: ("_tuple_n", (3,)),
    0x5D: ("_empty", (list,)), 0x7D: ("_empty", (dict,)), 0x8F: ("_empty", (set,)),
    0x71: ("_put_n", (1,)), 0x72: ("_put_n", (4,)), 0x94: ("_memoize", ()),
    0x68: ("_get_n", (1,)), 0x6A: ("_get_n", (4,)),
}


def _short(text: str, limit: int = 80) -> str:
    """``repr`` of archive-supplied text, cut so a hostile name cannot flood a message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _is_identifier_path(text: str) -> bool:
    return bool(text) and all(map(str.isidentifier, text.split(".")))


# -- the VM ----------------------------------------------------------------------------------------

# The types of the containers a load makes (``_VM._new`` and the fast paths of ``_VM._loop``):
# only values of these exact types can have a depth or be sealed, so sealing skips every other
# value (numbers, strings, tensors...) without looking it up.
_CONTAINER_TYPES = frozenset({tuple, list, dict, set, frozenset, PickledObject, PickledEnum})
_UINT32 = struct.Struct("<I").unpack_from
# The opcodes that push a constant (their ``_push`` entries in ``_HANDLERS``), for ``_VM._loop``.
_PUSHED: dict[int, Any] = {code: args[0] for code, (method, args) in _HANDLERS.items() if method == "_push"}


class _VM:
    """One load.  Handlers are small methods found through a 256-entry dispatch table
    (``_TABLE``); each reads its operands at ``self.pos`` and works on ``self.stack``.  The
    opcodes TorchScript writes most also have a fast path in ``_loop``."""

    def __init__(self, data: bytes, record: str, globals: Mapping[tuple[str, str], Any],
                 persistent_load: Callable[[Any], Any], limits: Limits) -> None:
        self.data = data
        self.record = record
        self.globals = globals
        self.persistent_load = persistent_load
        self.limits = limits
        self.pos = 0
        self.op_pos = 0
        self.op = 0
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        # Bookkeeping for the containers this load made (tuples, lists, dicts, sets, objects,
        # enums), by id: their nesting depth, and which are sealed (placed inside another
        # container, so no longer mutable).  ``kept`` holds the containers so their ids stay
        # unique for the whole load.  Plain ints in a dict and a set, not a record object per
        # container: that allocation (and the garbage-collector passes it triggers) was a good
        # part of a load.
        self.depths: dict[int, int] = {}
        self.sealed: set[int] = set()
        self.kept: list[Any] = []
        self.fresh: dict[int, PickledObject] = {}      # NEWOBJ results still waiting for BUILD
        self.callables: dict[int, tuple[Any, str]] = {}  # id -> (allow-listed object, its name)
        self.seen_proto = False

    # -- driver ----------------------------------------------------------------------------------
    def run(self) -> Any:
        try:
            return self._loop()
        except ModelFormatError:
            raise
        except MemoryError as e:
            raise self._error(ResourceLimitExceeded, "out of memory while unpickling") from e
        except RecursionError as e:
            raise self._error(ResourceLimitExceeded, "value nested too deeply") from e
        except Exception as e:   # a defect guard (every handler checks first): the contract is one error tree
            raise self._error(PickleError, f"malformed pickle ({type(e).__name__}: {e})") from e

    def _loop(self) -> Any:  # noqa: C901  (one flat dispatch over the hot opcodes, by design)
        # The opcodes TorchScript's pickles are made of are handled right here, on local
        # variables: a method call (and three attribute updates) per opcode was most of the time
        # of a load.  Each fast path below mirrors its handler, which stays the reference:
        #
        # * it runs only when none of the handler's checks can fail; otherwise (truncated
        #   operand, unset memo entry, underflow, a limit reached...) it falls through, having
        #   changed nothing, to the table handler, which raises exactly as before;
        # * ``pos`` stays at the opcode until its fast path is done (operands are read at
        #   ``pos + 1``...), and ``self.pos``/``self.op_pos``/``self.op`` are set before any
        #   handler runs and before anything is raised (the ``except`` below covers the
        #   unexpected, e.g. MemoryError), so errors name the same opcode and offset as before.
        #
        # Keep each fast path in step with the handler named in its comment.  They are tried in
        # order of how often TorchScript's data.pkl uses them.
        data, table = self.data, _TABLE
        stack, marks, memo = self.stack, self.marks, self.memo
        depths, sealed, keep = self.depths, self.sealed, self.kept.append
        seal = sealed.add
        callables, fresh, persistent_load = self.callables, self.fresh, self.persistent_load
        push = stack.append
        containers = _CONTAINER_TYPES
        pushed = _PUSHED
        uint32 = _UINT32
        end = len(data)
        max_ops = self.limits.max_pickle_ops
        max_depth = self.limits.max_pickle_depth
        max_memo = self.limits.max_memo_entries
        pos = op = 0
        try:
            for _ in range(max_ops):            # limits.max_pickle_ops: the loop counts the opcodes
                try:
                    op = data[pos]
                except IndexError:              # pos == end: no STOP
                    break
                if op == 0x68:                                  # BINGET: _get_n(1)
                    try:
                        push(memo[data[pos + 1]])
                    except (IndexError, KeyError):              # no operand, or unset entry
                        pass
                    else:
                        pos += 2
                        continue
                elif op == 0x28:                                # MARK: _op_mark
                    if len(marks) < max_depth:
                        marks.append(len(stack))
                        pos += 1
                        continue
                elif op == 0x4B:                                # BININT1: _fixed_int(1, False)
                    if pos + 1 < end:
                        push(data[pos + 1])
                        pos += 2
                        continue
                elif op == 0x74:                                # TUPLE: _pop_mark, _new
                    if marks:
                        start = marks.pop()
                        items = stack[start:]
                        del stack[start:]
                        obj = tuple(items)
                        depth = 1                               # _seal_items, inline
                        for item in items:
                            if type(item) in containers:
                                item_depth = depths.get(key := id(item))
                                if item_depth is not None:
                                    seal(key)
                                    if item_depth >= depth:
                                        depth = item_depth + 1
                        if depth > max_depth:
                            self.op_pos, self.op = pos, op
                            self._check_depth(depth)
                        depths[id(obj)] = depth
                        keep(obj)
                        push(obj)
                        pos += 1
                        continue
                elif op == 0x52:                                # REDUCE of a global: _op_reduce
                    if len(stack) - (marks[-1] if marks else 0) >= 2:
                        args = stack[-1]
                        func = stack[-2]
                        entry = callables.get(id(func))
                        if entry is not None and type(args) is tuple and not isinstance(func, ClassRef):
                            del stack[-2:]
                            if (key := id(args)) in depths:     # _seal(args), inline
                                seal(key)
                            try:
                                result = func.call(args)
                            except Exception as e:
                                self.op_pos, self.op = pos, op
                                raise self._callback_error(entry[1], e) from e
                            push(result)
                            pos += 1
                            continue
                elif op == 0x71:                                # BINPUT: _put_n(1)
                    if pos + 1 < end and len(stack) > (marks[-1] if marks else 0):
                        key = data[pos + 1]
                        if key in memo or len(memo) < max_memo:
                            memo[key] = stack[-1]
                            pos += 2
                            continue
                elif op == 0x72:                                # LONG_BINPUT: _put_n(4)
                    if end - pos > 4 and len(stack) > (marks[-1] if marks else 0):
                        key = uint32(data, pos + 1)[0]
                        if key in memo or len(memo) < max_memo:
                            memo[key] = stack[-1]
                            pos += 5
                            continue
                elif op in pushed:                              # EMPTY_TUPLE, NEWFALSE, NONE, NEWTRUE: _push
                    push(pushed[op])
                    pos += 1
                    continue
                elif op == 0x58:                                # BINUNICODE: _counted(4, "utf-8")
                    if end - pos > 4:
                        size = uint32(data, pos + 1)[0]
                        if size <= end - pos - 5:
                            try:
                                text = data[pos + 5:pos + 5 + size].decode("utf-8")
                            except UnicodeDecodeError:
                                pass
                            else:
                                push(text)
                                pos += 5 + size
                                continue
                elif op == 0x51:                                # BINPERSID: _op_binpersid
                    if len(stack) > (marks[-1] if marks else 0):
                        pid = stack.pop()
                        if (key := id(pid)) in depths:      # _seal(pid), inline
                            seal(key)
                        try:
                            result = persistent_load(pid)
                        except Exception as e:
                            self.op_pos, self.op = pos, op
                            raise self._callback_error("persistent id", e) from e
                        push(result)
                        pos += 1
                        continue
                elif op == 0x7D or op == 0x5D:                  # EMPTY_DICT/EMPTY_LIST: _empty
                    if max_depth >= 1:
                        empty: dict[Any, Any] | list[Any] = {} if op == 0x7D else []
                        depths[id(empty)] = 1
                        keep(empty)
                        push(empty)
                        pos += 1
                        continue
                elif op == 0x4D:                                # BININT2: _fixed_int(2, False)
                    if end - pos > 2:
                        push(data[pos + 1] | data[pos + 2] << 8)
                        pos += 3
                        continue
                elif op == 0x81:                                # NEWOBJ: _op_newobj, _new
                    if len(stack) - (marks[-1] if marks else 0) >= 2 and max_depth >= 1:
                        args = stack[-1]
                        cls = stack[-2]
                        if isinstance(cls, ClassRef) and type(args) is tuple and not args:
                            del stack[-2:]
                            new_obj = PickledObject(cls.qualname)
                            fresh[key := id(new_obj)] = new_obj
                            depths[key] = 1
                            keep(new_obj)
                            push(new_obj)
                            pos += 1
                            continue
                elif op == 0x75:                                # SETITEMS: _op_setitems
                    if marks:
                        start = marks[-1]
                        target = stack[start - 1] if start > (marks[-2] if len(marks) > 1 else 0) else None
                        key = id(target)
                        if (type(target) is dict and key in depths and key not in sealed
                                and (len(stack) - start) % 2 == 0):
                            marks.pop()
                            items = stack[start:]
                            del stack[start:]
                            self.op_pos, self.op = pos, op      # (where _grow's error points)
                            self._grow(key, items)
                            try:                                # _set_items, pair by pair in C
                                target.update(zip(items[::2], items[1::2]))
                            except TypeError:                   # an unhashable key: its error
                                self.op_pos, self.op = pos, op
                                self._set_items(target, items)
                                raise
                            pos += 1
                            continue
                elif op == 0x62:                                # BUILD: _op_build, _grow
                    if len(stack) - (marks[-1] if marks else 0) >= 2:
                        built = stack[-2]
                        key = id(built)
                        if key in fresh and key not in sealed and isinstance(built, PickledObject):
                            state = stack.pop()
                            del fresh[key]
                            self.op_pos, self.op = pos, op      # (where _grow's error points)
                            self._grow(key, [state])
                            built.state = state
                            pos += 1
                            continue
                elif op == 0x65:                                # APPENDS: _op_appends
                    if marks:
                        start = marks[-1]
                        target = stack[start - 1] if start > (marks[-2] if len(marks) > 1 else 0) else None
                        key = id(target)
                        if type(target) is list and key in depths and key not in sealed:
                            marks.pop()
                            items = stack[start:]
                            del stack[start:]
                            self.op_pos, self.op = pos, op      # (where _grow's error points)
                            self._grow(key, items)
                            target.extend(items)
                            pos += 1
                            continue
                elif 0x85 <= op <= 0x87:                        # TUPLE1/2/3 (Kiln's writer): _tuple_n
                    start = len(stack) - (op - 0x84)
                    if start >= (marks[-1] if marks else 0):
                        items = stack[start:]
                        del stack[start:]
                        obj = tuple(items)
                        depth = self._seal_items(items)
                        if depth > max_depth:
                            self.op_pos, self.op = pos, op
                            self._check_depth(depth)
                        depths[id(obj)] = depth
                        keep(obj)
                        push(obj)
                        pos += 1
                        continue
                elif op == 0x6A:                                # LONG_BINGET: _get_n(4)
                    if end - pos > 4:
                        key = uint32(data, pos + 1)[0]
                        if key in memo:
                            push(memo[key])
                            pos += 5
                            continue
                # every other opcode, and a fast path that cannot proceed: the table handler
                self.pos, self.op_pos, self.op = pos + 1, pos, op
                handler = table[op]
                if handler is None:
                    if op in _UNSUPPORTED:
                        raise self._error(UnsupportedFeature,
                                          f"unsupported pickle opcode {_OPCODE_NAMES[op]}")
                    self._fail(f"unknown pickle opcode 0x{op:02x}")
                if handler[0](self, *handler[1]):
                    return stack.pop()
                pos = self.pos
            else:
                if pos < end:                   # one opcode more than limits.max_pickle_ops allows
                    self.op_pos, self.op = pos, op = pos, data[pos]
                    raise self._error(ResourceLimitExceeded,
                                      f"more than {max_ops} pickle opcodes (limits.max_pickle_ops)")
            op = -1
            self._end_of_data(pos)
        except BaseException:
            self.op_pos, self.op = pos, op
            raise

    def _end_of_data(self, pos: int) -> NoReturn:
        self.op_pos, self.op = pos, -1
        self._fail("pickle ends without STOP" if pos else "empty pickle")

    # -- errors ----------------------------------------------------------------------------------
    def _where(self) -> str:
        name = _OPCODE_NAMES.get(self.op, f"0x{self.op:02x}") if self.op >= 0 else "end of data"
        return f"{name} at byte offset {self.op_pos}"

    def _error(self, cls: type[ModelFormatError], what: str) -> ModelFormatError:
        return cls(f"{self.record}: {what} ({self._where()})")

    def _fail(self, what: str) -> NoReturn:
        raise self._error(PickleError, what)

    # -- reading operands --------------------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        if n < 0 or n > len(self.data) - self.pos:
            self._fail(f"length {n} runs past the end of the data ({len(self.data) - self.pos} bytes left)")
        start = self.pos
        self.pos += n
        return self.data[start:self.pos]

    def _uint(self, n: int) -> int:
        return int.from_bytes(self._read(n), "little")

    def _readline(self) -> bytes:
        nl = self.data.find(b"\n", self.pos)
        if nl < 0:
            self._fail("text operand without a newline")
        line = self.data[self.pos:nl]
        self.pos = nl + 1
        return line

    def _text_line(self, codec: str = "utf-8") -> str:
        try:
            return self._readline().decode(codec)
        except UnicodeDecodeError:
            self._fail(f"text operand is not valid {codec}")

    def _decode(self, raw: bytes, codec: str = "utf-8") -> str:
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            self._fail(f"string is not valid {codec}")

    def _parse_int(self, text: bytes, base: int = 10) -> int:
        try:
            return int(text, base)
        except ValueError:
            self._fail(f"bad integer literal {_short(text.decode('latin-1'))}")

    # -- the stack ---------------------------------------------------------------------------------
    def _floor(self) -> int:
        return self.marks[-1] if self.marks else 0

    def _pop(self) -> Any:
        if len(self.stack) <= self._floor():
            self._fail("stack underflow" if not self.marks else "stack underflow (would cross a MARK)")
        return self.stack.pop()

    def _top(self) -> Any:
        if len(self.stack) <= self._floor():
            self._fail("stack underflow" if not self.marks else "stack underflow (would cross a MARK)")
        return self.stack[-1]

    def _pop_n(self, n: int) -> list[Any]:
        if len(self.stack) - self._floor() < n:
            self._fail(f"stack underflow (needs {n} values)")
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def _pop_mark(self) -> list[Any]:
        if not self.marks:
            self._fail("no MARK to pop to")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    # -- containers: depth and sealing ---------------------------------------------------------------
    def _check_depth(self, depth: int) -> None:
        if depth > self.limits.max_pickle_depth:
            raise self._error(ResourceLimitExceeded, f"values nested more than {depth - 1} deep "
                                                     "(limits.max_pickle_depth)")

    def _seal_items(self, items: list[Any] | tuple[Any, ...]) -> int:
        """Seal the containers among ``items``; the depth of a container holding them (1 + the
        deepest of them, 1 if none).  ``_loop`` has a copy inline for TUPLE."""
        depth = 1
        depths, seal = self.depths, self.sealed.add
        for item in items:
            if type(item) in _CONTAINER_TYPES:
                item_depth = depths.get(key := id(item))
                if item_depth is not None:
                    seal(key)
                    if item_depth >= depth:
                        depth = item_depth + 1
        return depth

    def _new(self, obj: Any, items: list[Any] | tuple[Any, ...] = ()) -> Any:
        """Register a container made from ``items`` (which become sealed) and push it."""
        depth = self._seal_items(items) if items else 1
        if depth > self.limits.max_pickle_depth:
            self._check_depth(depth)
        self.depths[id(obj)] = depth
        self.kept.append(obj)
        self.stack.append(obj)
        return obj

    def _seal(self, value: Any) -> int:
        depth = self.depths.get(key := id(value))
        if depth is None:
            return 0
        self.sealed.add(key)
        return depth

    def _mutable(self, target: Any, kind: type, opcode_does: str) -> int:
        """The id of ``target``, checked to be a ``kind`` made by this load and not sealed."""
        key = id(target)
        if type(target) is not kind or key not in self.depths:
            self._fail(f"{opcode_does} on a {type(target).__name__}, "
                       f"not a {kind.__name__} made by this pickle")
        if key in self.sealed:
            self._fail(f"{opcode_does} on a {kind.__name__} already placed inside another value")
        return key

    def _grow(self, key: int, items: list[Any]) -> None:
        """Account for ``items`` added to the container ``key`` (they become sealed)."""
        depth = self._seal_items(items)
        if depth > self.depths[key]:
            self._check_depth(depth)
            self.depths[key] = depth

    # -- protocol framing --------------------------------------------------------------------------
    def _op_proto(self) -> None:
        if self.seen_proto:
            raise self._error(UnsupportedFeature, "duplicate PROTO")
        if self.op_pos != 0:
            raise self._error(UnsupportedFeature, "PROTO is not the first opcode")
        self.seen_proto = True
        version = self._uint(1)
        if version > _MAX_PROTOCOL:
            raise self._error(UnsupportedFeature, f"pickle protocol {version} (Kiln reads 0-{_MAX_PROTOCOL}; "
                                                  "TorchScript writes 2)")

    def _op_frame(self) -> None:
        size = self._uint(8)
        if size > len(self.data) - self.pos:
            self._fail(f"FRAME of {size} bytes runs past the end of the data")

    def _op_stop(self) -> bool:
        if self.marks:
            self._fail("STOP inside an open MARK")
        if len(self.stack) != 1:
            self._fail(f"STOP with {len(self.stack)} values on the stack (expected 1)")
        if self.fresh:
            obj = next(iter(self.fresh.values()))
            self._fail(f"object of class {_short(obj.qualname)} made by NEWOBJ never got its state (BUILD)")
        if self.pos != len(self.data):
            self._fail(f"{len(self.data) - self.pos} bytes of data after STOP")
        return True

    # -- stack manipulation --------------------------------------------------------------------------
    def _op_mark(self) -> None:
        if len(self.marks) >= self.limits.max_pickle_depth:
            raise self._error(ResourceLimitExceeded, f"more than {self.limits.max_pickle_depth} nested MARKs "
                                                     "(limits.max_pickle_depth)")
        self.marks.append(len(self.stack))

    def _op_pop(self) -> None:
        if len(self.stack) > self._floor() or not self.marks:
            self._pop()
        else:
            self._pop_mark()     # protocol 0's spelling of "discard the mark" (as Python's unpickler)

    def _op_pop_mark(self) -> None:
        self._pop_mark()

    def _op_dup(self) -> None:
        self.stack.append(self._top())

    # -- scalars, strings, bytes (parameterised by operand size; see _HANDLERS) -------------------
    def _push(self, value: Any) -> None:
        self.stack.append(value)

    def _fixed_int(self, size: int, signed: bool) -> None:
        self.stack.append(int.from_bytes(self._read(size), "little", signed=signed))

    def _long(self, size_bytes: int) -> None:
        # LONG1/LONG4; a negative LONG4 length reads as a huge unsigned one and fails the length check
        self.stack.append(int.from_bytes(self._read(self._uint(size_bytes)), "little", signed=True))

    def _counted(self, size_bytes: int, codec: str | None) -> None:
        raw = self._read(self._uint(size_bytes))
        self.stack.append(raw if codec is None else self._decode(raw, codec))

    def _op_int(self) -> None:
        line = self._readline()
        if line in (b"00", b"01"):          # protocol 0's False / True
            self.stack.append(line == b"01")
        else:
            self.stack.append(self._parse_int(line, 0))

    def _op_long(self) -> None:
        line = self._readline()
        self.stack.append(self._parse_int(line[:-1] if line.endswith(b"L") else line, 0))

    def _op_binfloat(self) -> None:
        self.stack.append(struct.unpack(">d", self._read(8))[0])

    def _op_float(self) -> None:
        line = self._readline()
        try:
            self.stack.append(float(line))
        except ValueError:
            self._fail(f"bad float literal {_short(line.decode('latin-1'))}")

    def _op_unicode(self) -> None:
        self.stack.append(self._text_line("raw-unicode-escape"))

    def _op_string(self) -> None:
        line = self._readline()
        if len(line) < 2 or line[0] != line[-1] or line[0] not in b"\"'":
            self._fail("STRING operand is not quoted")
        try:
            raw = codecs.escape_decode(line[1:-1])[0]
        except ValueError:
            self._fail("STRING operand has a bad escape")
        self.stack.append(self._decode(raw, "ascii"))

    # -- tuples ------------------------------------------------------------------------------------
    def _tuple_n(self, n: int) -> None:
        items = self._pop_n(n)
        self._new(tuple(items), items)

    def _op_tuple(self) -> None:
        items = self._pop_mark()
        self._new(tuple(items), items)

    def _empty(self, factory: Callable[[], Any]) -> None:
        self._new(factory())

    # -- lists -------------------------------------------------------------------------------------
    def _op_list(self) -> None:
        items = self._pop_mark()
        self._new(list(items), items)

    def _op_append(self) -> None:
        item = self._pop()
        target = self._top()
        self._grow(self._mutable(target, list, "APPEND"), [item])
        target.append(item)

    def _op_appends(self) -> None:
        items = self._pop_mark()
        target = self._top()
        self._grow(self._mutable(target, list, "APPENDS"), items)
        target.extend(items)

    # -- dicts -------------------------------------------------------------------------------------
    def _op_dict(self) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            self._fail("DICT with an odd number of items after its MARK")
        d: dict[Any, Any] = {}
        self._set_items(d, items)
        self._new(d, items)

    def _set_items(self, target: dict[Any, Any], items: list[Any]) -> None:
        try:
            for i in range(0, len(items), 2):
                target[items[i]] = items[i + 1]
        except TypeError:
            self._fail(f"unhashable dict key of type {type(items[i]).__name__}")

    def _op_setitem(self) -> None:
        items = self._pop_n(2)
        target = self._top()
        self._grow(self._mutable(target, dict, "SETITEM"), items)
        self._set_items(target, items)

    def _op_setitems(self) -> None:
        items = self._pop_mark()
        target = self._top()
        info = self._mutable(target, dict, "SETITEMS")
        if len(items) % 2:
            self._fail("SETITEMS with an odd number of items after its MARK")
        self._grow(info, items)
        self._set_items(target, items)

    # -- sets (protocol 4 data; TorchScript writes none) ---------------------------------------------
    def _op_additems(self) -> None:
        items = self._pop_mark()
        target = self._top()
        self._grow(self._mutable(target, set, "ADDITEMS"), items)
        self._add_to_set(target, items)

    def _op_frozenset(self) -> None:
        items = self._pop_mark()
        self._new(frozenset(self._add_to_set(set(), items)), items)

    def _add_to_set(self, target: set[Any], items: list[Any]) -> set[Any]:
        try:
            target.update(items)
        except TypeError:
            self._fail("unhashable set item")
        return target

    # -- memo --------------------------------------------------------------------------------------
    def _put_n(self, size: int) -> None:
        self._put(self._uint(size))

    def _get_n(self, size: int) -> None:
        self._get(self._uint(size))

    def _memoize(self) -> None:
        self._put(len(self.memo))

    def _put(self, index: int) -> None:
        if index not in self.memo and len(self.memo) >= self.limits.max_memo_entries:
            raise self._error(ResourceLimitExceeded, f"more than {self.limits.max_memo_entries} memo entries "
                                                     "(limits.max_memo_entries)")
        self.memo[index] = self._top()

    def _get(self, index: int) -> None:
        if index not in self.memo:
            self._fail(f"memo entry {index} was never set")
        self.stack.append(self.memo[index])

    def _op_put(self) -> None:
        index = self._parse_int(self._readline())
        if index < 0:
            self._fail("negative PUT index")
        self._put(index)

    def _op_get(self) -> None:
        self._get(self._parse_int(self._readline()))

    # -- globals and calls -------------------------------------------------------------------------
    def _op_global(self) -> None:
        module = self._text_line()
        name = self._text_line()
        self.stack.append(self._resolve(module, name))

    def _op_stack_global(self) -> None:
        name = self._pop()
        module = self._pop()
        if type(module) is not str or type(name) is not str:
            self._fail(f"STACK_GLOBAL with a {type(module).__name__} module and a {type(name).__name__} name "
                       "(both must be strings)")
        self.stack.append(self._resolve(module, name))

    def _resolve(self, module: str, name: str) -> Any:
        if len(module) > _MAX_GLOBAL_NAME or len(name) > _MAX_GLOBAL_NAME:
            self._fail("global name too long")
        if module == _TORCH_MODULE or module.startswith(_TORCH_MODULE + "."):
            if not (_is_identifier_path(module) and name.isidentifier()):
                self._fail(f"archive class name {_short(module + '.' + name)} is not a dotted identifier")
            return ClassRef(f"{module}.{name}")
        try:
            found = self.globals[(module, name)]
        except KeyError:
            self._fail(f"global {_short(module + '.' + name)} is not allowed")
        if isinstance(found, RejectedGlobal):
            raise self._error(found.error, found.message)
        self.callables[id(found)] = (found, f"{module}.{name}")
        return found

    def _op_reduce(self) -> None:
        args = self._pop()
        func = self._pop()
        if isinstance(func, ClassRef):
            if type(args) not in (int, float, str, bool):
                self._fail(f"enum {_short(func.qualname)} applied to a {type(args).__name__} "
                           "(expected a value)")
            self._new(PickledEnum(func.qualname, args))
            return
        entry = self.callables.get(id(func))
        if entry is None:
            self._fail(f"REDUCE on a {type(func).__name__}, which is not an allow-listed global")
        name = entry[1]
        if type(args) is not tuple:
            self._fail(f"REDUCE arguments of {name} are a {type(args).__name__}, not a tuple")
        self._seal(args)
        try:
            result = func.call(args)
        except Exception as e:
            raise self._callback_error(name, e) from e
        self.stack.append(result)

    def _op_newobj(self) -> None:
        args = self._pop()
        cls = self._pop()
        if not isinstance(cls, ClassRef):
            self._fail(f"NEWOBJ on a {type(cls).__name__}; only archive classes (__torch__.*) can be made")
        if type(args) is not tuple or args:
            self._fail("NEWOBJ with constructor arguments (TorchScript passes none)")
        obj = PickledObject(cls.qualname)
        self.fresh[id(obj)] = obj
        self._new(obj)

    def _op_build(self) -> None:
        state = self._pop()
        obj = self._top()
        if not isinstance(obj, PickledObject) or id(obj) not in self.fresh:
            self._fail(f"BUILD on a {type(obj).__name__}, not an object fresh from NEWOBJ")
        key = id(obj)
        if key in self.sealed:
            self._fail("BUILD on an object already placed inside another value")
        del self.fresh[key]
        self._grow(key, [state])
        obj.state = state

    def _op_binpersid(self) -> None:
        pid = self._pop()
        self._seal(pid)
        try:
            result = self.persistent_load(pid)
        except Exception as e:
            raise self._callback_error("persistent id", e) from e
        self.stack.append(result)

    def _callback_error(self, what: str, e: Exception) -> ModelFormatError:
        """The error for an allow-listed callable (a REDUCE global, ``persistent_load``) that
        raised ``e``: its own class for format errors, with this record and offset."""
        if isinstance(e, ModelFormatError):
            return self._error(type(e), f"{what}: {e}")
        if isinstance(e, (MemoryError, RecursionError)):
            return self._error(ResourceLimitExceeded, f"{what}: {type(e).__name__}")
        # an allow-listed function failed on hostile input: still a format error
        return self._error(PickleError, f"{what} failed: {type(e).__name__}: {e}")


def _dispatch_table() -> list[tuple[Callable[..., bool | None], tuple[Any, ...]] | None]:
    """``_VM``'s handlers by opcode: (method, its arguments after ``self``), None for opcodes
    Kiln refuses or does not know."""
    table: list[tuple[Callable[..., bool | None], tuple[Any, ...]] | None] = [None] * 256
    for code, name in _OPCODE_NAMES.items():
        method = getattr(_VM, "_op_" + name.lower(), None)
        if method is not None:
            table[code] = (method, ())
    for code, (method_name, args) in _HANDLERS.items():
        table[code] = (getattr(_VM, method_name), args)
    return table


_TABLE = _dispatch_table()


def load_pickle(data: bytes | bytearray | memoryview, *, record: str,
                globals: Mapping[tuple[str, str], Any],
                persistent_load: Callable[[Any], Any], limits: Limits = _DEFAULT_LIMITS) -> Any:
    """Unpickle ``data`` (the bytes of ``record``, named in every error) with the allow-list VM.

    ``globals`` maps ``(module, name)`` to :class:`Global` objects (or :class:`RejectedGlobal`);
    ``persistent_load`` receives each ``BINPERSID`` id.  Raises only
    :class:`~kiln.errors.ModelFormatError` subclasses; see the module docstring for the policy."""
    return _VM(bytes(data), record, globals, persistent_load, limits).run()


# -- the writer --------------------------------------------------------------------------------------

_RAW, _VALUE, _VALUE_NO_PID, _PUT, _GLOBAL = 0, 1, 2, 3, 4

# Calls whose argument tuple TorchScript always spells MARK ... TUPLE (others use TUPLE1/2/3).
_MARKED_CALLS = frozenset({
    ("torch._utils", "_rebuild_tensor_v2"), ("torch.jit._pickle", "build_intlist"),
    ("torch.jit._pickle", "build_doublelist"), ("torch.jit._pickle", "build_boollist"),
    ("torch.jit._pickle", "build_tensorlist"),
})
_INT64 = 1 << 63


def _children(value: Any) -> tuple[Any, ...] | list[Any] | None:
    """What the writer descends into, for the sharing/cycle scan; None for leaves."""
    kind = type(value)
    if kind is list or (isinstance(value, tuple) and value):
        return cast("tuple[Any, ...] | list[Any]", value)
    if kind is dict:
        return [x for item in value.items() for x in item]
    if kind is PickledObject:
        return (value.state,)
    if kind is PickledEnum:
        return (value.value,)
    if kind is Call:
        return (value.args,)
    return None


def _shared_ids(root: Any) -> set[int]:
    """Ids of the containers reachable more than once from ``root`` (memoized by the writer so the
    reader rebuilds the same sharing).  Iterative, O(nodes); a cycle is an error because
    TorchScript's format (which memoizes a value only after writing it) cannot express one."""
    state: dict[int, bool] = {}          # id -> finished?
    shared: set[int] = set()
    todo: list[tuple[Any, bool]] = [(root, False)]
    while todo:
        value, leaving = todo.pop()
        if leaving:
            state[id(value)] = True
            continue
        children = _children(value)
        if children is None:
            continue
        done = state.get(id(value))
        if done is False:
            raise PickleError(f"cannot pickle a cyclic structure (a {type(value).__name__} contains itself)")
        if done:
            shared.add(id(value))
            continue
        state[id(value)] = False
        todo.append((value, True))
        todo.extend((child, False) for child in reversed(children))
    return shared


class _Writer:
    """Iterative protocol-2 writer: a work stack of raw bytes, values and memo puts, so deep
    values cannot exhaust Python's recursion limit."""

    def __init__(self, persistent_id: Callable[[Any], Any | None], shared: set[int],
                 memoize: Callable[[Any], bool] | None) -> None:
        self.persistent_id = persistent_id
        self.shared = shared
        self.memoize = memoize
        self.out = bytearray(b"\x80\x02")
        self.memo: dict[Any, int] = {}
        self.todo: list[tuple[int, Any]] = []

    def dump(self, root: Any) -> bytes:
        self.todo.append((_VALUE, root))
        while self.todo:
            kind, item = self.todo.pop()
            if kind == _RAW:
                self.out += item
            elif kind == _GLOBAL:
                self._global(item)
            elif kind == _PUT:
                self._put(item)
            else:
                self._value(item, kind == _VALUE)
        self.out += b"."
        return bytes(self.out)

    def _schedule(self, *steps: tuple[int, Any]) -> None:
        self.todo.extend(reversed(steps))

    # -- memo -------------------------------------------------------------------------------------
    def _put(self, key: Any) -> None:
        index = self.memo[key] = len(self.memo)
        self.out += b"q" + bytes([index]) if index < 256 else b"r" + index.to_bytes(4, "little")

    def _get(self, key: Any) -> bool:
        index = self.memo.get(key)
        if index is None:
            return False
        self.out += b"h" + bytes([index]) if index < 256 else b"j" + index.to_bytes(4, "little")
        return True

    # -- values -----------------------------------------------------------------------------------
    def _value(self, value: Any, allow_pid: bool) -> None:
        if self._scalar(value):
            return
        if allow_pid:
            pid = self.persistent_id(value)
            if pid is not None:
                if not self._get(("p", id(value))):
                    self._schedule((_VALUE_NO_PID, pid), (_RAW, b"Q"), (_PUT, ("p", id(value))))
                return
        if self._get(("o", id(value))):
            return
        writer = _WRITERS.get(type(value))
        if writer is None:
            if isinstance(value, tuple):      # named tuples are written as plain tuples
                writer = _Writer._tuple
            else:
                raise PickleError(f"cannot pickle a value of type {type(value).__name__}")
        steps = writer(self, value)
        if id(value) in self.shared or (type(value) is Call and value.memoize) or \
                (self.memoize is not None and self.memoize(value)):
            steps.append((_PUT, ("o", id(value))))
        self._schedule(*steps)

    def _scalar(self, value: Any) -> bool:
        kind = type(value)
        if value is None:
            self.out += b"N"
        elif kind is bool:
            self.out += b"\x88" if value else b"\x89"
        elif kind is int:
            self._int(value)
        elif kind is float:
            self.out += b"G" + struct.pack(">d", value)
        elif kind is str:
            self._str(value)
        elif kind is bytes:
            self.out += (b"C" + bytes([len(value)]) if len(value) < 256
                         else b"B" + len(value).to_bytes(4, "little")) + value
        else:
            return False
        return True

    def _int(self, n: int) -> None:
        # TorchScript's choices: unsigned 1- and 2-byte forms, then signed 4 bytes, then LONG1 of 8.
        if 0 <= n < 256:
            self.out += b"K" + bytes([n])
        elif 0 <= n < 65536:
            self.out += b"M" + n.to_bytes(2, "little")
        elif -(1 << 31) <= n < (1 << 31):
            self.out += b"J" + n.to_bytes(4, "little", signed=True)
        elif -_INT64 <= n < _INT64:
            self.out += b"\x8a\x08" + n.to_bytes(8, "little", signed=True)
        else:
            size = n.bit_length() // 8 + 1
            raw = n.to_bytes(size, "little", signed=True)
            head = b"\x8a" + bytes([size]) if size < 256 else b"\x8b" + size.to_bytes(4, "little")
            self.out += head + raw

    def _str(self, text: str) -> None:
        if self._get(("s", text)):
            return
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise PickleError(f"cannot pickle a string that is not valid Unicode ({e.reason})") from e
        self.out += b"X" + len(raw).to_bytes(4, "little") + raw
        self._put(("s", text))

    def _global(self, ref: tuple[str, str]) -> None:
        module, name = ref
        if self._get(("g", module, name)):
            return
        if "\n" in module or "\n" in name or not module or not name:
            raise PickleError(f"cannot pickle global {module!r}.{name!r}")
        self.out += b"c" + f"{module}\n{name}\n".encode()
        self._put(("g", module, name))

    # -- containers (each returns its steps) ------------------------------------------------------
    def _tuple(self, value: tuple[Any, ...]) -> list[tuple[int, Any]]:
        items: list[tuple[int, Any]] = [(_VALUE, x) for x in value]
        if not value:
            return [(_RAW, b")")]
        if len(value) <= 3:
            return [*items, (_RAW, b"\x85\x86\x87"[len(value) - 1:len(value)])]
        return self._marked(value)

    def _marked(self, value: tuple[Any, ...]) -> list[tuple[int, Any]]:
        return [(_RAW, b"("), *((_VALUE, x) for x in value), (_RAW, b"t")]

    def _list(self, value: list[Any]) -> list[tuple[int, Any]]:
        return [(_RAW, b"]("), *((_VALUE, x) for x in value), (_RAW, b"e")]

    def _dict(self, value: dict[Any, Any]) -> list[tuple[int, Any]]:
        steps: list[tuple[int, Any]] = [(_RAW, b"}(")]
        for k, v in value.items():
            steps += [(_VALUE, k), (_VALUE, v)]
        steps.append((_RAW, b"u"))
        return steps

    def _object(self, value: PickledObject) -> list[tuple[int, Any]]:
        return [(_GLOBAL, _split(value.qualname)), (_RAW, b")\x81"), (_VALUE, value.state), (_RAW, b"b")]

    def _enum(self, value: PickledEnum) -> list[tuple[int, Any]]:
        return [(_GLOBAL, _split(value.qualname)), (_VALUE, value.value), (_RAW, b"R")]

    def _call(self, value: Call) -> list[tuple[int, Any]]:
        if not isinstance(value.args, tuple):
            raise PickleError(f"Call({value.module}.{value.name}) arguments must be a tuple")
        args = MarkedTuple(value.args) if (value.module, value.name) in _MARKED_CALLS else value.args
        return [(_GLOBAL, (value.module, value.name)), (_VALUE, args), (_RAW, b"R")]

    def _global_ref(self, value: GlobalRef) -> list[tuple[int, Any]]:
        return [(_GLOBAL, (value.module, value.name))]

    def _class_ref(self, value: ClassRef) -> list[tuple[int, Any]]:
        return [(_GLOBAL, _split(value.qualname))]


def _split(qualname: str) -> tuple[str, str]:
    module, _, name = qualname.rpartition(".")
    return module, name


_WRITERS: dict[type, Callable[[_Writer, Any], list[tuple[int, Any]]]] = {
    tuple: _Writer._tuple, MarkedTuple: _Writer._marked, list: _Writer._list, dict: _Writer._dict,
    PickledObject: _Writer._object, PickledEnum: _Writer._enum, Call: _Writer._call,
    GlobalRef: _Writer._global_ref, ClassRef: _Writer._class_ref,
}


def dump_pickle(obj: Any, *, persistent_id: Callable[[Any], Any | None],
                memoize: Callable[[Any], bool] | None = None) -> bytes:
    """``obj`` as deterministic protocol-2 bytes in TorchScript's spelling.

    Writes None, bool, int (``BININT1``/``BININT2``/``BININT``, ``LONG1`` of 8 bytes for int64 as
    TorchScript does, minimal ``LONG1``/``LONG4`` beyond), float (``BINFLOAT``, bit-exact), str
    (``BINUNICODE``, memoized by value), bytes (``SHORT_BINBYTES``/``BINBYTES``, protocol 3; no
    TorchScript pickle holds bytes), tuple (``EMPTY_TUPLE``/``TUPLE1-3``/``MARK..TUPLE``;
    :class:`MarkedTuple` always ``MARK..TUPLE``), list (``EMPTY_LIST MARK .. APPENDS``), dict
    (``EMPTY_DICT MARK .. SETITEMS``, insertion order), :class:`PickledObject` (``GLOBAL EMPTY_TUPLE
    NEWOBJ state BUILD``), :class:`PickledEnum` (``GLOBAL value REDUCE``), :class:`Call`
    (``GLOBAL args REDUCE``), :class:`GlobalRef`/:class:`ClassRef` (``GLOBAL``).

    ``persistent_id`` is asked about every non-scalar value first; a non-None answer is pickled
    (without asking again) and followed by ``BINPERSID``, memoized per object.  GLOBALs and
    strings are memoized by value, containers that occur more than once by identity, so shared
    values stay shared.  ``memoize(value)`` true also memoizes a container that occurs once
    (TorchScript does so for module objects); Calls to ``_rebuild_tensor_v2`` and the
    ``build_*list`` functions get ``MARK..TUPLE`` arguments as in TorchScript.  Equal inputs give
    identical bytes.  Raises :class:`PickleError` for other types and for cycles."""
    return _Writer(persistent_id, _shared_ids(obj), memoize).dump(obj)
