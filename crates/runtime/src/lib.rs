//! Process plumbing shared by the services: telemetry, shutdown, task supervision, gRPC health and reflection
