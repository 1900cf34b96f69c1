"""`brl profile`: measure a worker backend on this machine and write a GPU profile folder for the planner."""
