"""Generation parameters of every stage, torch-free so the orchestrator can validate them.

Defaults are Suno's (`generate_audio`): temperature 0.7 for semantic and
coarse, 0.5 for fine, min_eos_p 0.2. "Greedy" means argmax at every stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from . import constants as C

# Below this, logits / temperature overflows float32 (a subnormal temperature makes the softmax
# NaN); such temperatures are argmax in all but name: use greedy.
MIN_TEMPERATURE = 1e-4
# Above this the tempered logits are all ~0 (a uniform draw), and past float32's largest value
# the temperature itself becomes inf in float32, which makes the softmax NaN.
MAX_TEMPERATURE = 1e6


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False

    def validate(self, name: str = "sampling") -> None:
        """Reject values that would make the softmax or the filters meaningless."""
        if not isinstance(self.temperature, int | float) or not math.isfinite(self.temperature) \
                or not MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE:
            raise ValueError(f"{name} temperature must be a number in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}] "
                             f"(for argmax set greedy), got {self.temperature}")
        if self.top_k is not None and not (1 <= self.top_k <= 100_000):
            raise ValueError(f"{name} top_k must be between 1 and 100000 when set, got {self.top_k}")
        if self.top_p is not None and not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise ValueError(f"{name} top_p must be in (0, 1] when set, got {self.top_p}")


@dataclass(frozen=True)
class SemanticParams:
    sampling: SamplingParams = SamplingParams(temperature=C.DEFAULT_SEMANTIC_TEMP)
    min_eos_p: float | None = C.DEFAULT_MIN_EOS_P
    max_gen_duration_s: float | None = None
    allow_early_stop: bool = True

    def validate(self) -> None:
        self.sampling.validate("semantic")
        if self.min_eos_p is not None and not (0 <= self.min_eos_p <= 1):
            raise ValueError(f"min_eos_p must be in [0, 1] when set, got {self.min_eos_p}")
        if self.max_gen_duration_s is not None and not (
            math.isfinite(self.max_gen_duration_s) and self.max_gen_duration_s > 0
        ):
            raise ValueError(f"max duration must be a finite number of seconds > 0, got {self.max_gen_duration_s}")


@dataclass(frozen=True)
class CoarseParams:
    sampling: SamplingParams = SamplingParams(temperature=C.DEFAULT_COARSE_TEMP)
    max_coarse_history: int = C.MAX_COARSE_HISTORY
    sliding_window_len: int = C.SLIDING_WINDOW_LEN

    def validate(self) -> None:
        self.sampling.validate("coarse")
        if not 60 <= self.max_coarse_history <= 630:
            raise ValueError(f"max_coarse_history must be in [60, 630], got {self.max_coarse_history}")
        if self.sliding_window_len < 1 or self.max_coarse_history + self.sliding_window_len > 768:
            raise ValueError("sliding_window_len must be >= 1 and max_coarse_history + sliding_window_len <= 768")
        if self.sliding_window_len % 2:
            # Windows interleave the two codebooks; the streaming stage emits each window as whole frames.
            raise ValueError(f"sliding_window_len must be even (a window is whole 2-codebook frames), "
                             f"got {self.sliding_window_len}")


@dataclass(frozen=True)
class FineParams:
    sampling: SamplingParams = SamplingParams(temperature=C.DEFAULT_FINE_TEMP)

    def validate(self) -> None:
        self.sampling.validate("fine")


@dataclass(frozen=True)
class GenerationParams:
    semantic: SemanticParams = field(default_factory=SemanticParams)
    coarse: CoarseParams = field(default_factory=CoarseParams)
    fine: FineParams = field(default_factory=FineParams)

    def validate(self) -> None:
        self.semantic.validate()
        self.coarse.validate()
        self.fine.validate()

    @classmethod
    def build(
        cls,
        *,
        greedy: bool = False,
        semantic_temp: float | None = None,
        coarse_temp: float | None = None,
        fine_temp: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_eos_p: float | None = C.DEFAULT_MIN_EOS_P,
        max_duration_s: float | None = None,
    ) -> GenerationParams:
        """One place that turns user-facing options (CLI flags, the public proto) into stage params.

        top_k / top_p apply to the semantic and coarse stages, as in Suno's API; unset temperatures
        keep Suno's defaults.
        """
        def temp(value: float | None, default: float) -> float:
            return default if value is None else value

        params = cls(
            SemanticParams(SamplingParams(temp(semantic_temp, C.DEFAULT_SEMANTIC_TEMP), top_k, top_p, greedy),
                           min_eos_p=min_eos_p, max_gen_duration_s=max_duration_s),
            CoarseParams(SamplingParams(temp(coarse_temp, C.DEFAULT_COARSE_TEMP), top_k, top_p, greedy)),
            FineParams(SamplingParams(temp(fine_temp, C.DEFAULT_FINE_TEMP), None, None, greedy)),
        )
        params.validate()
        return params

    def with_greedy(self) -> GenerationParams:
        return replace(
            self,
            semantic=replace(self.semantic, sampling=replace(self.semantic.sampling, greedy=True)),
            coarse=replace(self.coarse, sampling=replace(self.coarse.sampling, greedy=True)),
            fine=replace(self.fine, sampling=replace(self.fine.sampling, greedy=True)),
        )


def segment_seed(seed: int | None, index: int) -> int | None:
    """Seed of segment `index`: distinct per segment, the same in the CLI and the services."""
    if seed is None:
        return None
    return (int(seed) + 7919 * index) % (2**63)


def long_form_prompt(semantic: np.ndarray, coarse: np.ndarray, fine: np.ndarray):
    """The first segment's own generation as the voice of the following ones (Suno's long-form method).

    Returns None when that generation is too short to serve as a prompt.
    """
    from .voices import VoiceError, VoicePrompt

    try:
        return VoicePrompt(semantic_prompt=np.asarray(semantic, np.int64), coarse_prompt=np.asarray(coarse, np.int64),
                           fine_prompt=np.asarray(fine, np.int64), name="<first segment>")
    except VoiceError:
        return None
