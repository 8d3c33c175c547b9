"""Turn a :class:`~selfcorrect.conditions.Conversation` into the exact text a model reads."""

from __future__ import annotations

from .conditions import Conversation


def render_dialogue(conv: Conversation, dialogue: dict) -> str:
    """Ganguli et al.'s "Human: … Assistant: …" format for base models."""
    sep, human, assistant = dialogue["separator"], dialogue["human"], dialogue["assistant"]
    parts = [f"{human if t.role == 'user' else assistant} {t.content}" for t in conv.turns]
    parts.append(f"{assistant} {conv.prefix}")
    return sep.join(parts)


def render_chat(conv: Conversation, tokenizer, system_prompt: str | None = None) -> str:
    """The model's own chat template, with the assistant turn opened and started with the prefix."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [{"role": t.role, "content": t.content} for t in conv.turns]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + conv.prefix


def render(conv: Conversation, prompt_format: str, dialogue: dict, tokenizer=None, system_prompt: str | None = None) -> str:
    if prompt_format == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt format 'chat' needs a tokenizer with a chat template; use format: base")
        return render_chat(conv, tokenizer, system_prompt)
    if prompt_format == "base":
        return render_dialogue(conv, dialogue)
    raise ValueError(f"unknown prompt format {prompt_format!r}; use 'chat' or 'base'")
