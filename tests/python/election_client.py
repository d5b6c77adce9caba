"""An independent client of duet's election service: Python grpcio with
server reflection (v1alpha), the standard health service, and WatchRole
called through descriptors fetched by reflection (no code generated from
duet's protos). Prints one JSON object with what it saw.

usage: election_client.py HOST:PORT [EVENTS]
"""

import json
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


def main() -> None:
    addr = sys.argv[1]
    events = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=10)

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
