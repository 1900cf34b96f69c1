"""The simulator as a service: REST + gRPC over persisted simulation jobs (dry runs of plans)."""
