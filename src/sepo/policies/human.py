"""A person at the terminal as a policy (``human``): reads the observation, types a move.

An unparseable answer gets one more prompt listing the legal actions; end of input plays
the game's default action for the rest of the episode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sepo.rollout.protocol import DecisionRequest, Recovery


class HumanPolicy:
    name = "human"

    def __init__(
        self,
        read: Callable[[str], str] = input,
        write: Callable[[str], None] = print,
    ) -> None:
        self._read = read
        self._write = write
        self._closed = False

    def _ask(self, prompt: str) -> str:
        if self._closed:
            return ""
        try:
            return self._read(prompt)
        except EOFError:
            self._closed = True
            return ""

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        out = []
        for req in requests:
            self._write("\n" + req.messages[-1]["content"])
            out.append(self._ask("> "))
        return out

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        out = []
        for req in requests:
            if self._closed:
                out.append(Recovery(text=None))
                continue
            self._write("Please answer with one of: " + ", ".join(req.legal_texts))
            out.append(Recovery(text=self._ask("> "), kind="reprompt"))
        return out
