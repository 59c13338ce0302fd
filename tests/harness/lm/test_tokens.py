from pathlib import Path

import pytest

from dvbench.harness.errors import InputError
from dvbench.harness.data.files import load_examples
from dvbench.harness.template import ALPACA, ALPACA_INPUT, Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import Example
from dvbench.harness.testing import byte_tokenizer

SHARED = Path(__file__).parents[3].parent / "shared" / "data" / "alpaca_gpt4"
Z = Example("z", "Add the numbers.", "2, 3", "5")
X = Example("x", "Name a colour.", "", "Blue is a colour.")


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_sequences_are_the_pieces_tokenized_separately():
    tok = byte_tokenizer()
    template = Template(header="HEAD ", separator="\n--\n")
    enc = Encoder(tok, template)
    bos, eos = [tok.bos_token_id], [tok.eos_token_id]
    qx, ax = _ids(tok, template.query(X)), _ids(tok, X.output) + eos
    qz, az = _ids(tok, template.query(Z)), _ids(tok, Z.output) + eos
    zero = enc.zero_shot(X)
    assert list(zero.ids) == bos + _ids(tok, "HEAD ") + qx + ax
    one = enc.one_shot(Z, X)
    assert list(one.ids) == bos + qz + az + _ids(tok, "\n--\n") + _ids(tok, "HEAD ") + qx + ax
    assert list(one.answer) == list(zero.answer) == ax
    assert one.ids[one.prefix:] == zero.ids[zero.prefix:] and zero.prefix == 1
    assert enc.training(X) == zero
    assert not enc.truncated


def test_alpaca_and_plain_queries():
    assert Template().query(X) == ALPACA.format(instruction="Name a colour.")
    assert Template().query(Z) == ALPACA_INPUT.format(instruction="Add the numbers.", input="2, 3")
    assert "### Input:\n2, 3\n\n### Response:\n" in Template().query(Z)
    assert Template(name="plain").query(Z) == "Add the numbers.\n\n2, 3\n\n"
    assert Template(name="plain").query(X) == "Name a colour.\n\n"


def test_chat_query_uses_the_tokenizers_template_with_one_bos():
    tok = byte_tokenizer()
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert Template(name="chat").query(Z, tok) == "<s><user>Add the numbers.\n\n2, 3<assistant>"
    seq = Encoder(tok, Template(name="chat")).zero_shot(Z)
    assert seq.ids.count(tok.bos_token_id) == 1 and seq.ids[:2] == (tok.bos_token_id, _ids(tok, "<")[0])
    tok.backend_tokenizer.post_processor = None  # a tokenizer that adds no BOS keeps the template's own
    assert Encoder(tok, Template(name="chat")).zero_shot(Z).ids[0] == tok.bos_token_id
    with pytest.raises(ValueError, match="chat template"):
        Template(name="chat").query(Z, byte_tokenizer())


def test_no_bos_when_the_tokenizer_adds_none_and_no_eos_when_off():
    tok = byte_tokenizer()
    tok.backend_tokenizer.post_processor = None
    seq = Encoder(tok, Template(eos=False)).zero_shot(X)
    assert seq.ids[0] != tok.bos_token_id and seq.prefix == 0
    assert list(seq.answer) == _ids(tok, X.output)


def test_demonstration_is_cut_from_the_left_first_then_the_query():
    tok = byte_tokenizer()
    full = Encoder(tok, Template(name="plain"))
    zero, one = full.zero_shot(X), full.one_shot(Z, X)
    demo = one.ids[1:one.prefix]
    room = len(zero.ids) + 5  # five demonstration tokens fit
    enc = Encoder(tok, Template(name="plain", max_length=room, max_answer_tokens=room - 1))
    cut = enc.one_shot(Z, X)
    assert cut.ids == (tok.bos_token_id,) + demo[-5:] + zero.ids[1:]
    assert dict(enc.truncated) == {"demonstration": 1}
    small = Encoder(tok, Template(name="plain", max_length=len(zero.ids) - 3, max_answer_tokens=20))
    cut = small.one_shot(Z, X)
    assert cut.ids == (tok.bos_token_id,) + zero.ids[4:] and cut.answer == zero.answer
    assert cut == small.zero_shot(X)
    assert dict(small.truncated) == {"demonstration": 1, "query": 2}


def test_long_answers_are_cut_from_the_right_once_and_everywhere():
    tok = byte_tokenizer()
    enc = Encoder(tok, Template(max_answer_tokens=4, max_length=2000))
    answers = {enc.zero_shot(X).answer, enc.one_shot(Z, X).answer, enc.training(X).answer}
    assert answers == {tuple(_ids(tok, X.output)[:4])}  # no EOS: the answer did not end
    assert enc.truncated["answer"] == 1


def test_an_answer_that_leaves_no_room_is_an_error_naming_the_example():
    enc = Encoder(byte_tokenizer(), Template(header="x" * 30, max_length=40, max_answer_tokens=20))
    with pytest.raises(InputError, match="example 'x': its answer .* no room under template.max_length"):
        enc.zero_shot(X)


def test_template_limits_are_checked():
    with pytest.raises(ValueError, match="below max_length"):
        Template(max_length=10, max_answer_tokens=10)
    with pytest.raises(ValueError, match="templates: alpaca, plain, chat"):
        Template(name="vicuna")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the project")
def test_real_alpaca_rows_keep_identical_answer_tokens_in_every_form():
    anchors = load_examples(SHARED / "kmeans100_anchors.jsonl")
    candidates = load_examples(SHARED / "candidates_sample.jsonl")[:200]
    enc = Encoder(byte_tokenizer(), Template(max_length=1024, max_answer_tokens=512))
    for x in anchors:
        zero = enc.zero_shot(x)
        assert enc.training(x).answer == zero.answer
        for z in candidates[:: 20]:
            assert enc.one_shot(z, x).answer == zero.answer
    assert len(anchors) == 100 and enc.truncated["answer"] > 0 and enc.truncated["demonstration"] > 0


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the project")
def test_real_rows_with_the_embedded_tokenizer():
    from dvbench.harness.lm.models import load_tokenizer
    from dvbench.harness.records import ModelRef

    tok = load_tokenizer(ModelRef("embedded"))
    anchors = load_examples(SHARED / "kmeans100_anchors.jsonl")
    candidates = load_examples(SHARED / "candidates_sample.jsonl")[:100]
    for name in ("alpaca", "chat"):
        enc = Encoder(tok, Template(name=name, max_length=4096, max_answer_tokens=2048))
        for x in anchors:
            zero = enc.zero_shot(x)
            assert zero.answer[-1] == tok.eos_token_id and enc.training(x) == zero
            assert tok.decode(zero.answer[:-1]) == x.output
            if name == "chat":
                assert tok.decode(zero.ids[:zero.answer_start]).startswith("<|im_start|>system\n")
            for z in candidates[::10]:
                one = enc.one_shot(z, x)
                assert one.answer == zero.answer and one.ids[one.prefix:] == zero.ids[zero.prefix:]
        assert not enc.truncated
