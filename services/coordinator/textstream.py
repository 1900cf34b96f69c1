"""Token ids -> text pieces for one request: incremental detokenization and stop strings.

Text is emitted only once it is final: a trailing partial UTF-8 character, or a tail that could still
become a stop string, is held back until the next token decides it.

Each new token costs a decode of a short window of ids, not of the whole output (which made a stream
quadratic in its length). The window starts one token before the text not yet accounted for: decoding a
token together with its predecessor keeps what a decoder does at a sequence's start (e.g. SentencePiece
dropping a leading space) out of the middle of the text. The window grows only while it decodes to an
incomplete character (a trailing U+FFFD), i.e. for the few tokens of one multi-byte character.
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
    _prefix: int = 0  # ids[_prefix:_read] decode to _prefix_text: context for the next window
    _read: int = 0  # ids before this are accounted for in the text
    _prefix_text: str = ""
    _pending: str = ""  # accounted for but held back (could start a stop string)
    _pieces: list[str] = field(default_factory=list)

    def feed(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(token_id)
        window = self.decode(self.ids[self._prefix :])
        if window.endswith(REPLACEMENT):
            return ""  # an incomplete multi-byte character: wait for the rest
        self._account(window)
        return self._release(final=False)

    def flush(self) -> str:
        """At the end of generation: whatever was held back (it can no longer become a stop string), and a
        character left incomplete (shown as U+FFFD, as a full decode shows it)."""
        if self.stopped:
            return ""
        if self._read < len(self.ids):
            self._account(self.decode(self.ids[self._prefix :]))
        return self._release(final=True)

    @property
    def text(self) -> str:
        """The text so far that is final (emitted or held back); after a stop, the text up to it."""
        return "".join(self._pieces) + self._pending

    def _account(self, window: str) -> None:
        # The window begins with the text of ids[_prefix:_read]; the rest is new. Byte-level BPE decoders
        # (GPT-2, Llama 3, SmolLM) concatenate token bytes, so this equals slicing a full decode.
        self._pending += window[len(self._prefix_text) :]
        self._prefix, self._read = self._read, len(self.ids)
        self._prefix_text = self.decode(self.ids[self._prefix : self._read])

    def _release(self, *, final: bool) -> str:
        text = self._pending
        # A stop string cannot start in text already emitted (any tail that could start one is held
        # back), so searching the held-back text suffices; the earliest match of any stop string wins.
        hits = [at for at in (text.find(s) for s in self.stop) if at >= 0]
        if hits:
            self.stopped = True
            self._pending = ""
            return self._emit(text[: min(hits)])
        safe = len(text)
        if not final:
            for s in self.stop:
                # Hold back the longest tail that is a proper prefix of a stop string.
                for n in range(min(len(s) - 1, len(text)), 0, -1):
                    if text.endswith(s[:n]):
                        safe = min(safe, len(text) - n)
                        break
        self._pending = text[safe:]
        return self._emit(text[:safe])

    def _emit(self, piece: str) -> str:
        if piece:
            self._pieces.append(piece)
            self.emitted += len(piece)
        return piece
