"""damon-k8s operator: kopf handlers reconciling DamonScheme resources into DamonNode specs."""
