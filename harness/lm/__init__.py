"""Shared LM machinery: templates and tokenization, answer log-likelihoods and losses, one-shot
scoring with shared prefixes, per-example gradients, model loading; transformers' internals
only through the adapter ``hf``. Every valuator, trainer and evaluator uses these, and only these."""
