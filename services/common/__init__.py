"""What every barkstream server shares (grpc, numpy, soxr; never torch).

config     ServerConfig and the flag/env convention (parsed once, in __main__)
server     ServerHandle / run_server: health, reflection, keepalive, limits, drain on SIGTERM
admission  per-service stream limits (RESOURCE_EXHAUSTED) and not-ready/draining (UNAVAILABLE)
status     abort_on_error: exceptions -> INVALID_ARGUMENT / pass-through / INTERNAL
errors     InvalidRequest, the grpc-free "fix your request" error
convert    TokenArray/TokenChunk/PcmChunk <-> numpy, request params -> core params
audio      output formats, chunking, soxr resampling, streaming WAV
reflection server reflection as grpc.reflection.v1 and v1alpha
undecodable  requests that are not valid protobuf (bad UTF-8) -> INVALID_ARGUMENT, on every RPC
server_calls the call-end hook (status the caller got) shared by the two interceptors below
request_log  one log line per finished call (INFO: TextToSpeech; DEBUG: the stages), plain or JSON
server_telemetry / client_telemetry  SERVER / CLIENT spans and RPC durations
spans      span attribute names, annotate(), the orchestrator's segment span
otel_setup TelemetryConfig, OTEL_* providers and exporters
metrics    every instrument (the Telemetry object beside app.py wires them up)
"""
