"""Prompt formats token by token, the system prompt a model reads, the CoT budget, and the wording of the
specificity levels (issue 13, items 12-15).

The engines tokenise a rendered prompt with ``add_special_tokens=False``, so the rendered text must already hold what
each tokenizer's own rules add (its BOS). Golden files tests/golden/tokens-*.txt show the exact tokens, ids and
strings, of one conversation in each format: ChatML with and without a system prompt (the real SmolLM2 tokenizer,
from its GGUF as the offline study loads it), Llama-2-chat's [INST] template (the real template string, on a small
Llama tokenizer built here that adds BOS as Llama's does), and the Human/Assistant dialogue of base models with a
tokenizer that adds BOS (Llama-2 base) and one that adds none (GPT-2).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import _corpus
from selfcorrect import data
from selfcorrect.conditions import Registry, RegistryError, RoundRecord
from selfcorrect.formats import adds_bos, group_label_parts, render, system_prompt_used
from selfcorrect.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
REGISTRY = Registry.load()
DIALOGUE = REGISTRY.data["dialogue"]
SIX = ["Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"]
ELEVEN = SIX + ["Gender_identity", "Race_ethnicity", "Race_x_SES", "Race_x_gender", "SES"]
LEVELS = ["specificity_1", "specificity_2", "specificity_3", "specificity_4"]

# meta-llama/Llama-2-7b-chat-hf, tokenizer_config.json "chat_template", verbatim (the "\\n" are the template's own
# escapes inside its Jinja string literals)
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SYSTEM_PROMPT = "Answer the question in one sentence."


# ---------------------------------------------------------------------------------------------- tokenizers

@pytest.fixture(scope="module")
def smollm2():
    """The offline study's SmolLM2 tokenizer, loaded from the GGUF as src/selfcorrect/models.py loads it."""
    from selfcorrect.models import ModelSpec, load_tokenizer

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())["models"]["smollm2-135m-instruct"]
    return load_tokenizer(ModelSpec.from_config("smollm2-135m-instruct", cfg))


@pytest.fixture(scope="module")
def llama():
    """A small Llama tokenizer (transformers' LlamaTokenizer: Metaspace, byte fallback, BOS added by its
    post-processor as add_bos_token=True makes Llama's) with a BPE vocabulary trained on the benchmarks' text, and
    Llama-2-chat's chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    bpe = Tokenizer(models.BPE(byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    # every printable ASCII character and the newline are in the alphabet: the templates' markup ("[/INST]",
    # "<<SYS>>") is not in the benchmarks' text, and a character missing from the vocabulary would vanish
    alphabet = [chr(c) for c in range(32, 127)] + ["\n"]
    bpe.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                                            initial_alphabet=alphabet))
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = LlamaTokenizer(vocab=model["vocab"], merges=merges, add_bos_token=True)
    tok.chat_template = LLAMA2_CHAT_TEMPLATE
    assert tok("Human", add_special_tokens=True)["input_ids"][0] == tok.bos_token_id  # adds BOS, as Llama's does
    markup = "<s>[INST] <<SYS>>\nx\n<</SYS>>\n\nHuman: (a) Can't [/INST] The </s>"
    assert tok.decode(tok(markup, add_special_tokens=False)["input_ids"]) == markup  # no character lost
    return tok


@pytest.fixture(scope="module")
def gpt2_like(tiny_base_model):
    """conftest's tiny byte-level BPE tokenizer without a chat template: like GPT-2's, it adds no BOS."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base_model)
    assert tok("Human", add_special_tokens=True)["input_ids"][0] != tok.bos_token_id
    return tok


@pytest.fixture(scope="module")
def religion_0(shared_data) -> dict:
    bbq = data.load_bbq([shared_data / "bbq" / "data" / "Religion.jsonl"])
    return bbq[bbq["example_id"] == 0].iloc[0].to_dict()


def two_rounds(example: dict, fmt: str, tok, system_prompt: str | None = None) -> list[tuple[str, str]]:
    """The instruction condition's round-1 and round-2 prompts; round 1 answered with option (b) written out, as the
    logprob mode writes a previous answer."""
    task, spec = get_task("bbq"), REGISTRY.data["benchmarks"]["bbq"]
    conv1 = REGISTRY.conversation("instruction", "bbq", example, [])
    answer = task.previous_answer(example, conv1.prefix, spec, None, 1)
    conv2 = REGISTRY.conversation("instruction", "bbq", example, [RoundRecord(answer=answer)])
    return [("round 1", render(conv1, fmt, DIALOGUE, tok, system_prompt)),
            ("round 2", render(conv2, fmt, DIALOGUE, tok, system_prompt)), ("answer of round 1", answer)]


