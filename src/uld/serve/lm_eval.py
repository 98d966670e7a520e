"""Run EleutherAI's lm-evaluation-harness on a ULD run or any model uld can load.

The loaded model *object* is handed to lm-eval's own `HFLM` (`pretrained=model, tokenizer=tok`),
so lm-eval scores it through its ordinary `forward`: for a ULD model that is target − α·assistant
on the target's plausible set, the same log-likelihoods the model gives anywhere else, and its
`generate` for generation tasks. HFLM is told the model's context length explicitly (for a ULD
model, its target's `max_position_embeddings`); left to guess, it assumes 2048 positions, which
crashes a target with fewer and truncates differently from the target's own evaluation.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from uld.errors import UldError
from uld.serve.engine import model_context_length


def _require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UldError("uld lm-eval needs the lm-eval package: pip install 'uld[lm-eval]'") from None


def make_lm(model, tokenizer, batch_size: int | str = 1, max_length: int | None = None):
    """An lm-eval `HFLM` wrapping an already-loaded model object (no second load)."""
    _require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    return HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        backend="causal",
        batch_size=batch_size,
        max_length=max_length or model_context_length(model),
    )


def task_manager(include_path: str | Path | None = None, tasks: list[str] | None = None):
    """lm-eval's task index, with the YAML tasks under `include_path` added.

    When every name in `tasks` is found under `include_path`, lm-eval's own thousands of tasks
    are not indexed (that takes tens of seconds on a small machine).
    """
    _require_lm_eval()
    from lm_eval.tasks import TaskManager

    if include_path is None:
        return TaskManager()
    if not Path(include_path).is_dir():
        raise UldError(f"--include-path {str(include_path)!r} is not a directory of lm-eval task YAML files")
    if tasks:
        own = TaskManager(include_path=str(include_path), include_defaults=False)
        if set(tasks) <= set(own.all_tasks):
            return own
    return TaskManager(include_path=str(include_path))


def check_tasks(manager, tasks: list[str]) -> None:
    """Every name must be an lm-eval task, group or tag; one sentence naming the first that is not."""
    if not tasks:
        raise UldError("give at least one task with --tasks (e.g. --tasks hellaswag,arc_easy)")
    known = set(manager.all_tasks)
    for name in tasks:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UldError(
                f"unknown lm-eval task {name!r}{hint} (lm-eval knows {len(known)} tasks, groups and "
                f"tags; add your own YAML tasks with --include-path DIR)"
            )


def evaluate(
    model,
    tokenizer,
    tasks: list[str],
    include_path: str | Path | None = None,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int | str = 1,
    log_samples: bool = False,
    apply_chat_template: bool = False,
    seed: int | None = None,
    manager=None,
) -> dict:
    """Run lm-eval's `simple_evaluate` on a loaded model; returns lm-eval's results dictionary.

    `manager`: a `task_manager(include_path)` already built (indexing the tasks takes seconds).
    """
    _require_lm_eval()
    from lm_eval import simple_evaluate

    manager = manager or task_manager(include_path, tasks)
    check_tasks(manager, tasks)
    lm = make_lm(model, tokenizer, batch_size=batch_size)
    return simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=manager,
        log_samples=log_samples,
        apply_chat_template=apply_chat_template,
        # lm-eval's own default seeds unless one is given
        **({} if seed is None else dict(random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                        fewshot_random_seed=seed)),
    )


def results_json(results: dict) -> str:
    """lm-eval's results as JSON text (its own rule for values JSON cannot hold)."""
    import json

    from lm_eval.utils import handle_non_serializable

    return json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)


def results_table(results: dict) -> str:
    """lm-eval's own Markdown table of the results (and of groups, when there are any)."""
    from lm_eval.utils import make_table

    table = make_table(results)
    if results.get("groups"):
        table += "\n" + make_table(results, "groups")
    return table
