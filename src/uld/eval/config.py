"""The one evaluation config: `uld eval`, the demo pipeline and every study build an `EvalConfig`
and call the same code (`uld.eval.run.evaluate_model`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from uld.errors import UldError, unknown_choice

PROTOCOLS = ("uld", "openunlearning")
"""How a QA pair is tokenised (see docs/eval.md):
- `uld`: prompt and answer tokenised separately and joined, so the answer's first token is
  always its own token and always scored; generation starts from the prompt without the space
  that precedes the answer.
- `openunlearning`: prompt + answer tokenised as one string and the first len(tok(prompt))
  positions masked (with a byte-level BPE the prompt's trailing space merges into the answer's
  first token, which is then masked); generation starts from tok(prompt), trailing space
  included; Min-K%, Min-K%++, gradient norm, ES and EM leave out the final EOS."""

TEMPLATES: dict[str, tuple[str, str]] = {
    "tofu": ("[INST] {question} [/INST]", " "),
    "qa": ("Question: {question}\nAnswer:", " "),
}
"""Named plain prompt templates: (template, text put before the answer). `tofu` is TOFU's
Llama-2 style (uld's default); `qa` is OpenUnlearning's non-chat template (its Llama-2-7b-hf
config: "Question: ", "\\n", "Answer: ")."""


@dataclass
class EvalConfig:
    """Every setting of an evaluation; the defaults are `uld eval`'s."""

    task: str = "tofu"
    forget: str = "forget10"
    max_items: int | None = None
    """First N items of each split (300 = the original TOFU protocol); None = all."""
    batch_size: int = 8
    max_length: int = 512
    """Longest scored prompt + answer, in tokens (longer answers are cut from the end)."""
    max_new_tokens: int = 200
    """Greedy tokens generated per question for ROUGE."""
    metrics: str = "default"
    """`--metrics`: 'default', 'all', or a comma list of metric or group names."""
    mia: bool = True
    """False drops the membership-inference metrics (and privleak) from the selection."""
    min_k: float = 0.4
    protocol: str = "uld"
    prompt_template: str | None = None
    """A name of `TEMPLATES` or a template with `{question}`; None = the tokenizer's chat template
    when it has one (and `chat_template`), else `tofu`."""
    answer_prefix: str | None = None
    """Text before the answer with a plain template; None = the named template's (a space)."""
    chat_template: bool = True
    gradnorm_p: float = 2.0
    device: str | None = None
    assistant_weight: float | None = None
    """ULD models only: evaluate at this assistant weight (target - w * assistant) instead of the
    saved one; None = the run's own."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        """One sentence for the first bad setting, before anything is loaded or written."""
        from uld.eval.checks import check_device, check_generation

        if self.max_items is not None and self.max_items < 1:
            raise UldError(f"--max-items must be at least 1, got {self.max_items}")
        if self.batch_size < 1:
            raise UldError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_length < 2:
            raise UldError(f"--max-length must be at least 2 tokens, got {self.max_length}")
        check_generation(self.max_new_tokens)
        if not (0 < self.min_k <= 1):
            raise UldError(f"min_k must be in (0, 1], got {self.min_k}")
        if self.protocol not in PROTOCOLS:
            raise unknown_choice("--protocol", self.protocol, PROTOCOLS)
        if self.gradnorm_p not in (1.0, 2.0, math.inf):
            raise UldError(f"the gradient-norm attack takes p = 1, 2 or inf, got {self.gradnorm_p}")
        if self.prompt_template is not None and self.prompt_template not in TEMPLATES and "{question}" not in self.prompt_template:
            raise UldError(
                f"--prompt-template {self.prompt_template!r} is neither a named template ({', '.join(TEMPLATES)}) "
                "nor a template with a {question} field"
            )
        check_device(self.device)
        if self.assistant_weight is not None and not (math.isfinite(self.assistant_weight) and self.assistant_weight >= 0):
            raise UldError(f"--assistant-weight must be a finite number >= 0, got {self.assistant_weight}")

    def prompt_format(self):
        """The `PromptFormat` these settings describe."""
        from uld.data.prompts import PromptFormat

        if self.prompt_template is None:
            template, prefix = TEMPLATES["tofu"]
            return PromptFormat(template, self.answer_prefix if self.answer_prefix is not None else prefix, self.chat_template)
        template, prefix = TEMPLATES.get(self.prompt_template, (self.prompt_template, " "))
        # an explicit plain template wins over the tokenizer's chat template
        return PromptFormat(template, self.answer_prefix if self.answer_prefix is not None else prefix, False)


def recorded_prompt(model_dir: str) -> dict[str, Any] | None:
    """The prompt settings a `uld unlearn` run recorded (`config.yaml`'s `data` section), looked
    up in the model directory and its parent; None when there is none."""
    from pathlib import Path

    import yaml

    p = Path(model_dir)
    for d in (p, p.parent):
        f = d / "config.yaml"
        if f.is_file():
            try:
                data = (yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("data") or {}
            except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
                return None
            keys = ("template", "answer_prefix", "use_chat_template")
            if isinstance(data, dict) and any(k in data for k in keys):
                return {k: data[k] for k in keys if k in data} | {"path": str(f)}
    return None
