"""damon_agent.cli."""
