"""damon_agent.node."""
