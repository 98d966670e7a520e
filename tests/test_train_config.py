"""Run configuration: paper defaults, YAML + --set layering, one-sentence errors, shipped configs."""

from pathlib import Path

import pytest

from uld.errors import UldError
from uld.train.config import RunConfig, build_config, from_dict, load_yaml, option_names, parse_set

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_uld_defaults_are_the_papers():
    cfg = RunConfig(method="uld")
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size) == (1e-3, 10, 32)
    assert (cfg.train.warmup_ratio, cfg.train.weight_decay) == (0.1, 0.01)
    assert (cfg.policy.kind, cfg.policy.lora_rank, cfg.policy.lora_alpha, cfg.policy.lora_dropout) == ("uld", 32, 32.0, 0.05)
    assert cfg.policy.num_layers == 0  # 0 = a quarter of the target's layers


def test_uld_model_defaults_are_the_papers_everywhere():
    """The assistant weight (paper's alpha, 0.75 on TOFU), filter rate 1e-2 and LoRA r 32 / alpha 32 /
    dropout 0.05 reach the run config, the saved model's config, the model and the assistant builder
    from one definition."""
    import inspect

    from uld.models.assistant import build_assistant
    from uld.models.uld import ULDConfig, ULDForCausalLM

    paper = {"assistant_weight": 0.75, "filter_rate": 1e-2, "lora_rank": 32, "lora_alpha": 32.0, "lora_dropout": 0.05}
    policy, saved = RunConfig(method="uld").policy, ULDConfig()
    assert {k: getattr(policy, k) for k in paper} == paper
    assert {k: getattr(saved, k) for k in paper} == paper
    for fn in (ULDForCausalLM.__init__, build_assistant):
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in paper if k in params} == {k: paper[k] for k in paper if k in params}


def test_baselines_default_to_full_model_and_tofu_learning_rate():
    cfg = RunConfig(method="npo")
    assert (cfg.policy.kind, cfg.train.lr, cfg.train.epochs) == ("full", 1e-5, 10)
    assert RunConfig(method="rmu").train.lr == 5e-5


def test_set_overrides_yaml_and_reads_exponents_as_floats(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: npo\ntrain:\n  lr: 2e-5\n  epochs: 3\nloss:\n  beta: 0.2\n")
    cfg = build_config((load_yaml(f), " in c.yaml"), (parse_set(["train.lr=1e-4", "loss.beta=1e-1"]), " in --set"))
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)  # YAML reads "1e-4" as text
    assert cfg.train.epochs == 3
    assert cfg.loss.beta == 0.1 and isinstance(cfg.loss.beta, float)  # a typed method option


@pytest.mark.parametrize(
    "sets, message",
    [
        (["train.lrr=1"], "did you mean 'train.lr'"),
        (["train.epochs=two"], "train.epochs expects an int"),
        (["method=npo", "loss.beta=abc"], "option loss.beta expects a float, got 'abc'"),
        (["method=npo", "loss.beta=-1"], "option loss.beta must be > 0"),
        (["method=npo_gd", "loss.alpha=2"], "option loss.alpha was renamed: use loss.retain_weight"),
        (["method=uld", "loss.betta=2"], "unknown option 'loss.betta'; did you mean 'loss.beta'"),
        (["policy.alpha=0.5"], "did you mean 'policy.assistant_weight'"),
        (["policy.assistant_weight=-2"], "option policy.assistant_weight must be >= 0, got -2"),
        (["policy.filter_rate=5"], "option policy.filter_rate must be in [0, 1], got 5"),
        (["train.lr=nan"], "option train.lr must be a finite number"),
        (["train.lr=inf"], "option train.lr must be a finite number"),
        (["policy.lora_rank=-1"], "option policy.lora_rank must be >= 0"),
        (["train.batch_size=8", "train.micro_batch_size=3"], "train.batch_size=8 is not a multiple of train.micro_batch_size=3"),
        (["method=rmu", "loss.update_layers=[1, x]"], "option loss.update_layers[1] expects an int"),
        (["policy.kind=qlora"], "unknown value for policy.kind 'qlora'"),
        (["train.lr"], "--set expects key=value"),
        (["method=uld", "policy.kind=full"], "does not fit method 'uld'"),
    ],
)
def test_bad_options_fail_with_one_sentence(sets, message):
    import re

    with pytest.raises(UldError, match=re.escape(message)) as e:
        build_config((parse_set(sets), " in --set"))
    assert "\n" not in str(e.value)


def test_config_round_trips_through_its_yaml(tmp_path):
    import yaml

    from uld.train.config import to_yaml

    cfg = build_config((parse_set(["method=gd", "train.lr=3e-5", "policy.target_modules=[q_proj]"]), ""))
    again = from_dict(yaml.safe_load(to_yaml(cfg)))
    assert again == cfg


def test_every_option_has_a_docstring_in_the_source():
    src = Path(__file__).resolve().parents[1] / "src" / "uld" / "train" / "config.py"
    text = src.read_text()
    for name in option_names():
        leaf = name.split(".")[-1]
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{leaf}:"))
        following = text.split(line, 1)[1].lstrip().splitlines()[0]
        assert following.startswith('"""'), f"{name} has no documentation line"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_documents_its_command(path):
    cfg = build_config((load_yaml(path), f" in {path.name}"))
    assert cfg.loss is not None
    assert "uld unlearn" in path.read_text().splitlines()[0] + path.read_text().splitlines()[1]


def test_shipped_configs_exist():
    assert len(list(CONFIGS.glob("*.yaml"))) >= 3
    assert {p.stem for p in (CONFIGS / "accelerate").glob("*.yaml")} >= {"ddp", "fsdp", "deepspeed"}
