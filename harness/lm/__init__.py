"""Shared LM machinery: templates and tokenization, answer log-likelihoods, per-example
gradients, model loading. Every valuator, trainer and evaluator uses these, and only these."""
