"""What every barkstream server shares (grpc, numpy, soxr; never torch).

config     ServerConfig and the flag/env convention (parsed once, in __main__)
server     ServerHandle / run_server: health, reflection, keepalive, limits, drain on SIGTERM
admission  per-service stream limits (RESOURCE_EXHAUSTED) and not-ready/draining (UNAVAILABLE)
status     abort_on_error: exceptions -> INVALID_ARGUMENT / pass-through / INTERNAL
errors     InvalidRequest, the grpc-free "fix your request" error
convert    TokenArray/TokenChunk/PcmChunk <-> numpy, request params -> core params
audio      output formats, chunking, soxr resampling, streaming WAV
"""
