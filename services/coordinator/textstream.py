"""Token ids -> text pieces for one request: incremental detokenization and stop strings.

Text is emitted only once it is final: a trailing partial UTF-8 character, or a tail that could still
become a stop string, is held back until the next token decides it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

REPLACEMENT = "\ufffd"


@dataclass
class TextStream:
    """Feed sampled token ids; get the new text that is safe to show, and whether a stop string hit."""

    decode: Callable[[Sequence[int]], str]
    stop: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of the final text already handed out
    stopped: bool = False
    _text: str = ""

    def feed(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(token_id)
        self._text = self.decode(self.ids)
        text = self._text
        for s in self.stop:
            at = text.find(s, max(0, self.emitted - len(s) + 1))
            if at >= 0:
                self.stopped = True
                self._text = text[:at]
                return self._take(len(self._text))
        safe = len(text)
        if text.endswith(REPLACEMENT):
            safe = len(text.rstrip(REPLACEMENT))  # an incomplete multi-byte character: wait for the rest
        limit = safe
        for s in self.stop:
            # Hold back the longest tail that is a proper prefix of a stop string.
            for n in range(min(len(s) - 1, limit), 0, -1):
                if text[limit - n : limit] == s[:n]:
                    safe = min(safe, limit - n)
                    break
        return self._take(max(safe, self.emitted))

    def flush(self) -> str:
        """At the end of generation: whatever was held back (it can no longer become a stop string)."""
        return self._take(len(self._text))

    @property
    def text(self) -> str:
        return self._text

    def _take(self, upto: int) -> str:
        piece = self._text[self.emitted : upto]
        self.emitted = max(self.emitted, upto)
        return piece
