"""Built-in valuators: each scores every candidate against the anchor task set."""
