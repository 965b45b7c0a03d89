"""Every generated message, enum and stub of the public API, under one import.

    from barkstream.client import pb
    pb.SynthesizeRequest(...), pb.TextToSpeechStub(channel), pb.AudioChunk (the wire message)

For advanced use (building requests by hand, a custom channel); the SDK covers the rest.
`barkstream.client` itself re-exports the messages and enums users meet most often.
"""

from __future__ import annotations

from barkstream.v1 import common_pb2, tts_pb2, tts_pb2_grpc
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
    AudioChunk,
    AudioEncoding,
    Clear,
    Cleared,
    Flush,
    ListVoicesRequest,
    ListVoicesResponse,
    Segmentation,
    SegmentDone,
    SegmentSchedule,
    SegmentStarted,
    SessionConfig,
    StreamHeader,
    StreamingSynthesizeRequest,
    StreamingSynthesizeResponse,
    SynthesisParams,
    SynthesisSummary,
    SynthesizeRequest,
    SynthesizeResponse,
    Voice,
    VoicePrompt,
)
from barkstream.v1.tts_pb2_grpc import TextToSpeechServicer, TextToSpeechStub, add_TextToSpeechServicer_to_server

__all__ = [
    "Clear", "Cleared", "Flush", "SegmentDone", "SegmentSchedule", "Segmentation", "SegmentStarted", "SessionConfig",
    "StreamingSynthesizeRequest", "StreamingSynthesizeResponse", "VoicePrompt",
    "AudioChunk", "AudioEncoding", "CoarseParams", "FineParams", "ListVoicesRequest", "ListVoicesResponse",
    "SamplingParams", "SemanticParams", "Stage", "StageTiming", "StopReason", "StreamHeader", "SynthesisParams",
    "SynthesisSummary", "SynthesizeRequest", "SynthesizeResponse", "TextToSpeechServicer", "TextToSpeechStub",
    "Voice", "add_TextToSpeechServicer_to_server", "common_pb2", "tts_pb2", "tts_pb2_grpc",
]
