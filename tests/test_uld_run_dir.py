"""A ULD run directory is a transformers model: Auto classes, pipeline, portable targets, the
target's fingerprint, older directories, dtype / device_map / cache options, generic savers, peft."""

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch
import transformers as tf

from uld import ULDConfig, ULDForCausalLM, build_assistant
from uld.errors import UldError
from uld.testing import tiny_llama

PROMPT_IDS = torch.tensor([[5, 17, 42, 9, 77, 31]])


def trained_like(target, k=2, seed=0):
    """A ULD model over `target` whose LoRA weights are random (not the identity)."""
    assistant = build_assistant(target, num_layers=k, lora_rank=4)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in assistant.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return ULDForCausalLM(target, assistant, assistant_weight=0.6, filter_rate=0.05).eval()


@pytest.fixture
def run(tmp_path, tokenizer):
    """(run dir, target dir, model): a target saved on disk, a run beside it referring to it."""
    target = tiny_llama(num_layers=4)
    with torch.no_grad():
        target.lm_head.weight.mul_(20)  # a peaked head: the filter cuts something
    target.save_pretrained(tmp_path / "models" / "target")
    tokenizer.save_pretrained(tmp_path / "models" / "target")
    target = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "models" / "target").eval()
    model = trained_like(target)
    model.save_pretrained(tmp_path / "runs" / "uld", tokenizer=tokenizer)
    return tmp_path / "runs" / "uld", tmp_path / "models" / "target", model


