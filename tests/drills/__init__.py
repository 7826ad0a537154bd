"""Fault drills: each failure mode of the soak on its own, with the agent's expected behaviour asserted."""
