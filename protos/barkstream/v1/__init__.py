"""Generated protobuf / gRPC stubs for the `barkstream.v1` API (made at install time)."""