def token_listing(title: str, prompts: list[tuple[str, str]], tok) -> str:
    lines = [f"# {title}"]
    for name, text in prompts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        lines += [f"## {name}: text", text, f"## {name}: {len(ids)} tokens as the engine encodes them (id, token)"]
        lines += [f"{i}\t{t}" for i, t in zip(ids, tok.convert_ids_to_tokens(ids))]
    return "\n".join(lines) + "\n"


GOLDEN_CASES = {
    "tokens-chatml-smollm2": ("smollm2", "chat", None,
                              "ChatML, SmolLM2's own template, no system prompt given (its template writes a default one)"),
    "tokens-chatml-smollm2-system": ("smollm2", "chat", SYSTEM_PROMPT, "ChatML, SmolLM2's own template, a system prompt given"),
    "tokens-llama2-chat": ("llama", "chat", None, "Llama-2-chat's [INST] template, a tokenizer that adds BOS"),
    "tokens-base-bos": ("llama", "base", None, "Human/Assistant dialogue, a tokenizer that adds BOS (Llama-2 base)"),
    "tokens-base-no-bos": ("gpt2_like", "base", None, "Human/Assistant dialogue, a tokenizer that adds no BOS (GPT-2)"),
}


@pytest.mark.parametrize("name", list(GOLDEN_CASES))
def test_golden_tokens(name, religion_0, request):
    fixture, fmt, system_prompt, title = GOLDEN_CASES[name]
    tok = request.getfixturevalue(fixture)
    prompts = two_rounds(religion_0, fmt, tok, system_prompt)[:2]
    text = token_listing(f"{title}; BBQ Religion example 0, condition instruction", prompts, tok)
    path = GOLDEN / f"{name}.txt"
    if request.config.getoption("--update-golden"):
        path.write_text(text)
    assert text == path.read_text()


# ---------------------------------------------------------------------------------------------- BOS and prefix

def test_base_dialogue_gets_the_bos_its_tokenizer_adds_once(religion_0, llama):
    for _, prompt in two_rounds(religion_0, "base", llama)[:2]:
        ids = llama(prompt, add_special_tokens=False)["input_ids"]
        bare = prompt[len(llama.bos_token):].lstrip(" ")
        assert prompt.startswith(llama.bos_token) and bare.startswith("Human:")
        # exactly the tokens the tokenizer's own rules give the dialogue: BOS once, then "▁Human" as at a text's start
        assert ids == llama(bare, add_special_tokens=True)["input_ids"]
        assert ids.count(llama.bos_token_id) == 1


def test_base_dialogue_gets_no_bos_from_a_tokenizer_that_adds_none(religion_0, gpt2_like):
    for _, prompt in two_rounds(religion_0, "base", gpt2_like)[:2]:
        assert prompt.startswith("Human: ")
        assert gpt2_like.bos_token_id not in gpt2_like(prompt, add_special_tokens=False)["input_ids"]


def test_llama2_chat_keeps_the_templates_bos_once_and_spaces_the_answer_prefix(religion_0, llama):
    (_, round1), (_, round2), _ = two_rounds(religion_0, "chat", llama)
    for prompt in (round1, round2):
        ids = llama(prompt, add_special_tokens=False)["input_ids"]
        assert prompt.startswith("<s>[INST] ") and ids[0] == llama.bos_token_id and ids[1] != llama.bos_token_id
        assert prompt.endswith("[/INST] The answer is") and "[/INST]The" not in prompt
    # one BOS per user turn: the template's own multi-turn format ("... </s><s>[INST] ...")
    assert llama(round2, add_special_tokens=False)["input_ids"].count(llama.bos_token_id) == 2


@pytest.mark.parametrize("fixture,fmt", [("smollm2", "chat"), ("llama", "chat"), ("llama", "base"), ("gpt2_like", "base")])
def test_a_later_round_starts_with_the_earlier_prompt_and_its_answer(fixture, fmt, religion_0, request):
    """What the engine's KV reuse needs: round 2's text continues round 1's prompt with the answer the model gave."""
    (_, round1), (_, round2), (_, answer) = two_rounds(religion_0, fmt, request.getfixturevalue(fixture))
    assert round2.startswith(round1 + answer)


def test_smollm2_adds_no_bos_and_its_template_opens_the_prompt(religion_0, smollm2):
    prompt = two_rounds(religion_0, "chat", smollm2)[0][1]
    assert not adds_bos(smollm2)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\nThe answer is")
    assert smollm2(prompt, add_special_tokens=False)["input_ids"] == smollm2(prompt, add_special_tokens=True)["input_ids"]


# ---------------------------------------------------------------------------------------------- system prompt

def test_smollm2_reads_its_templates_default_system_prompt_when_none_is_given(religion_0, smollm2):
    assert system_prompt_used(smollm2, None) == SMOLLM2_DEFAULT_SYSTEM
    assert SMOLLM2_DEFAULT_SYSTEM in two_rounds(religion_0, "chat", smollm2)[0][1]


