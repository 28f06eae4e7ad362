"""damon_agent.reports."""
