"""Chat prompts as an engine sends them: the model's own template, its end tokens, notes fitted to the context.

Both engines render a conversation with the model's chat template into token ids (the same ids on
both); a caller that rendered them already (fit_notes does, in one batched encode) passes them on.
A note too long for the context is shortened in its middle, never the instructions around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from clinical_distil.files import InputError

Conversation = list[dict[str, str]]
TRUNCATION_MARK = "\n[... note shortened to fit the context ...]\n"


@dataclass
class FittedPrompt:
    """A conversation that fits the context, and how much of its note was cut to get there."""

    messages: Conversation
    note_truncated: bool = False
    note_tokens_dropped: int = 0
    prompt_ids: list[int] | None = None  # the rendered conversation's token ids, for engine.generate
    prompt_text: str | None = None  # the same rendering as text (stage A writes it beside the reply)


def end_token_ids(tokenizer, generation_config=None) -> list[int]:
    """The model's own end tokens: generation config's eos ids plus the tokenizer's eos."""
    ids: set[int] = set()
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def render_ids(tokenizer, messages: Conversation) -> list[int]:
    """Token ids of a conversation through the model's chat template, ready for the reply."""
    return render_ids_batch(tokenizer, [messages])[0]


def render_ids_batch(tokenizer, conversations: Sequence[Conversation]) -> list[list[int]]:
    """render_ids for many conversations with one batched encode."""
    return render_batch(tokenizer, conversations)[1]


def render_batch(tokenizer, conversations: Sequence[Conversation]) -> tuple[list[str], list[list[int]]]:
    """The conversations through the chat template: their texts, and their token ids in one batched encode.

    Stage A's prompts are whole notes (thousands of tokens each); encoding them one by one took
    a large share of a stage A run, while one batch runs on the tokenizer's threads.
    The template's text is encoded without added special tokens: the template writes them itself.
    """
    if not conversations:
        return [], []
    texts = [tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
             for messages in conversations]
    return texts, [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def conversation_ids(tokenizer, conversations: Sequence[Conversation],
                     prompt_ids: Sequence[list[int] | None] | None = None) -> list[list[int]]:
    """The token ids an engine sends: `prompt_ids` where the caller has them (FittedPrompt), else rendered."""
    if prompt_ids is None or any(ids is None for ids in prompt_ids):
        return render_ids_batch(tokenizer, conversations)
    if len(prompt_ids) != len(conversations):
        raise ValueError(f"{len(prompt_ids)} token id lists for {len(conversations)} conversations")
    return [list(ids) for ids in prompt_ids]


def fit_notes(tokenizer, requests: Sequence[tuple[Conversation, str | None]],
              max_prompt_tokens: int) -> list[FittedPrompt]:
    """fit_note for many (conversation, note text) pairs: one batched render, then only the prompts
    that are too long are shortened, one by one. A conversation without a note is sent as it is.
    Each result carries its rendering (text and token ids), so nothing renders it again."""
    texts, rendered = render_batch(tokenizer, [messages for messages, _ in requests])
    return [FittedPrompt(messages, prompt_ids=ids, prompt_text=text) if note_text is None
            else fit_note(tokenizer, messages, note_text, max_prompt_tokens, prompt_ids=ids, prompt_text=text)
            for (messages, note_text), text, ids in zip(requests, texts, rendered)]


def fit_note(tokenizer, messages: Conversation, note_text: str, max_prompt_tokens: int,
             prompt_ids: list[int] | None = None, prompt_text: str | None = None) -> FittedPrompt:
    """Shorten the note inside `messages` until the rendered prompt fits `max_prompt_tokens`.

    Instructions and the request are kept whole; the middle of the note goes (its head has
    the history, its tail the discharge medications and plan). Cutting from the left, as
    the published code did, removed the system message and the instructions instead.
    `prompt_ids`, `prompt_text`: the rendering of `messages`, where the caller has it.
    """
    if prompt_ids is None or prompt_text is None:
        (prompt_text,), (prompt_ids,) = render_batch(tokenizer, [messages])
    total = len(prompt_ids)
    if total <= max_prompt_tokens:
        return FittedPrompt(messages, prompt_ids=prompt_ids, prompt_text=prompt_text)
    from clinical_distil.prompts import note_slot

    index, start, end = note_slot(messages, note_text)
    note_ids = tokenizer.encode(note_text, add_special_tokens=False)
    overhead = total - len(note_ids)
    mark_tokens = len(tokenizer.encode(TRUNCATION_MARK, add_special_tokens=False))
    keep = max_prompt_tokens - overhead - mark_tokens - 8  # a little slack for merges at the cut points
    if keep <= 0:
        raise InputError(f"the instructions alone take {overhead} tokens, more than the {max_prompt_tokens} "
                         "tokens left for the prompt; raise --max_model_len or lower --max_tokens")
    while True:
        head, tail = note_ids[: keep - keep // 2], note_ids[len(note_ids) - keep // 2:] if keep // 2 else []
        shortened = tokenizer.decode(head) + TRUNCATION_MARK + tokenizer.decode(tail)
        content = messages[index]["content"]
        fitted = [dict(message) for message in messages]
        fitted[index]["content"] = content[:start] + shortened + content[end:]
        (fitted_text,), (fitted_ids,) = render_batch(tokenizer, [fitted])
        if len(fitted_ids) <= max_prompt_tokens or keep <= 1:
            return FittedPrompt(fitted, True, len(note_ids) - keep, fitted_ids, fitted_text)
        keep -= max(1, keep // 50)
