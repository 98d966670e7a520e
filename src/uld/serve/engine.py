"""One model and its tokenizer, serving one generation at a time.

The engine knows nothing about HTTP. It turns chat messages or plain text into prompt ids, runs
`model.generate` (transformers' own decoding, so a ULD model and a plain causal LM behave alike)
and reports the text as it grows, through one `StoppingCriteria` that sees every new token:

- the text is decoded from all generated ids at each step (`skip_special_tokens=True`, as
  `uld generate` does), so the final text equals `uld generate`'s;
- stop strings end generation and are cut from the text (OpenAI's rule: the stop string is not
  returned); while streaming, a tail that could still grow into a stop string, or that ends in an
  incomplete UTF-8 character, is held back until it is decided;
- a cancelled request (its client went away) stops at the next token.

Requests run one after another on a single worker thread (`Engine.executor`): one model, one
queue. Batching several requests into one `generate` call is not done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from transformers import StoppingCriteria

from uld.errors import UldError

# Config fields that hold a model's context length, in the order transformers' families use them.
_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def model_context_length(model) -> int | None:
    """The most positions `model` can attend to, or None when its config does not say.

    Read from the model's config, and for a ULD model (which has a `target`) from the target's
    text config when the ULD config does not carry it.
    """
    configs = [getattr(model, "config", None)]
    target = getattr(model, "target", None)
    if target is not None:
        configs.append(getattr(target, "config", None))
    for cfg in configs:
        if cfg is None:
            continue
        if hasattr(cfg, "get_text_config"):
            cfg = cfg.get_text_config(decoder=True)
        for name in _CONTEXT_FIELDS:
            value = getattr(cfg, name, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one request.

    max_tokens: most new tokens. temperature: 0 means greedy decoding (argmax), as in OpenAI's
    API; above 0 samples. top_p / top_k: nucleus and top-k sampling (1.0 / 0 = off). seed: seeds
    torch's generator before decoding (reproducible sampling). stop: strings that end the text
    (not included in it). ignore_eos: keep going past the end-of-sequence token.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generate_kwargs(self) -> dict:
        """Arguments for `model.generate` (the same ones `uld generate` passes)."""
        kwargs: dict = {"max_new_tokens": self.max_tokens}
        if self.greedy:
            kwargs["do_sample"] = False
        else:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        if self.ignore_eos:
            kwargs["min_new_tokens"] = self.max_tokens
        return kwargs


@dataclass
class Completion:
    """What one request produced. finish_reason: "stop" (end-of-sequence token or a stop string),
    "length" (max_tokens reached) or "cancelled" (the client went away)."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float = 0.0


class _Tracker(StoppingCriteria):
    """Decodes the generated ids at every step, finds stop strings, emits stable text, cancels.

    Used as a transformers `StoppingCriteria`: called with the whole sequence after each new token,
    it returns True to end generation.
    """

    def __init__(self, engine: Engine, prompt_len: int, stop: Sequence[str], on_text, cancel, eos_ids):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.prompt_len = prompt_len
        self.stop = [s for s in stop if s]
        self.on_text = on_text
        self.cancel = cancel
        self.eos_ids = eos_ids
        self.ids: list[int] = []
        self.text = ""  # the text so far (cut at a stop string once one is found)
        self.sent = 0  # characters of `text` already handed to on_text
        self.stopped = False  # a stop string was found
        self.cancelled = False

    def __call__(self, input_ids, scores=None, **kwargs):
        import torch

        self.ids = input_ids[0, self.prompt_len:].tolist()
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        hit = self._find_stop(text)
        if hit is not None:
            self.text, self.stopped = text[:hit], True
            self._emit(len(self.text))
        else:
            self.text = text
            self._emit(self._stable_length(text))
        hook = self.engine.on_token
        if hook is not None:
            hook(self)
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
        done = self.stopped or self.cancelled
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    def _find_stop(self, text: str) -> int | None:
        # A stop string can only newly appear in the part not yet emitted (plus its own length).
        start = max(0, self.sent - max((len(s) for s in self.stop), default=0))
        found = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _stable_length(self, text: str) -> int:
        """Length of the prefix of `text` that no later token can change."""
        end = len(text)
        while end > self.sent and text[end - 1] == "\ufffd":  # an incomplete UTF-8 character
            end -= 1
        held = 0
        for s in self.stop:  # hold back a tail that is the start of a stop string
            for k in range(min(len(s) - 1, end), 0, -1):
                if text.endswith(s[:k], 0, end):
                    held = max(held, k)
                    break
        return max(self.sent, end - held)

    def _emit(self, upto: int) -> None:
        if upto > self.sent:
            delta = self.text[self.sent:upto]
            self.sent = upto
            if self.on_text is not None:
                self.on_text(delta)

    def flush(self) -> None:
        """Hand over the held-back tail once generation has ended."""
        self._emit(len(self.text))

    def finish_reason(self) -> str:
        if self.cancelled and not self.stopped:
            return "cancelled"
        if self.stopped or (self.ids and self.ids[-1] in self.eos_ids):
            return "stop"
        return "length"


