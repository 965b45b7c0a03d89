"""The HTTP gateway: OpenAI's speech API, WebSocket sessions and a browser page, in front of the
orchestrator's public gRPC API.

Torch-free and model-free: every request becomes one `TextToSpeech` call (Synthesize,
StreamingSynthesize, ListVoices) on the orchestrator, so the gateway scales and fails on its
own and adds no second implementation of anything. Stack: Starlette (routing, requests,
WebSockets) served by uvicorn.
"""