def test_a_given_system_prompt_replaces_smollm2s_default(religion_0, smollm2):
    assert system_prompt_used(smollm2, SYSTEM_PROMPT) == SYSTEM_PROMPT
    prompt = two_rounds(religion_0, "chat", smollm2, SYSTEM_PROMPT)[0][1]
    assert prompt.startswith(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n") and SMOLLM2_DEFAULT_SYSTEM not in prompt


def test_templates_without_a_default_and_base_dialogue_read_no_system_prompt(llama, tokenizer_chatml, gpt2_like):
    assert system_prompt_used(llama, None) is None
    assert system_prompt_used(llama, SYSTEM_PROMPT) == SYSTEM_PROMPT
    assert system_prompt_used(tokenizer_chatml, None) is None
    assert system_prompt_used(gpt2_like, None, "base") is None


def test_llama2_chat_writes_a_given_system_prompt_into_the_first_user_turn(religion_0, llama):
    prompt = two_rounds(religion_0, "chat", llama, SYSTEM_PROMPT)[0][1]
    assert prompt.startswith(f"<s>[INST] <<SYS>>\n{SYSTEM_PROMPT}\n<</SYS>>\n\n")


def test_a_system_prompt_for_base_dialogue_is_a_clear_error(religion_0, gpt2_like):
    with pytest.raises(ValueError, match=r"system_prompt 'Answer.*format 'base'.*use format: chat"):
        two_rounds(religion_0, "base", gpt2_like, SYSTEM_PROMPT)


@pytest.fixture(scope="module")
def tokenizer_chatml(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


# ---------------------------------------------------------------------------------------------- CoT budget

def test_cot_reasoning_budget_is_studys_256_on_the_grid_and_128_offline():
    offline = yaml.safe_load((ROOT / "config.yaml").read_text())["generation"]
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["generation"]
    assert paper["cot_max_new_tokens"] == 256  # STUDY.md: "default up to 256 new tokens"
    assert offline["cot_max_new_tokens"] == 128


# ---------------------------------------------------------------------------------------------- specificity levels

def level_texts(benchmark: str, example: dict) -> list[str]:
    """The instruction of each specificity level for one example, filled as conversations fill it."""
    values = REGISTRY.fields(benchmark, example)
    return [REGISTRY.condition(c)["instruction"][benchmark].format_map(values) for c in LEVELS]


ARTICLE = re.compile(r"\b([Aa]n?) (\w+)")


def article_errors(text: str) -> list[str]:
    """"a" before a vowel sound or "an" before a consonant sound (by first letter, with the usual exceptions)."""
    bad = []
    for article, word in ARTICLE.findall(text):
        w = word.lower()
        vowel_sound = (w[0] in "aeiou" and not w.startswith(("uni", "use", "eu", "one"))) or w.startswith(("hour", "honest"))
        if vowel_sound != (article.lower() == "an"):
            bad.append(f"{article} {word}")
    return bad


def check_levels(texts: list[str], where: str) -> None:
    for k in range(len(texts) - 1):
        shorter, longer = texts[k], texts[k + 1]
        assert shorter.endswith(".") and longer.startswith(shorter[:-1]) and len(longer) > len(shorter), \
            f"{where}: level {k + 2} does not say more than level {k + 1}: {shorter!r} -> {longer!r}"
    for text in texts:
        assert not article_errors(text), f"{where}: {article_errors(text)} in {text!r}"
        assert "  " not in text and text.endswith("."), f"{where}: {text!r}"


def check_group(tags: list[str], phrase: str, where: str) -> None:
    """No raw tag: each part of the phrase names people as a plural noun phrase; no list of more than four."""
    parts = group_label_parts(tags, REGISTRY.data["group_labels"])
    assert parts, f"{where}: {tags} have no label"
    for part in parts:
        assert re.search(r"\b(people|men|women)\b", part) or re.search(r"[a-z]s$", part), f"{where}: {part!r}"
        assert not re.search(r"[a-z][A-Z]|/|\bSES\b|\b[FM]\b", part), f"{where}: raw tag in {part!r}"
    assert 1 + phrase.count(", ") + phrase.count(" and ") <= 4, f"{where}: {phrase!r} lists too many groups"


@pytest.fixture(scope="module")
def bbq_six(bbq_paths):
    return data.load_bbq(bbq_paths).to_dict("records")


def test_every_real_bbq_example_gets_four_grammatical_levels_each_saying_more(bbq_six):
    assert len(bbq_six) == 11_956
    level4_groups = set()
    for ex in bbq_six:
        where = f"{ex['category']} {ex['example_id']}"
        texts = level_texts("bbq", ex)
        check_levels(texts, where)
        phrase = REGISTRY.fields("bbq", ex)["group"]
        assert texts[3].endswith(f", such as stereotypes about {phrase}.")
        check_group(list(ex["stereotyped_groups"]), phrase, where)
        level4_groups.add(phrase)
    assert {"older people", "younger people", "obese people", "Muslims", "people from African countries",
            "physically disabled people", "lesbian and gay people"} <= level4_groups


def template_examples(templates: Path) -> list[dict]:
    """One example per row of each of the 11 categories' templates, with the fields `fields` reads: the template's
    Known_stereotyped_groups (the released jsonl's stereotyped_groups), for Race_x_gender and Race_x_SES the
    Known_stereotyped_race and Known_stereotyped_var2."""
    out = []
    for category in ELEVEN:
        with open(templates / f"new_templates - {category}.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                groups = row.get("Known_stereotyped_groups") or row.get("Known_stereotyped_race")
                if not (row.get("Q_id") or "").strip() or not groups:
                    continue
                ex = {"category": category, "example_id": f"Q{row['Q_id']}", "stereotyped_groups": json.loads(groups)}
                if "Known_stereotyped_var2" in row:
                    ex["stereotyped_var2"] = row["Known_stereotyped_var2"]
                out.append(ex)
    return out


def test_every_template_of_the_eleven_categories_names_its_group_in_plain_english(shared_data):
    examples = template_examples(shared_data / "bbq" / "templates")
    assert {e["category"] for e in examples} == set(ELEVEN)
    for ex in examples:
        where = f"{ex['category']} template {ex['example_id']}"
        texts = level_texts("bbq", ex)
        check_levels(texts, where)
        tags = list(ex["stereotyped_groups"]) + ([ex["stereotyped_var2"]] if ex.get("stereotyped_var2") else [])
        check_group(tags, REGISTRY.fields("bbq", ex)["group"], where)
    by_id = {(e["category"], e["stereotyped_var2"], tuple(e["stereotyped_groups"])): e for e in examples
             if "stereotyped_var2" in e}
    assert REGISTRY.fields("bbq", by_id[("Race_x_gender", "F", ("Black", "African American"))])["group"] == "Black women"
    assert REGISTRY.fields("bbq", by_id[("Race_x_SES", "lowSES", ("White",))])["group"] == \
        "White people with low socioeconomic status"


def test_a_group_without_a_label_stops_only_the_texts_that_name_it(religion_0):
    martian = religion_0 | {"stereotyped_groups": ["Martian"]}
    assert REGISTRY.conversation("baseline", "bbq", martian, []).turns  # renders: it does not use {group}
    with pytest.raises(RegistryError, match=r"Religion example 0.*\['Martian'\].*group_labels in config/conditions.yaml"):
        REGISTRY.conversation("specificity_4", "bbq", martian, [])


def test_every_winogender_item_gets_four_grammatical_levels_each_saying_more(shared_data):
    wd = shared_data / "winogender" / "data"
    items = data.load_winogender(wd / "all_sentences.tsv", wd / "occupations-stats.tsv").to_dict("records")
    assert len(items) == 240
    for ex in items:
        texts = level_texts("winogender", ex)
        check_levels(texts, ex["example_id"])
        assert ex["occupation"] in texts[3]
    by_occupation = {ex["occupation"]: level_texts("winogender", ex)[3] for ex in items}
    assert "whether an accountant is a man or a woman." in by_occupation["accountant"]
    assert "whether a hygienist is a man or a woman." in by_occupation["hygienist"]


@pytest.mark.parametrize("case,group", [("gender: same race, other gender", "Black men"),
                                        ("SES: same race, other SES", "White people with low socioeconomic status")])
def test_intersectional_examples_as_loaded_name_race_and_second_variable(case, group, shared_data, tmp_path):
    """Race_x_gender and Race_x_SES examples built from the real templates as the BBQ generator writes them
    (tests/test_intersectional.py), loaded as the workflow loads them (the template's Known_stereotyped_var2 joined)."""
    from test_intersectional import cases, instantiate, template_row, write_category

    templates = shared_data / "bbq" / "templates"
    c = cases(templates)[case]
    category, q_id = c["q"]
    built = instantiate(template_row(templates, category, q_id), category, c["first"], c["second"], c["slots"],
                        words=c.get("words", ("", "")))
    for ex in data.load_bbq([write_category(tmp_path, category, built)], templates).to_dict("records"):
        assert level_texts("bbq", ex)[3].endswith(f", such as stereotypes about {group}.")


def test_methods_notes_state_each_format_choice():
    from selfcorrect.formats import methods_notes

    notes = " ".join(methods_notes())
    assert "BOS" in notes and "[/INST] The answer is" in notes and SMOLLM2_DEFAULT_SYSTEM in notes
    assert "reconstruction" in notes
