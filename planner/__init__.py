"""BRL's pure core: fleet, model and profile types, placement, flow, solvers and routing.

Nothing here touches the network, spawns processes or reads a clock; parsing functions in
`planner.formats` may read the files they are given.
"""
