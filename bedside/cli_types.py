"""Click parameter types of the bedside CLI: numbers that must be finite and within bounds."""

from __future__ import annotations

import math
from typing import Any

import click

#: Largest session id SQLite can store (a signed 64-bit INTEGER).
MAX_SQLITE_INT = 2**63 - 1


class FiniteFloat(click.FloatRange):
    """A float in [min, max] (``min_open``/``max_open`` as click.FloatRange) that is never NaN or inf.

    click.FloatRange lets NaN through (every comparison with NaN is false), so NaN and inf are
    refused here first, with the bounds in the message.
    """

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; give one in {self._describe_range()}.", param, ctx)
        return super().convert(number, param, ctx)
