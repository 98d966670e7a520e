"""Prompt formatting and QA tokenisation with label masks.

The prompt and the answer are tokenised *separately* and their ids joined, so the answer's
first token is always its own token and always scored (tokenising the joined string lets a
byte-level BPE merge the prompt's trailing space into the answer's first token, which an
evaluator that masks the prompt's length then leaves unscored). The answer ends with
the tokenizer's EOS token, which is scored too (as in TOFU's original evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

IGNORE_INDEX = -100


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt and an answer becomes a continuation.

    When the tokenizer has a chat template and `use_chat_template` is true, the prompt is the
    template applied to one user turn with the generation prompt added; otherwise `template`
    (TOFU's Llama-2 style by default) is filled in and `answer_prefix` is put before the answer.
    """

    template: str = "[INST] {question} [/INST]"
    answer_prefix: str = " "
    use_chat_template: bool = True
    add_eos: bool = True

    def prompt(self, tokenizer, question: str) -> str:
        if self.use_chat_template and getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
        return self.template.format(question=question)

    def answer(self, tokenizer, answer: str) -> str:
        if self.use_chat_template and getattr(tokenizer, "chat_template", None):
            return answer
        return self.answer_prefix + answer

    def prompt_ids(self, tokenizer, question: str) -> list[int]:
        text = self.prompt(tokenizer, question)
        chat = self.use_chat_template and getattr(tokenizer, "chat_template", None)
        # A chat template already writes the BOS token into the text.
        return list(tokenizer(text, add_special_tokens=not chat)["input_ids"])

    def answer_ids(self, tokenizer, answer: str) -> list[int]:
        ids = list(tokenizer(self.answer(tokenizer, answer), add_special_tokens=False)["input_ids"])
        if self.add_eos and tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        return ids


@dataclass
class EncodedQA:
    """One tokenised QA pair: `labels` is `input_ids` with the prompt masked to -100."""

    input_ids: list[int]
    labels: list[int]
    prompt_len: int
    truncated: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def num_answer_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def encode_qa(
    tokenizer,
    question: str,
    answer: str,
    fmt: PromptFormat | None = None,
    max_length: int | None = None,
    prompt_ids: list[int] | None = None,
) -> EncodedQA:
    """Tokenise prompt and answer separately, join them, mask the prompt in the labels.

    When the pair is longer than `max_length`, the answer is cut from the end (never the prompt
    from the start), `truncated` is set, and at least one answer token always remains.
    `prompt_ids`: the question's prompt already tokenised (`fmt.prompt_ids`), to reuse it.
    """
    fmt = fmt or PromptFormat()
    p = list(prompt_ids) if prompt_ids is not None else fmt.prompt_ids(tokenizer, question)
    a = fmt.answer_ids(tokenizer, answer)
    truncated = False
    if max_length is not None and len(p) + len(a) > max_length:
        truncated = True
        keep = max(1, max_length - len(p))
        a = a[:keep]
    ids = p + a
    labels = [IGNORE_INDEX] * len(p) + a
    return EncodedQA(input_ids=ids, labels=labels, prompt_len=len(p), truncated=truncated)
