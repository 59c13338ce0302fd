"""Built-in selectors: each turns scores into named training subsets."""
