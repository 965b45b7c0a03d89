"""The orchestrator's run -> the public API's messages (header, chunk, summary).

Shared by Synthesize and the streaming-input sessions, so both streams say the same things
the same way.
"""

from __future__ import annotations

from barkstream.v1 import common_pb2, tts_pb2

from .audio import AudioEncoder
from .request import StreamOptions
from .synthesis import SentChunk, Summary


def stage_enum(stage: str) -> int:
    """"semantic" -> common_pb2.STAGE_SEMANTIC, from the generated enum."""
    return common_pb2.Stage.Value(f"STAGE_{stage.upper()}")


def header_pb(options: StreamOptions, encoder: AudioEncoder, segment_count: int) -> tts_pb2.StreamHeader:
    fmt = options.format
    return tts_pb2.StreamHeader(
        request_id=options.request_id, encoding=fmt.encoding.value, sample_rate_hz=fmt.sample_rate_hz, channels=1,
        segment_count=segment_count, chunk_duration_ms=fmt.chunk_duration_ms,
        samples_per_chunk=fmt.samples_per_chunk, container_header=encoder.header(), voice=options.voice_name,
        encoder_delay_samples=encoder.delay_samples, bit_rate_bps=fmt.bit_rate_bps)


def chunk_pb(sent: SentChunk) -> tts_pb2.AudioChunk:
    c = sent.chunk
    return tts_pb2.AudioChunk(sequence_number=sent.sequence_number, segment_index=sent.segment_index,
                              start_sample=c.start_sample, data=c.data, num_samples=c.num_samples,
                              packets=c.packets)


def summary_pb(summary: Summary) -> tts_pb2.SynthesisSummary:
    out = tts_pb2.SynthesisSummary(
        request_id=summary.request_id, total_samples=summary.total_samples, audio_seconds=summary.audio_seconds,
        segment_count=summary.segment_count, chunk_count=summary.chunk_count,
        time_to_first_audio_ms=_ms(summary.time_to_first_audio_s), wall_ms=summary.wall_s * 1000,
        real_time_factor=summary.real_time_factor or 0.0)
    for t in summary.stage_timings:
        out.stage_timings.add(stage=stage_enum(t.stage), segment_index=t.segment_index, total_ms=t.total_s * 1000,
                              first_output_ms=_ms(t.first_output_s))
    return out


def _ms(seconds: float | None) -> float:
    return 0.0 if seconds is None else seconds * 1000
