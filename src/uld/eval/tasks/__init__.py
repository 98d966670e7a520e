"""Evaluation tasks. Each task module loads its data, builds its requests to the model
interface (`uld.eval.lm`), registers its metrics (`uld.eval.registry`) and lays out its result
files. Importing this package registers every task."""

from uld.eval.tasks import tofu  # noqa: F401

TASKS = ("tofu",)