class Engine:
    """A loaded model and tokenizer, and the single worker thread that runs its requests.

    model_id: the name clients use for it. context_length: most positions (prompt + new tokens);
    read from the model's config when not given.
    `on_token`, when set, is called with the per-request tracker after every token, on the worker
    thread (an observation point for tests and instrumentation).
    """

    def __init__(self, model, tokenizer, model_id: str, context_length: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.context_length = context_length or model_context_length(model)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uld-serve")
        self.on_token: Callable[[_Tracker], None] | None = None
        self._lock = threading.Lock()  # also safe when called from several threads directly
        eos = tokenizer.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or ())

    # -- prompts ----------------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation with the generation prompt added.

        With a chat template: the template applied to the messages (it writes any BOS token itself).
        Without one: a single user message becomes TOFU's `[INST] ... [/INST]` prompt, exactly as
        `uld generate` builds it; longer conversations are refused.
        """
        if self.has_chat_template:
            try:
                text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception as e:  # a template may raise on an unexpected role order
                raise UldError(f"the model's chat template rejected these messages: {e}") from e
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(messages) != 1 or messages[0]["role"] != "user":
            raise UldError(
                "this model's tokenizer has no chat template, so only a single user message can be "
                "formatted; send one user message or use /v1/completions with your own prompt text"
            )
        from uld.data.prompts import PromptFormat

        text = PromptFormat(use_chat_template=False).prompt(self.tokenizer, messages[0]["content"])
        return self.text_prompt_ids(text)

    def text_prompt_ids(self, text: str) -> list[int]:
        """Token ids of raw prompt text, with the tokenizer's usual special tokens (e.g. BOS)."""
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    # -- generation -------------------------------------------------------------------------
    def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Decode one request; `on_text(delta)` receives the text as it becomes final."""
        import torch
        from transformers import StoppingCriteriaList

        if not prompt_ids:
            raise UldError("the prompt is empty: it must hold at least one token")
        start = time.perf_counter()
        tracker = _Tracker(self, len(prompt_ids), params.stop, on_text, cancel, self.eos_ids)
        if cancel is not None and cancel.is_set():  # the client left while the request waited
            return Completion("", "cancelled", len(prompt_ids), 0, 0.0)
        with self._lock:
            device = next(self.model.parameters()).device
            ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.no_grad():
                self.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                    stopping_criteria=StoppingCriteriaList([tracker]),
                    **params.generate_kwargs(),
                )
        tracker.flush()
        return Completion(
            text=tracker.text,
            finish_reason=tracker.finish_reason(),
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(tracker.ids),
            seconds=time.perf_counter() - start,
        )

    def submit(self, prompt_ids, params, on_text=None, cancel=None):
        """Queue a request on the worker thread; returns a `concurrent.futures.Future`."""
        return self.executor.submit(self.generate, prompt_ids, params, on_text, cancel)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
