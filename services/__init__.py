"""Processes that put the core on the network: coordinator, worker, planner and simulator services, CLI."""
