"""The one text-normalization rule, shared by the leakage check (memlab.datagen.leakage) and the QA answer
matcher (memlab.metrics), so both agree on when two texts are "the same text"."""
from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Case-, punctuation- and whitespace-insensitive form: NFKC, then case-folded (`str.casefold`, the
    Unicode-correct caseless form: 'Straße' and 'STRASSE' both give 'strasse'; on ASCII it equals
    `lower()`), every punctuation (P*) or symbol (S*) character turned into a space, runs of whitespace
    collapsed to one space, stripped: "The  Cat, sat!" -> "the cat sat"."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) else ch for ch in text)
    return _SPACES.sub(" ", text).strip()


# ----------------------------------------------------------------------------------- plain chat template
# The one definition of the plain chat format (`User: …` / `Assistant: …<eos>` lines, docs/DESIGN.md §3.2):
# the Jinja template set on tokenizers by `--chat_template plain` (memlab.training) and the Python renderer
# used for tokenizers without a template (memlab.likelihood.render_chat) are both built from these pieces and
# give byte-identical text for system/user/assistant messages (tests/test_normalization.py).
PLAIN_USER, PLAIN_ASSISTANT = "User: ", "Assistant: "
PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\n' }}"
    "{% elif m['role'] == 'user' %}{{ '" + PLAIN_USER + "' + m['content'] + '\n' }}"
    "{% else %}{{ '" + PLAIN_ASSISTANT + "' + m['content'] + eos_token + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '" + PLAIN_ASSISTANT + "' }}{% endif %}")


def render_plain_chat(messages, eos_token: str | None, add_generation_prompt: bool = False) -> str:
    """`messages` in the plain chat format, as PLAIN_CHAT_TEMPLATE renders them (a role other than user or
    assistant is rendered as its bare content line, as before)."""
    parts = []
    for m in messages:
        if m["role"] == "user":
            parts.append(PLAIN_USER + m["content"] + "\n")
        elif m["role"] == "assistant":
            parts.append(PLAIN_ASSISTANT + m["content"] + (eos_token or "") + "\n")
        else:
            parts.append(m["content"] + "\n")
    if add_generation_prompt:
        parts.append(PLAIN_ASSISTANT)
    return "".join(parts)
