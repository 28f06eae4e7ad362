"""damon_agent.ops."""
