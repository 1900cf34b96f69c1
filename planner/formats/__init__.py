"""Readers and writers for the files BRL takes and gives: Helix `.ini` files, profile CSVs, the cluster
YAML and plan JSON. Only functions named load_*/save_* touch the file system; errors are InvalidInput
naming the file, the field or line, and what was expected."""

from __future__ import annotations

from pathlib import Path

from planner.errors import InvalidInput


def read_text(path: str | Path) -> str:
    """Read a whole text file, turning OS errors into InvalidInput that names the file."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput("file not found", source=str(p)) from None
    except IsADirectoryError:
        raise InvalidInput("expected a file, found a directory", source=str(p)) from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"not UTF-8 text ({exc.reason} at byte {exc.start})", source=str(p)) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read: {exc.strerror}", source=str(p)) from None


def with_source(exc: InvalidInput, source: str | Path, field: str | None = None) -> InvalidInput:
    """The same complaint, re-addressed to the file (and field) it came from."""
    return InvalidInput(exc.detail, source=exc.source or str(source), field=exc.field or field)
