"""An independent client of duet's election service: Python grpcio with
server reflection (v1alpha), the standard health service, and WatchRole
called through descriptors fetched by reflection (no code generated from
duet's protos). Prints one JSON object with what it saw.

usage: election_client.py HOST:PORT [EVENTS]

With DUET_TOKEN set, every call carries "authorization: Bearer <token>"
(the unit's admin.tokens_file).
"""

import collections
import json
import os
import sys

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SERVICE = "duet.election.v1.ElectionService"


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _Token(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the bearer token to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with(self, d):
        metadata = list(d.metadata or []) + [self._header]
        return _Details(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with(details), requests)


def main() -> None:
    addr = sys.argv[1]
    events = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=10)
    token = os.environ.get("DUET_TOKEN", "").strip()
    if token:
        channel = grpc.intercept_channel(channel, _Token(token))

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    services = sorted(
        s.name for r in replies for s in r.list_services_response.service
    )

    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)

    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    method = pool.FindServiceByName(SERVICE).methods_by_name["WatchRole"]
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    watch = channel.unary_stream(
        f"/{SERVICE}/WatchRole",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    seen = []
    for event in watch(request_cls(), timeout=30):
        seen.append(json_format.MessageToDict(event))
        if len(seen) >= events:
            break

    print(
        json.dumps(
            {
                "services": services,
                "health": health_pb2.HealthCheckResponse.ServingStatus.Name(status.status),
                "events": seen,
            }
        )
    )


if __name__ == "__main__":
    main()
