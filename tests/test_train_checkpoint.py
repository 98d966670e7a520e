"""Epoch checkpoints: Accelerate's save_state layout, trainable tensors only, in safetensors,
no pickled .pt files; an interrupted save leaves no temporary directory."""

import json

import pytest
from safetensors.torch import load_file
from train_helpers import make_workspace

from uld.cli import main
from uld.train.checkpoint import latest_checkpoint


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("ws"))


def _run(workspace, out, method, *extra):
    model, data = workspace
    return main(["unlearn", "--model", str(model), "--data", str(data), "--forget", "forget_plain",
                 "--retain", "retain", "--method", method, "--out", str(out), "--set", "train.epochs=2",
                 "--set", "train.batch_size=2", "--set", "train.stop_after_epoch=1", *extra])


def test_uld_checkpoint_holds_only_the_adapter_in_safetensors(workspace, tmp_path):
    out = tmp_path / "run"
    assert _run(workspace, out, "uld") == 0
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "epoch-1"
    state = json.loads((ckpt / "state.json").read_text())
    assert (state["epoch"], state["global_step"], state["world_size"]) == (1, 2, 1)
    weights = load_file(ckpt / "accelerate" / "model.safetensors")
    assert weights and all("lora_" in k for k in weights), sorted(weights)[:3]
    assert not list(out.rglob("*.pt")) and not list(out.rglob(".epoch-*.tmp"))
    # The schedule is JSON in state.json, not a pickle that Accelerate would reload with weights_only=False.
    assert not list(out.rglob("custom_checkpoint_*")) and state["scheduler"]["last_epoch"] == 2


def test_rmu_checkpoint_holds_only_the_trained_down_projections(workspace, tmp_path):
    out = tmp_path / "run"
    assert _run(workspace, out, "rmu", "--set", "loss.layer=1", "--set", "loss.update_layers=[0,1]") == 0
    weights = load_file(latest_checkpoint(out) / "accelerate" / "model.safetensors")
    assert sorted(weights) == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
