"""Built-in trainers: each fine-tunes the model on a selected subset of the candidates."""
