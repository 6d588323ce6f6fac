"""Types of train.py's flags that check their value where argparse reads it, so the error names the flag.

`ranged(int, "[1, inf)")` is an argparse `type=`: the number and its interval in one declaration beside the
flag (no list of names to keep in step with the parser). Intervals read as in mathematics: "[" and "]"
include the bound, "(" and ")" exclude it, "inf" is unbounded. Floats must be finite (NaN and infinity are
refused), integers must be written as integers.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import fields


def parse_bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def finite_float(value: str) -> float:
    """A float flag: NaN and infinity are refused."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None


def parse_interval(interval: str) -> tuple[float, float, bool, bool]:
    """ "[0, 1)" -> (0.0, 1.0, True, False): the bounds and whether each is included."""
    if len(interval) < 5 or interval[0] not in "[(" or interval[-1] not in ")]" or interval.count(",") != 1:
        raise ValueError(f"expected an interval such as '[0, 1)', got {interval!r}")
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    if low > high:
        raise ValueError(f"expected an interval whose lower bound is at most its upper one, got {interval!r}")
    return low, high, interval[0] == "[", interval[-1] == "]"


def in_interval(value: float, interval: str) -> bool:
    low, high, low_included, high_included = parse_interval(interval)
    above = low <= value if low_included else low < value
    below = value <= high if high_included else value < high
    return above and below


def describe_interval(kind: type, interval: str) -> str:
    """How the error message states the rule: "an integer of at least 1", "a number in [0, 1)"."""
    low, high, low_included, _ = parse_interval(interval)
    if kind is int and high == math.inf and low_included:
        return f"an integer of at least {int(low)}"
    return f"{'an integer' if kind is int else 'a number'} in {interval}"


def ranged(kind: type, interval: str) -> Callable[[str], int | float]:
    """An argparse type: `kind` (int or float) within `interval`; anything else is an error naming the rule."""
    parse_interval(interval)  # a malformed interval fails when the parser is built, not when a user runs it
    parse = integer if kind is int else finite_float
    rule = describe_interval(kind, interval)

    def parse_ranged(value: str) -> int | float:
        number = parse(value)
        if not in_interval(number, interval):
            raise argparse.ArgumentTypeError(f"expected {rule}, got {value}")
        return number

    parse_ranged.__name__ = f"{kind.__name__} in {interval}"  # argparse names the type in some messages
    parse_ranged.interval = interval
    return parse_ranged


class FromFlags:
    """A mixin for a dataclass of settings that are flags of the same names: `Settings.from_args(args)`, with
    `resolved` values (worked out after parsing: the learning rate for the global batch, ...) in place of theirs."""

    @classmethod
    def from_args(cls, args: argparse.Namespace, **resolved):
        return cls(**{f.name: resolved[f.name] if f.name in resolved else getattr(args, f.name) for f in fields(cls)})
