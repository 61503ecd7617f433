"""``ReplayModel``: a ``VideoQAModel`` that answers from recorded replies instead of a network.

Uses: re-running recorded replies through the runner (new shards, merged reports, another protocol's
aggregation) and checking prompt parity: a prompt that the recording never saw is an error naming it,
so a change to a prompt builder shows up at once. Replies are keyed by (video path, prompt).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vamba.evaluation.interface import GenerationSettings, VideoRequest
from vamba.utils.io import read_jsonl


class ReplayModel:
    def __init__(self, records: Iterable[Mapping[str, Any]]) -> None:
        self._replies: dict[tuple[str, str], str] = {}
        for r in records:
            self._replies.setdefault((r["video"], r["prompt"]), r["response"])
        self.videos_encoded = 0

    @classmethod
    def from_file(cls, path: str | Path) -> ReplayModel:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"responses file not found: {path}")
        return cls(read_jsonl(path))

    def encode_video(self, video: VideoRequest) -> str:
        self.videos_encoded += 1
        return video.path

    def answer(self, encoded: str, prompt: str, generation: GenerationSettings) -> str:
        try:
            return self._replies[(encoded, prompt)]
        except KeyError:
            raise KeyError(f"no recorded reply for video {encoded!r} with prompt {prompt!r}") from None

    def answer_many(self, encoded: str, prompts: Sequence[str], generation: GenerationSettings) -> list[str]:
        """The recorded replies to several prompts (``answer`` of each, in order)."""
        return [self.answer(encoded, prompt, generation) for prompt in prompts]
