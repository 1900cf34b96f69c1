"""What every JSON body must be before its schema looks at it: text that can be written back out (no lone
surrogates such as "\\ud800"), finite numbers of sane size (no NaN, Infinity, 1e999, 10**4000), shallow
nesting. Python's json module accepts all of those, and each would otherwise fail later, far from the
request — writing a temporary file, rendering a response, sizing a model — as a 500.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

MAX_DEPTH = 32
# Far beyond any count, seed or size a request means; a bigger integer is a typo or an attack.
MAX_ABS_INT = 2**63


def _problem(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "text holds a lone surrogate (not valid UTF-8)"
    elif isinstance(value, bool):
        return None
    elif isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite (no NaN or Infinity)"
    elif isinstance(value, int) and abs(value) > MAX_ABS_INT:
        return f"number out of range (|n| <= 2**63): {str(value)[:20]}..."
    return None


def json_problem(value: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """None when `value` (parsed JSON) is safe, else "<path>: <what is wrong>" for the first problem found."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        where = ".".join(path) or "body"
        if len(path) > max_depth:
            return f"{where}: nested deeper than {max_depth} levels"
        if isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and _problem(key) is not None:
                    return f"{where}: a key {_problem(key)}"
                stack.append((child, (*path, str(key))))
        elif isinstance(item, list | tuple):
            stack.extend((child, (*path, str(i))) for i, child in enumerate(item))
        else:
            problem = _problem(item)
            if problem is not None:
                return f"{where}: {problem}"
    return None


class JsonBody(BaseModel):
    """Base of request bodies: the checks above run on the raw input before any field is validated."""

    model_config = ConfigDict(allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _safe_json(cls, data: Any) -> Any:
        problem = json_problem(data)
        if problem is not None:
            raise ValueError(problem)
        return data
