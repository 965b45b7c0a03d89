"""barkstream: Suno's Bark text-to-speech served as gRPC streaming microservices.

`barkstream.client` is the light SDK (no torch), `barkstream.services` the
model and servers (`pip install barkstream[server]`), `barkstream.v1` the
generated protobuf/gRPC stubs.
"""

__version__ = "0.1.0"
