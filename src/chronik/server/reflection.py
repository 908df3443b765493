"""gRPC server reflection under both names: ``grpc.reflection.v1`` and ``grpc.reflection.v1alpha``.

grpcio-reflection (up to 1.85 at least) ships only v1alpha, while current clients (grpcurl,
Postman, grpcui, buf curl) ask v1 first. The two protocols are the same messages under another
package, so the v1alpha servicer answers both: v1 is a generic handler using the v1alpha message
classes (identical on the wire), and the v1 ``reflection.proto`` (v1alpha's, renamed) is added
to the descriptor pool so a client can describe the v1 service itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

__all__ = ["SERVICE_NAMES", "V1_SERVICE", "V1ALPHA_SERVICE", "enable_reflection"]

V1ALPHA_SERVICE: Final = reflection.SERVICE_NAME
V1_PACKAGE: Final = "grpc.reflection.v1"
V1_SERVICE: Final = f"{V1_PACKAGE}.ServerReflection"
V1_FILE: Final = "grpc/reflection/v1/reflection.proto"
SERVICE_NAMES: Final = (V1_SERVICE, V1ALPHA_SERVICE)


def _add_v1_file(pool: descriptor_pool.DescriptorPool) -> None:
    """Put grpc/reflection/v1/reflection.proto in ``pool`` (once): v1alpha's, renamed."""
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{reflection_pb2.DESCRIPTOR.package}.", f".{V1_PACKAGE}."
    proto.name, proto.package = V1_FILE, V1_PACKAGE
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    pool.AddSerializedFile(proto.SerializeToString())


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both
    reflection services."""
    pool = descriptor_pool.Default()
    _add_v1_file(pool)
    names = [*service_names, *(n for n in SERVICE_NAMES if n not in service_names)]
    servicer = reflection.aio.ReflectionServicer(names, pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    handler = grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1})
    server.add_generic_rpc_handlers((handler,))
