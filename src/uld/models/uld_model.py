"""Former home of the ULD model, kept so that older imports keep working: see `uld.models.uld`."""

from uld.models.uld import (  # noqa: F401
    SPARSE_HEAD_FAMILIES,
    ULDCache,
    ULDConfig,
    ULDForCausalLM,
    combine_logits,
    combine_with_head,
    plausibility_mask,
)
