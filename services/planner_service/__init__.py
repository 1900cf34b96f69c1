"""The planner as a service: REST + gRPC over persisted plan jobs (solves run in worker processes)."""
