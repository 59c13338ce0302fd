"""The fixtures dvbench offers plugin authors (dvbench.harness.testing), as this suite loads them."""

from dvbench.harness.lm.models import load_model


def test_tiny_valuation_task_is_on_the_tiny_model(tiny_valuation_task, tiny_model, tiny_model_dir):
    assert tiny_model.source == str(tiny_model_dir) and tiny_valuation_task.model == tiny_model
    assert (len(tiny_valuation_task.candidates), len(tiny_valuation_task.anchors)) == (24, 4)
    model, tokenizer = load_model(tiny_model)
    assert model.config.num_hidden_layers == 2 and tokenizer.bos_token == "<s>"