def logits(model, ids=PROMPT_IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


# -- transformers' loaders -----------------------------------------------------------------------

def test_auto_classes_and_pipeline_open_a_run_directory(run, tokenizer):
    root, _, model = run
    cfg = tf.AutoConfig.from_pretrained(root)
    assert isinstance(cfg, ULDConfig) and cfg.assistant_weight == 0.6 and cfg.num_layers == 2
    # The target's fields that clients read (lm-eval: the context length).
    assert (cfg.max_position_embeddings, cfg.vocab_size, cfg.eos_token_id, cfg.pad_token_id) == (256, 320, 2, 0)
    loaded = tf.AutoModelForCausalLM.from_pretrained(root)
    assert isinstance(loaded, ULDForCausalLM) and loaded.name_or_path == str(root)
    assert torch.equal(logits(loaded), logits(model))
    pipe = tf.pipeline("text-generation", model=str(root))
    prompt = "[INST] Where was the author born? [/INST]"
    text = pipe(prompt, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert text == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_importing_uld_before_transformers_registers_the_auto_classes(run):
    root, _, _ = run
    code = ("import uld, sys; assert 'transformers' not in sys.modules; "
            "from transformers import AutoModelForCausalLM; "
            f"m = AutoModelForCausalLM.from_pretrained({str(root)!r}); print(type(m).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ULDForCausalLM"


# -- portable run directories -------------------------------------------------------------------

def test_run_and_target_moved_together_load_through_the_relative_path(run, tmp_path):
    root, target_dir, model = run
    assert json.loads((root / "config.json").read_text())["target_name_or_path"] == "../../models/target"
    shutil.move(tmp_path / "runs", tmp_path / "elsewhere" / "runs")
    shutil.move(tmp_path / "models", tmp_path / "elsewhere" / "models")
    loaded = ULDForCausalLM.from_pretrained(tmp_path / "elsewhere" / "runs" / "uld")
    assert torch.equal(logits(loaded), logits(model))


def test_a_missing_target_names_the_path_tried_and_an_override_loads(run, tmp_path):
    root, target_dir, model = run
    shutil.move(target_dir, tmp_path / "moved_target")
    tried = str((tmp_path / "models" / "target").resolve())
    with pytest.raises(UldError, match=f"not where it was recorded: '{tried}'.*pass target="):
        ULDForCausalLM.from_pretrained(root)
    loaded = ULDForCausalLM.from_pretrained(root, target=tmp_path / "moved_target")
    assert torch.equal(logits(loaded), logits(model))


def test_a_bundle_holds_its_target_and_moves_alone(run, tmp_path):
    _, target_dir, model = run
    model.save_pretrained(tmp_path / "bundle", save_target=True)
    assert json.loads((tmp_path / "bundle" / "config.json").read_text())["target_name_or_path"] == "./target"
    shutil.rmtree(target_dir)
    shutil.move(tmp_path / "bundle", tmp_path / "far" / "bundle")
    assert torch.equal(logits(ULDForCausalLM.from_pretrained(tmp_path / "far" / "bundle")), logits(model))


def test_files_get_the_usual_permissions(run):
    root, _, _ = run
    umask = os.umask(0)
    os.umask(umask)
    for p in [root / "config.json", root / "assistant", root / "assistant" / "adapter_model.safetensors"]:
        want = (0o777 if p.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(p.stat().st_mode) == want, p


# -- the target's identity ------------------------------------------------------------------------

def test_a_different_target_at_the_recorded_path_is_refused(run):
    root, target_dir, model = run
    other = tiny_llama(num_layers=4, seed=1)  # same architecture, other weights
    other.save_pretrained(target_dir)
    with pytest.raises(UldError, match="is not the model this run was trained on .*ignore_target_mismatch=True"):
        ULDForCausalLM.from_pretrained(root)
    loaded = ULDForCausalLM.from_pretrained(root, ignore_target_mismatch=True)
    assert loaded.target.model.embed_tokens.weight.equal(other.model.embed_tokens.weight)
    tiny_llama(num_layers=6).save_pretrained(target_dir)  # another architecture: the config says so
    with pytest.raises(UldError, match="its num_hidden_layers is 6, the run's target had 4"):
        ULDForCausalLM.from_pretrained(root)


def test_the_same_target_in_another_dtype_passes_the_fingerprint(run):
    root, _, model = run
    for kw in ({"torch_dtype": torch.bfloat16}, {"dtype": torch.bfloat16}, {"dtype": "bfloat16"},
               {"dtype": "torch.float16"}):
        loaded = ULDForCausalLM.from_pretrained(root, **kw)
        want = kw.get("dtype", kw.get("torch_dtype"))
        want = getattr(torch, want.removeprefix("torch.")) if isinstance(want, str) else want
        assert loaded.target.lm_head.weight.dtype == want, kw
    with pytest.raises(UldError, match="unknown dtype 'float13'"):
        ULDForCausalLM.from_pretrained(root, dtype="float13")
    with pytest.raises(UldError, match="disagree"):
        ULDForCausalLM.from_pretrained(root, dtype="float32", torch_dtype=torch.bfloat16)
    with pytest.raises(UldError, match="does not support the option 'quantization_config'"):
        ULDForCausalLM.from_pretrained(root, quantization_config={})


def test_an_older_run_directory_still_loads(run):
    """Before config.json: uld_config.json with "alpha", assistant.safetensors with peft's in-model names."""
    from safetensors.torch import save_file

    root, target_dir, model = run
    shutil.rmtree(root / "assistant")
    (root / "config.json").unlink()
    save_file({k: v.contiguous() for k, v in model.assistant.adapter_state_dict().items()},
              str(root / "assistant.safetensors"))
    (root / "uld_config.json").write_text(json.dumps({
        "format_version": 1, "alpha": 0.6, "filter_rate": 0.05, "num_layers": 2, "lora_rank": 4,
        "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": None,
        "target_name_or_path": str(target_dir.resolve()), "target_saved": False, "vocab_size": 320}))
    loaded = ULDForCausalLM.from_pretrained(root)
    assert loaded.assistant_weight == 0.6 and torch.equal(logits(loaded), logits(model))
    assert isinstance(tf.AutoConfig.from_pretrained(target_dir), tf.LlamaConfig)


# -- options: honoured or refused ---------------------------------------------------------------------

def test_device_map_on_one_device_is_honoured(run):
    root, _, model = run
    loaded = ULDForCausalLM.from_pretrained(root, device_map="cpu")
    assert torch.equal(logits(loaded), logits(model))


def test_hidden_states_and_attentions_are_refused_with_one_sentence(run):
    _, _, model = run
    for flag in ("output_hidden_states", "output_attentions"):
        with pytest.raises(UldError, match=f"has no .* of its own .*model.target or model.assistant with {flag}=True"):
            model(input_ids=PROMPT_IDS, **{flag: True})
    assert model(input_ids=PROMPT_IDS, output_hidden_states=False).logits.shape == (1, 6, 320)


@pytest.mark.parametrize("fused", [True, False])
def test_static_and_offloaded_caches_decode_like_the_dynamic_one(run, fused):
    _, _, model = run
    model.fused = fused
    ids = torch.tensor([[0, 0, 5, 17, 42], [9, 77, 31, 8, 3]])
    mask = (ids != 0).long()
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    dynamic = model.generate(**kw)
    assert torch.equal(model.generate(**kw, cache_implementation="static"), dynamic)
    if torch.cuda.is_available():  # transformers' offloading streams through CUDA
        assert torch.equal(model.to("cuda").generate(**{k: v.to("cuda") if torch.is_tensor(v) else v for k, v in kw.items()},
                                                     cache_implementation="offloaded").cpu(), dynamic)
        model.to("cpu")
    with pytest.raises(UldError, match="cache_implementation='quantized' is not supported"):
        model.generate(**kw, cache_implementation="quantized")


# -- generic savers and peft -------------------------------------------------------------------------

def test_state_dict_lists_each_tensor_once_and_generic_savers_round_trip(run, tmp_path):
    from accelerate import Accelerator
    from safetensors.torch import load_file, save_file

    root, _, model = run
    sd = model.state_dict()
    ptrs = [t.data_ptr() for t in sd.values()]
    assert len(ptrs) == len(set(ptrs))
    assert {k for k in sd if k.startswith("assistant.")} == {
        f"assistant.model.{n}" for n in model.assistant.adapter_state_dict()}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "sd.safetensors"))
    tf.PreTrainedModel.save_pretrained(model, tmp_path / "hf")
    Accelerator(cpu=True).save_model(model, tmp_path / "acc")
    for path in (tmp_path / "sd.safetensors", tmp_path / "hf" / "model.safetensors", tmp_path / "acc" / "model.safetensors"):
        fresh = ULDForCausalLM.from_pretrained(root)
        with torch.no_grad():
            for p in fresh.assistant.trainable_parameters():
                p.zero_()
        fresh.load_state_dict(load_file(str(path)))
        assert torch.equal(logits(fresh), logits(model)), path


def test_the_adapter_is_a_peft_adapter_of_the_target_cut_to_k_blocks(run):
    from peft import PeftModel

    root, target_dir, model = run
    cut = tf.AutoModelForCausalLM.from_pretrained(target_dir, num_hidden_layers=2)
    peft_model = PeftModel.from_pretrained(cut, root / "assistant").eval()
    with torch.no_grad():
        want = model.assistant(input_ids=PROMPT_IDS).logits
        got = peft_model(input_ids=PROMPT_IDS).logits
    assert torch.equal(got, want)


# -- the command line: `uld export`, `uld generate --target` -------------------------------------------

def test_export_bundle_then_generate_with_the_bundle_alone(run, tmp_path, capsys):
    from uld.cli import main

    root, target_dir, model = run
    assert main(["export", str(root), str(tmp_path / "bundle"), "--bundle"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["export", str(root), str(tmp_path / "bundle")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "x")]) == 2
    assert "is not a ULD run directory" in capsys.readouterr().err and not (tmp_path / "x").exists()
    args = ["generate", "--prompt", "Where?", "--max-new-tokens", "5"]
    assert main([*args, "--model", str(root)]) == 0
    want = capsys.readouterr().out
    shutil.rmtree(target_dir)
    assert main([*args, "--model", str(tmp_path / "bundle")]) == 0
    assert capsys.readouterr().out == want
    # The original run lost its target: the error names the path tried; --target repairs it.
    assert main([*args, "--model", str(root)]) == 2
    assert str((tmp_path / "models" / "target").resolve()) in capsys.readouterr().err
    assert main([*args, "--model", str(root), "--target", str(tmp_path / "bundle" / "target")]) == 0
    assert capsys.readouterr().out == want


def test_the_fingerprint_samples_tensors_larger_than_float32_counts_exactly():
    from uld.models.uld.identity import _sample

    n = 49_152 * 576  # SmolLM2's embedding: past 2^24, where float32 cannot index its last element
    big = torch.arange(2, dtype=torch.float32).repeat_interleave(torch.tensor([n - 1, 1]))
    got = _sample(big)
    assert len(got) == 32 and got[0] == 0.0 and got[-1] == 1.0  # the last sample is the last element
