"""Built-in evaluators: each measures a fine-tuned model on the eval set."""
