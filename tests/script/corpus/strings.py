"""String methods, indexing, formatting (without format specs: see beyond_ts) and conversions."""

# ruff: noqa: UP006, UP035

from typing import List, Tuple

from ._case import Case


def split_join(s: str) -> Tuple[List[str], List[str], List[str], str, str]:
    parts = s.split(",")
    words = s.split()
    first_two = s.split(",", 1)
    return parts, words, first_two, "-".join(parts), "".join(words)


def strip_family(s: str) -> Tuple[str, str, str, str, str]:
    return s.strip(), s.lstrip(), s.rstrip(), s.strip(" x"), s.rstrip("x ")


def case_methods(s: str) -> Tuple[str, str, str, str, str]:
    return s.lower(), s.upper(), s.title(), s.capitalize(), s.swapcase()


def predicates(s: str) -> Tuple[bool, bool, bool, bool, bool, bool, bool]:
    return s.startswith("ab"), s.endswith("yz"), s.isdigit(), s.isalpha(), s.isspace(), s.islower(), s.isupper()


def find_replace_count(s: str) -> Tuple[int, int, int, str, str, int]:
    return s.find("an"), s.rfind("an"), s.find("zz"), s.replace("an", "AN"), s.replace("a", ""), s.count("a")


def padding(s: str) -> Tuple[str, str, str, str]:
    return s.zfill(6), s.center(9, "*"), s.ljust(7, "."), s.rjust(7)


def partition_splitlines(s: str) -> Tuple[Tuple[str, str, str], List[str]]:
    return s.partition("="), s.splitlines()


def string_index_slice(s: str) -> Tuple[str, str, str, str, str, int]:
    return s[0], s[-1], s[1:3], s[::-1], s[::2], len(s)


def string_concat_compare(a: str, b: str) -> Tuple[str, bool, bool, bool, bool, bool]:
    return a + " " + b, a == b, a != b, a < b, a >= b, a in b


def build_by_loop(n: int) -> str:
    s = ""
    for i in range(n):
        s += str(i)
        if i < n - 1:
            s += ","
    return "[" + s + "]"


def str_format_method(name: str, n: int, ok: bool) -> str:
    return "{} has {} items (ok={})".format(name, n, ok)  # noqa: UP032 - str.format is the feature under test


def fstring_plain(name: str, n: int, flag: bool) -> str:
    return f"name={name} n={n} next={n + 1} flag={flag} {{braces}}"


def number_string_roundtrip(s: str) -> Tuple[int, float, str, str]:
    n = int(s)
    f = float(s + ".5")
    return n * 2, f * 2.0, str(n + 1), str(f * 3.0)


def ord_chr_hex(s: str, n: int) -> Tuple[int, str, str, str, str]:
    return ord(s), chr(ord(s) + 1), hex(n), bin(n), oct(n)


def caesar(s: str, shift: int) -> str:
    out = ""
    for ch in s:
        if ch.isalpha() and ch.islower():
            out += chr((ord(ch) - ord("a") + shift) % 26 + ord("a"))
        else:
            out += ch
    return out


def str_of_float_exact(x: float) -> str:
    # Only values that print the same in Python and in TorchScript (see the report on str(float)).
    return str(x) + "|" + str(x / 2.0)


CASES = [
    Case(split_join, [("a,b,,c d",), ("no-separators",), ("  x  y ",)]),
    Case(strip_family, [("  xhix  ",), ("xx",), ("",)]),
    Case(case_methods, [("hello wORLD",), ("",), ("a1-b2",)]),
    Case(predicates, [("abcxyz",), ("123",), ("   ",), ("ABC",)]),
    Case(find_replace_count, [("banana",), ("",), ("an",)]),
    Case(padding, [("42",), ("abcdefghij",)]),
    Case(partition_splitlines, [("key=value\nnext line",), ("no equals",)]),
    Case(string_index_slice, [("hello",), ("ab",)]),
    Case(string_concat_compare, [("apple", "banana"), ("pie", "apple pie"), ("b", "b")]),
    Case(build_by_loop, [(4,), (0,), (1,)]),
    Case(str_format_method, [("box", 3, True), ("", -1, False)]),
    Case(fstring_plain, [("kiln", 3, True), ("", -1, False)]),
    Case(number_string_roundtrip, [("12",), ("-3",)]),
    Case(ord_chr_hex, [("a", 255), ("Z", 5)]),
    Case(caesar, [("hello, world", 3), ("xyz", 27)]),
    Case(str_of_float_exact, [(2.5,), (0.25,), (-1.75,)]),
]
