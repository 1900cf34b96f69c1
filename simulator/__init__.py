"""Discrete-event simulation of a plan: simulated workers, links, workload and metrics, driven by the same
planner.routing policies the coordinator runs. Entry points: simulator.run.simulate, simulator.score.score_plan."""
