"""Data: QA records, prompt formatting, tokenisation with label masks, augmentation."""

from uld.data.prompts import EncodedQA, PromptFormat, encode_qa
from uld.data.records import load_split

__all__ = ["EncodedQA", "PromptFormat", "encode_qa", "load_split"]
