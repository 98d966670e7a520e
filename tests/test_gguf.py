"""GGUF as a model source: a tiny Llama written as a GGUF file in the test, converted and reloaded.

The file is written the way llama.cpp's converter writes Llama checkpoints: tensors under GGUF
names, q/k projection rows permuted per head (pairs of rotary halves interleaved), the tokenizer
as a "gpt2" BPE token list + merges, special ids in `tokenizer.ggml.*`. Converting it back must
give the very same logits as the model it came from.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (HF rotate-half layout -> interleaved pairs), per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path, model, tokenizer, eos_id: int | None = None) -> None:
    """Write `model` (a LlamaForCausalLM) and `tokenizer` (byte-level BPE) as a GGUF file."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]) if getattr(cfg, "rope_parameters", None) else 10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    specials = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id if eos_id is None else eos_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    w.add_unk_token_id(tokenizer.unk_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                t = _permute(t, cfg.num_attention_heads)
            elif gg == "attn_k":
                t = _permute(t, cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(t))
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _tiny(tie: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    from uld.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=tie, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    if tie:
        model.tie_weights()
    return model, tok


@pytest.mark.parametrize("tie", [True, False])
def test_gguf_converts_to_a_directory_with_the_same_logits(tmp_path, monkeypatch, tie):
    from uld.models.gguf import MARKER, converted_dir
    from uld.models.loading import load_model

    model, tok = _tiny(tie)
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, model, tok)
    monkeypatch.setenv("ULD_GGUF_CACHE", str(tmp_path / "cache"))
    loaded, tok2 = load_model(str(path))
    out_dir = converted_dir(path)
    assert (out_dir / MARKER).is_file() and (out_dir / "model.safetensors").is_file()
    config = json.loads((out_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["tie_word_embeddings"] is tie
    ids = torch.tensor([[tok.bos_token_id, 40, 41, 57, 90, 101, 7, 250]])
    with torch.no_grad():
        ref, got = model(ids).logits, loaded(ids).logits
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    # the tokenizer round-trips: same ids for the same text, same special tokens
    text = "The author was born in Paris."
    assert tok2(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    assert (tok2.bos_token_id, tok2.eos_token_id, tok2.pad_token_id) == (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    # the converted directory saves again (no GGUF quantization_config left behind)
    loaded.save_pretrained(tmp_path / "resaved")
    # a second load reuses the conversion instead of converting again
    stamp = (out_dir / MARKER).stat().st_mtime_ns
    load_model(str(path))
    assert (out_dir / MARKER).stat().st_mtime_ns == stamp


def test_special_tokens_follow_the_gguf_metadata(tmp_path):
    """A file whose metadata names another eos than the tokenizer would guess gets that eos everywhere."""
    from uld.models.gguf import convert_gguf
    from uld.models.loading import load_model

    model, tok = _tiny(True)
    path = tmp_path / "tiny.gguf"
    unk = tok.unk_token_id
    write_tiny_gguf(path, model, tok, eos_id=unk)
    out = convert_gguf(path, out=tmp_path / "conv")
    info = json.loads((out / "uld_gguf.json").read_text())
    assert info["special_tokens"]["eos"]["id"] == unk
    m, t = load_model(str(out))
    assert t.eos_token_id == unk and m.config.eos_token_id == unk


def test_gguf_errors_are_one_sentence(tmp_path):
    from uld.errors import UldError
    from uld.models.gguf import convert_gguf

    with pytest.raises(UldError, match="not found"):
        convert_gguf(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(UldError, match="could not read"):
        convert_gguf(bad, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_setup_rejects_an_unknown_model_with_exit_2(capsys):
    from uld.cli import main

    assert main(["setup", "llama-9000"]) == 2
    assert "unknown model 'llama-9000'; known: smollm2" in capsys.readouterr().err
