"""damon_agent.schemes."""
