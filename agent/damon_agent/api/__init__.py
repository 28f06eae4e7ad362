"""damon_agent.api."""
