"""barkstream client SDK: Bark text-to-speech over gRPC, without torch.

    from barkstream.client import TTSClient

    with TTSClient("localhost:50051") as client:
        client.synthesize("Hello there!", voice="v2/en_speaker_6").save("hello.wav")
        for chunk in client.stream("A longer text. Played while it is made."):
            player.write(chunk.data)

`AsyncTTSClient` has the same surface for asyncio. Failed calls raise the typed errors below
(all `BarkstreamError`). The API's messages and enums are re-exported here (the wire
`AudioChunk` message is `pb.AudioChunk`; `AudioChunk` here is the SDK's chunk), so the
generated modules are rarely needed; `barkstream.client.pb` has all of them.
"""

from __future__ import annotations

from barkstream import __version__
from barkstream.v1.common_pb2 import (
    CoarseParams,
    FineParams,
    SamplingParams,
    SemanticParams,
    Stage,
    StageTiming,
    StopReason,
)
from barkstream.v1.tts_pb2 import (
    AUDIO_ENCODING_FLOAT32_LE,
    AUDIO_ENCODING_PCM_S16LE,
    AUDIO_ENCODING_UNSPECIFIED,
    AUDIO_ENCODING_WAV,
    AudioEncoding,
    Cleared,
    SegmentDone,
    SegmentStarted,
    SessionConfig,
    StreamHeader,
    SynthesisParams,
    SynthesisSummary,
    SynthesizeRequest,
    Voice,
    VoicePrompt,
)

from . import pb
from ._channel import DEFAULT_TARGET, TLS, RetryPolicy
from ._stream import Progress
from .aio import AsyncAudioStream, AsyncTTSClient
from .audio import Audio, AudioChunk
from .errors import (
    BarkstreamError,
    Cancelled,
    DeadlineExceeded,
    InvalidRequest,
    Overloaded,
    PermissionDenied,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from .request import PARAMS, build_config, build_request
from .session import AsyncSession, Session, SpokenSegment
from .sync import AudioStream, TTSClient
from .voice import save_voice_prompt, to_voice_prompt, voice_prompt_arrays

__all__ = [
    # clients and what they return
    "TTSClient", "AsyncTTSClient", "AudioStream", "AsyncAudioStream", "Audio", "AudioChunk", "Progress",
    "Session", "AsyncSession", "SpokenSegment",
    # channel settings
    "TLS", "RetryPolicy", "DEFAULT_TARGET",
    # errors
    "BarkstreamError", "InvalidRequest", "Overloaded", "Unavailable", "DeadlineExceeded", "Unauthenticated",
    "PermissionDenied", "Cancelled", "ServerError",
    # API messages and enums
    "AudioEncoding", "AUDIO_ENCODING_UNSPECIFIED", "AUDIO_ENCODING_PCM_S16LE", "AUDIO_ENCODING_FLOAT32_LE",
    "AUDIO_ENCODING_WAV", "SynthesizeRequest", "SynthesisParams", "SemanticParams", "CoarseParams", "FineParams",
    "SamplingParams", "StreamHeader", "SynthesisSummary", "StageTiming", "Stage", "StopReason", "Voice",
    "SessionConfig", "SegmentStarted", "SegmentDone", "Cleared", "VoicePrompt",
    # helpers
    "PARAMS", "build_request", "build_config", "to_voice_prompt", "voice_prompt_arrays", "save_voice_prompt", "pb",
    "__version__",
]
