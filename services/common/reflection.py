"""Server reflection under both names clients ask for: `grpc.reflection.v1` and `v1alpha` (no torch).

grpcio-reflection implements only `grpc.reflection.v1alpha.ServerReflection`; grpcurl and other
current clients try `grpc.reflection.v1` first. The v1 protocol is v1alpha under a new package
name, with the same messages and field numbers, so the same servicer answers both: v1 is one
more method handler over the v1alpha message classes, and the v1 file descriptor (v1alpha's,
renamed) joins the descriptor pool so that v1 itself can be described. When grpcio-reflection
ships v1 itself, this module goes.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_pb2_grpc

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
SERVICE_NAMES = (V1_SERVICE, reflection.SERVICE_NAME)


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Answer reflection (v1 and v1alpha) about `service_names` and the reflection services themselves."""
    pool = descriptor_pool.Default()
    _add_v1_file(pool)
    servicer = reflection.aio.ReflectionServicer((*service_names, *SERVICE_NAMES), pool=pool)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
            response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString),
    }),))
    v1alpha_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)


def _add_v1_file(pool: descriptor_pool.DescriptorPool) -> None:
    """Register the v1 reflection.proto (v1alpha's, renamed) unless it is there already."""
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    old = f".{proto.package}."
    proto.name, proto.package = V1_FILE, V1_PACKAGE
    for message in proto.message_type:
        for f in message.field:
            if f.type_name.startswith(old):
                f.type_name = f".{V1_PACKAGE}.{f.type_name[len(old):]}"
    for service in proto.service:
        for m in service.method:
            m.input_type = f".{V1_PACKAGE}.{m.input_type[len(old):]}"
            m.output_type = f".{V1_PACKAGE}.{m.output_type[len(old):]}"
    proto.options.Clear()
    pool.AddSerializedFile(proto.SerializeToString())
