"""damon_agent.runtime."""
