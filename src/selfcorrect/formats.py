"""Turn a :class:`~selfcorrect.conditions.Conversation` into the exact text a model reads, token for token.

The engines tokenise this text with ``add_special_tokens=False``, so whatever a tokenizer's own rules add around a
text (its BOS) would be lost: it is written into the text here instead, as the special token's literal string,
which the tokenizer parses back into that one token. Per format:

* ``chat``: the model's own chat template, as Hugging Face renders it. A template that writes BOS itself
  (Llama-2-chat: ``bos_token + '[INST] '`` before every user turn) keeps it; where the template does not and the
  tokenizer adds BOS by its own rules, BOS is prepended; never both. The answer prefix starts the assistant turn,
  one space after a generation prompt that ends without whitespace (Llama-2-chat's ``[/INST]``: Meta's format is
  ``[/INST] {answer}``, and the template writes finished assistant turns the same way, so a later round's prompt
  still starts with the earlier one).
* ``base``: Ganguli et al.'s "Human: … Assistant: …" dialogue, with BOS where the tokenizer adds it (Llama-2 base),
  none where it adds none (GPT-2, OLMo).

The second half holds the English the instructions' placeholders are written in (articles, lists, group labels).
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2.exceptions import TemplateError

from .conditions import Conversation, RegistryError

# Stand-ins for message contents when a chat template is probed for what it writes around them
_SYSTEM_PROBE, _USER_PROBE = "\u00a7system-probe\u00a7", "\u00a7user-probe\u00a7"


# ---------------------------------------------------------------------------------------------- BOS

def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer's own rules (its post-processor, ``add_bos_token``) put BOS before a text."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if tokenizer is None or bos_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos_id


def with_bos(text: str, tokenizer) -> str:
    """``text`` with the BOS the tokenizer's own rules put before it, written as text, so that tokenising the result
    with ``add_special_tokens=False`` gives what ``tokenizer(text)`` gives. Unchanged for a tokenizer that adds no
    BOS, and for a text that already starts with it (a chat template that writes it): BOS is never doubled."""
    if not adds_bos(tokenizer) or text.startswith(tokenizer.bos_token):
        return text
    wanted = tokenizer(text, add_special_tokens=True)["input_ids"]
    # After a special token written as text, a tokenizer whose pre-tokenizer marks only the start of the whole text
    # as word-initial (Metaspace with prepend_scheme "first": transformers 5's Llama tokenizers) no longer marks the
    # first word ("<s>Human" -> "<s>", "H", ...): a space after BOS restores its "▁Human". A tokenizer that marks
    # every segment (legacy Llama) needs no space. Either way the text is the one whose tokens are the tokenizer's.
    for join in ("", " "):
        candidate = tokenizer.bos_token + join + text
        ids = tokenizer(candidate, add_special_tokens=False)["input_ids"]
        if wanted[:len(ids)] == ids:
            return candidate
    return tokenizer.bos_token + text  # no join reproduces it exactly; BOS is there once all the same


# ---------------------------------------------------------------------------------------------- formats

def render_dialogue(conv: Conversation, dialogue: dict, tokenizer=None) -> str:
    """Ganguli et al.'s "Human: … Assistant: …" format for base models, with the tokenizer's BOS if it adds one."""
    sep, human, assistant = dialogue["separator"], dialogue["human"], dialogue["assistant"]
    parts = [f"{human if t.role == 'user' else assistant} {t.content}" for t in conv.turns]
    parts.append(f"{assistant} {conv.prefix}")
    return with_bos(sep.join(parts), tokenizer)


def render_chat(conv: Conversation, tokenizer, system_prompt: str | None = None) -> str:
    """The model's own chat template, with the assistant turn opened and started with the prefix.

    Without ``system_prompt`` no system message is sent; a template may still write its own default system turn
    (SmolLM2's does): :func:`system_prompt_used` says what the model reads.
    """
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [{"role": t.role, "content": t.content} for t in conv.turns]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if conv.prefix and text and not text[-1].isspace():
        text += " "
    return with_bos(text + conv.prefix, tokenizer)


def render(conv: Conversation, prompt_format: str, dialogue: dict, tokenizer=None, system_prompt: str | None = None) -> str:
    if prompt_format == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt format 'chat' needs a tokenizer with a chat template; use format: base")
        return render_chat(conv, tokenizer, system_prompt)
    if prompt_format == "base":
        if system_prompt:
            raise ValueError(f"system_prompt {system_prompt!r} given for prompt format 'base', whose Human/Assistant "
                             "dialogue has no system turn; drop system_prompt from the model's config or use format: chat")
        return render_dialogue(conv, dialogue, tokenizer)
    raise ValueError(f"unknown prompt format {prompt_format!r}; use 'chat' or 'base'")


def system_prompt_used(tokenizer, system_prompt: str | None, prompt_format: str = "chat") -> str | None:
    """The system text the model actually reads: ``system_prompt`` where one is given and the chat template writes
    it, else the default system turn the template writes by itself (SmolLM2's "You are a helpful AI assistant named
    SmolLM, trained by Hugging Face"); None where there is none (base dialogue, Llama-2-chat's template)."""
    if prompt_format != "chat" or not getattr(tokenizer, "chat_template", None):
        return None

    def before_user(messages: list[dict]) -> str:
        text = tokenizer.apply_chat_template(messages + [{"role": "user", "content": _USER_PROBE}], tokenize=False,
                                             add_generation_prompt=True)
        return text.split(_USER_PROBE, 1)[0]

    try:
        slot = before_user([{"role": "system", "content": _SYSTEM_PROBE}])
    except TemplateError:  # a template that refuses the system role (Gemma's) writes no system text
        return None
    if _SYSTEM_PROBE not in slot:  # a template that drops system messages
        return None
    if system_prompt:
        return system_prompt
    # The template's markup around a system text, e.g. "<|im_start|>system\n" ... "<|im_end|>\n<|im_start|>user\n":
    # what it writes there without a system message is its default system prompt.
    head, tail = slot.split(_SYSTEM_PROBE, 1)
    bare = before_user([])
    if bare.startswith(head) and bare.endswith(tail) and len(bare) > len(head) + len(tail):
        return bare[len(head):len(bare) - len(tail)]
    return None


# ---------------------------------------------------------------------------------------------- English

# Words spelt with a vowel but said with a consonant ("a university") or spelt with a silent h ("an hour")
_CONSONANT_SOUND_STARTS = ("uni", "use", "usu", "uti", "ure", "eu", "ewe", "one", "once")
_SILENT_H_STARTS = ("hour", "honest", "honor", "honour", "heir")


def indefinite_article(word: str) -> str:
    """"a" or "an", by the sound the word starts with."""
    w = word.strip().lower()
    if w.startswith(_SILENT_H_STARTS):
        return "an"
    if w and w[0] in "aeiou" and not w.startswith(_CONSONANT_SOUND_STARTS):
        return "an"
    return "a"


def with_article(noun_phrase: str) -> str:
    """"an accountant", "a hygienist"."""
    return f"{indefinite_article(noun_phrase)} {noun_phrase}"


def join_and(items: list[str]) -> str:
    """"A", "A and B", "A, B and C"."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# A group_labels key naming a set of tags that is written as one group ("Black + African American")
GROUP_KEY_SEPARATOR = " + "


@dataclass(frozen=True)
class Unwritable:
    """A placeholder value that has no wording (a group tag without a label): it stops a text that uses it, with
    ``reason``, and lets every text that does not use it render."""

    reason: str

    def __format__(self, spec: str) -> str:
        raise RegistryError(self.reason)

    def __str__(self) -> str:
        raise RegistryError(self.reason)


def group_label_parts(tags: list[str], labels: dict) -> list[str] | None:
    """The labels that name a set of stereotyped-group tags: the set's own entry in ``labels`` (a key of tags joined
    by " + ", in any order) where there is one, else one label per tag; None if a tag has no label."""
    by_set = {frozenset(str(k).split(GROUP_KEY_SEPARATOR)): v for k, v in labels.items()}
    tags = list(dict.fromkeys(tags))
    if not tags:
        return None
    whole = by_set.get(frozenset(tags))
    if whole:
        return [whole]
    parts = [by_set.get(frozenset([t])) for t in tags]
    return None if not all(parts) else parts


def group_phrase(tags: list[str], labels: dict, where: str) -> str | Unwritable:
    """The stereotyped groups ``tags`` as a reader would name them ("older people"; "Muslims, Mormons, Orthodox
    believers and Catholics"), or an :class:`Unwritable` naming the tags that have no label."""
    parts = group_label_parts(tags, labels)
    if parts is None:
        key = GROUP_KEY_SEPARATOR.join(tags)
        return Unwritable(
            f"{where}: the stereotyped group(s) {tags} have no label under group_labels in config/conditions.yaml, so "
            f"{{group}} cannot be written; add a label for each tag, or one for the set (key {key!r}), e.g. "
            f"`{key}: <the group in plain English, plural>`"
        )
    return join_and(parts)


# ---------------------------------------------------------------------------------------------- methods page

def methods_notes() -> list[str]:
    """One sentence per prompt-format choice, for the report's methods page (the model's own system text is
    :func:`system_prompt_used`, per model)."""
    return [
        "Prompts are tokenised as rendered, without the tokenizer adding special tokens; where a tokenizer adds BOS "
        "by its own rules (Llama-2) and the chat template or the Human/Assistant dialogue does not write it, BOS is "
        "written before the prompt, so that the model reads it exactly once at the start, as its tokenizer would put "
        "it; a chat template that writes BOS itself (Llama-2-chat) keeps its own, and a model whose tokenizer adds "
        "none (GPT-2, OLMo) gets none.",
        "The answer prefix starts the assistant turn, one space after a chat template's generation prompt that ends "
        "without whitespace (Llama-2-chat: '[/INST] The answer is', as Meta's format writes answers).",
        "No system prompt is passed unless the model's config sets one; a chat template that writes a default system "
        "turn by itself keeps it (SmolLM2's: 'You are a helpful AI assistant named SmolLM, trained by Hugging Face'), "
        "because that turn is part of the format the model was tuned on; the system text each model read is listed "
        "with the models.",
        "Specificity levels (our reconstruction): each level's instruction is the level before it with more of the "
        "norm named: 'unbiased'; plus 'does not rely on stereotypes' (Ganguli et al.'s instruction); plus the bias "
        "type (BBQ: the category; Winogender: gender stereotyping about occupations); plus the example's own "
        "stereotyped group in plain English (group_labels in config/conditions.yaml) or, for Winogender, its "
        "occupation.",
    ]
