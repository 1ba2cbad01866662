"""Console commands that belong to no single stage: the demo, hybrid plans, weight checks, the MIM visual check."""
