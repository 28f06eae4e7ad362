"""damon-k8s node agent: DAMON-style access monitoring, DAMOS schemes, and the node runtime.

Layers (imports point down only; enforced by import-linter, see pyproject.toml):

    cli -> runtime -> reports -> ops | node -> schemes -> core -> api
"""

__version__ = "0.1.0"
