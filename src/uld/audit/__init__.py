"""`uld audit`: does the forgetting survive an adversary?

Each probe (one module each) attacks the unlearned model and, for scale, the target and the
retain model: `paraphrase` (reworded and few-shot questions), `sampling` (leak@k), `quantize`
(round-to-nearest weights), `relearn` (a few fine-tuning steps on part of the forget set) and
`components` (ULD / offset: each served network alone). `run_audit` writes AUDIT.json and
AUDIT.md; docs/audit.md defines every measure and the recovery ratio.
"""

from uld.audit.base import PROBES, AuditMemo, AuditSettings, recovery
from uld.audit.run import run_audit

__all__ = ["PROBES", "AuditMemo", "AuditSettings", "recovery", "run_audit"]
