"""Values in the Helix artifact's `.ini` files: small Python expressions (`1000 * mbps`, `[0, 1, 'sink']`,
`"L4"`) evaluated by a whitelist evaluator (never `eval`), and strict ini reading with errors that name
the file, the section and the key. Units are the paper's: `mbps = 1e6` bytes/s (no /8), `MilliSec = 1e-3`."""

from __future__ import annotations

import ast
import configparser
from collections.abc import Mapping
from pathlib import Path

from planner.errors import InvalidInput
from planner.formats import read_text

UNITS: Mapping[str, float] = {
    "kbps": 1e3,
    "mbps": 1e6,
    "gbps": 1e9,
    "Byte": 1.0,
    "KB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "MilliSec": 1e-3,
    "Sec": 1.0,
}


def parse_value(text: str, *, source: str, field: str) -> object:
    """Evaluate one ini value: numbers, unit names, + - * /, strings, lists/tuples of those."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise InvalidInput(f"cannot parse value {text.strip()!r}", source=source, field=field) from None

    def ev(node: ast.AST) -> object:
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int | float | str)
            and not isinstance(node.value, bool)
        ):
            return node.value
        if isinstance(node, ast.Name) and node.id in UNITS:
            return UNITS[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = ev(node.operand)
            if isinstance(operand, int | float):
                return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult | ast.Div | ast.Add | ast.Sub):
            a, b = ev(node.left), ev(node.right)
            if isinstance(a, int | float) and isinstance(b, int | float):
                if isinstance(node.op, ast.Mult):
                    return a * b
                if isinstance(node.op, ast.Add):
                    return a + b
                if isinstance(node.op, ast.Sub):
                    return a - b
                if b == 0:
                    raise InvalidInput("division by zero", source=source, field=field)
                return a / b
        if isinstance(node, ast.List | ast.Tuple):
            return [ev(e) for e in node.elts]
        raise InvalidInput(
            f"unsupported expression {ast.unparse(node)!r}; expected a number, a unit "
            f"({', '.join(UNITS)}), a string or a list",
            source=source,
            field=field,
        )

    return ev(tree.body)


def number(value: object, *, source: str, field: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise InvalidInput(f"expected a number, got {value!r}", source=source, field=field)


def read_ini(path: str | Path) -> tuple[configparser.ConfigParser, str, str]:
    source = str(path)
    text = read_text(path)
    if not text.strip():
        raise InvalidInput("file is empty", source=source)
    parser = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        parser.read_string(text, source=source)
    except configparser.MissingSectionHeaderError as exc:
        raise InvalidInput(f"line {exc.lineno}: expected a [Section] header first", source=source) from None
    except configparser.DuplicateSectionError as exc:
        raise InvalidInput(f"line {exc.lineno}: duplicate section [{exc.section}]", source=source) from None
    except configparser.DuplicateOptionError as exc:
        raise InvalidInput(
            f"line {exc.lineno}: duplicate key {exc.option!r} in [{exc.section}]", source=source
        ) from None
    except configparser.Error as exc:
        raise InvalidInput(f"not a valid ini file: {exc.message.splitlines()[0]}", source=source) from None
    return parser, source, text


def get_value(parser: configparser.ConfigParser, section: str, key: str, source: str) -> object:
    field = f"[{section}] {key}"
    if not parser.has_section(section):
        raise InvalidInput(f"missing section [{section}]", source=source, field=f"[{section}]")
    if not parser.has_option(section, key):
        raise InvalidInput(f"missing key {key!r}", source=source, field=field)
    return parse_value(parser.get(section, key), source=source, field=field)


def get_text(parser: configparser.ConfigParser, section: str, key: str, source: str) -> str:
    """A name written bare or quoted (type=L4, machine_type="L4")."""
    if not parser.has_section(section):
        raise InvalidInput(f"missing section [{section}]", source=source, field=f"[{section}]")
    if not parser.has_option(section, key):
        raise InvalidInput(f"missing key {key!r}", source=source, field=f"[{section}] {key}")
    text = parser.get(section, key).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    if not text:
        raise InvalidInput("expected a name, got an empty value", source=source, field=f"[{section}] {key}")
    return text
