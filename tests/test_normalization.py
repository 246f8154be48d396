"""One normalization rule (memlab.text.normalize_text): the leakage check and the QA answer matcher agree."""
import pytest

from memlab import answers, text
from memlab.datagen import leakage

TRICKY = [
    "Straße", "STRASSE", "strasse", "ẞ",  # German sharp s: casefold gives 'ss'
    "İstanbul", "ISTANBUL", "ıstanbul", "i̇stanbul",  # Turkish dotted / dotless I
    "Café", "Cafe\u0301", "CAFÉ", "ﬁnance", "①", "Ａｂｃ",  # accents (composed / combining), NFKC compatibility
    "ΣΊΣΥΦΟΣ", "σίσυφος", "σίσυφοσ",  # Greek final sigma
    "Hello, world!", "hello   world", "  hello\tworld\n", "hello\u00a0world", "o'clock", "e-mail", "$100 + 5%",
    "...", "", "   ", "a_b", "x²",
]


def test_leakage_and_matcher_share_one_rule():
    assert leakage.normalize_text is answers.normalize_text is text.normalize_text


@pytest.mark.parametrize("s", TRICKY)
def test_leakage_flags_exactly_what_the_matcher_calls_the_same_text(s):
    """The leakage check flags a held-out text iff the answer matcher would call it the training text."""
    for b in TRICKY:
        flagged = bool(leakage.find_overlaps([leakage.TextRef("train", "1", "text", s)],
                                             [leakage.TextRef("held_out", "2", "text", b)]))
        same = bool(text.normalize_text(s)) and text.normalize_text(s) == text.normalize_text(b)
        assert flagged == (same or s.strip() == b.strip()), (s, b)
        if same and answers.answer_is_matchable(s):
            assert answers.answer_correct(b, s)[1], (s, b)


def test_same_text_for_leakage_means_match_for_matcher():
    for a in TRICKY:
        for b in TRICKY:
            if answers.answer_is_matchable(a) and text.normalize_text(a) == text.normalize_text(b):
                assert answers.answer_correct(b, a) == (answers.normalize_text(a), True)  # same text -> correct


def test_case_folding():
    assert text.normalize_text("Straße") == text.normalize_text("STRASSE") == "strasse"
    assert text.normalize_text("ΣΊΣΥΦΟΣ") == text.normalize_text("σίσυφος")
    assert text.normalize_text("Café") == text.normalize_text("Cafe\u0301") == "café"
    assert answers.answer_correct("It is on the STRASSE.", "Straße") == ("strasse", True)


ASCII = {
    "The  Cat, sat!": "the cat sat",
    "Hello, World": "hello world",
    "  MIXED case\tand\nlines  ": "mixed case and lines",
    "e-mail o'clock": "e mail o clock",
    "$100 + 5%": "100 5",
    "snake_case": "snake case",  # '_' is punctuation (Pc)
    "": "",
}


def test_ascii_behaviour_unchanged():
    def old(s):  # the matcher's previous rule; on ASCII, lower() == casefold()
        import unicodedata
        s = unicodedata.normalize("NFKC", str(s)).lower()
        s = "".join(" " if unicodedata.category(c).startswith(("P", "S")) else c for c in s)
        return " ".join(s.split())
    for s in list(ASCII) + [chr(c) * 2 + " x" for c in range(32, 127)]:
        assert text.normalize_text(s) == old(s)
    for s, want in ASCII.items():
        assert text.normalize_text(s) == want
    assert answers.extract_answer("the capital is Paris.", "paris") == "paris"
    assert answers.answer_correct("It was 12,345 units", "12345") == ("12345", True)
    assert answers.extract_answer("Parisian", "Paris") is None


# ------------------------------------------------------------------ plain chat template: one definition
OLD_PLAIN_CHAT_TEMPLATE = (  # the literal memlab.training held before; checkpoints saved with it must not change
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\n' }}"
    "{% elif m['role'] == 'user' %}{{ 'User: ' + m['content'] + '\n' }}"
    "{% else %}{{ 'Assistant: ' + m['content'] + eos_token + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}")

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!\nHow can I help?"}, {"role": "user", "content": "Straße? {{ x }}"}],
    [{"role": "user", "content": "  spaced  "}],
    [],
]


def test_plain_chat_template_and_renderer_agree():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from memlab import likelihood, training
    assert training.PLAIN_CHAT_TEMPLATE == text.PLAIN_CHAT_TEMPLATE == OLD_PLAIN_CHAT_TEMPLATE
    tmpl = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(text.PLAIN_CHAT_TEMPLATE)

    class Tok:  # a tokenizer without a chat template: likelihood.render_chat falls back to the Python renderer
        chat_template = None
        eos_token = "</s>"
    for msgs in CONVERSATIONS:
        for gen in (False, True):
            want = tmpl.render(messages=msgs, eos_token="</s>", add_generation_prompt=gen)
            assert likelihood.render_chat(Tok(), msgs, add_generation_prompt=gen) == want
            assert text.render_plain_chat(msgs, "</s>", gen) == want
