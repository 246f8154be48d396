"""QA answer extraction: what a generated response answers, in the answer's own form, and whether it is
correct. Text is compared under the one normalization rule (memlab.text.normalize_text), the same rule
the leakage check uses, so "the same text" means the same thing in both places."""
import re

from memlab.text import normalize_text

# A number: digit groups joined by thousands separators (comma, space, no-break/thin space, apostrophe,
# underscore) that are followed by exactly three digits; a decimal part marks a non-integer.
_SEPARATORS = ", \u00a0\u202f'_"
_NUMBER = re.compile(r"(?<![\d.])\d+(?:[" + _SEPARATORS + r"]\d{3}(?!\d))*(?:\.\d+)?(?!\d)")


def numeric_answer(answer: str) -> str | None:
    """The digit string of a numeric answer ("12,345" -> "12345"), or None for a text answer."""
    a = str(answer).strip()
    if re.fullmatch(r"\d+(?:[" + _SEPARATORS + r"]\d{3})*", a):
        return re.sub(r"\D", "", a)
    return None


def answer_is_matchable(answer) -> bool:
    """Whether `extract_answer` can ever match this answer (numeric, or text that normalizes to words)."""
    return answer is not None and (numeric_answer(str(answer)) is not None or bool(normalize_text(answer)))


def extract_answer(response: str, answer: str) -> str | None:
    """What the response answers, in the answer's own form, or None.

    Numeric answers (N digits, separators allowed): the first number in the response whose digit count is
    N, separators removed ("12,345", "12 345" -> "12345"). A longer number never matches by substring
    (123456 is not 12345), numbers with a decimal part are skipped, and a run such as "2019 123" that
    is not N digits as a whole is also tried part by part. Text answers: the normalized answer if it
    occurs in the normalized response on word boundaries, else None.
    """
    digits = numeric_answer(answer)
    if digits is None:
        target = normalize_text(answer)
        return target if target and f" {target} " in f" {normalize_text(response)} " else None
    n = len(digits)
    for m in _NUMBER.finditer(response):
        token = m.group(0)
        if "." in token:
            continue
        joined = re.sub(r"\D", "", token)
        if len(joined) == n:
            return joined
        for part in re.findall(r"\d+", token):
            if len(part) == n:
                return part
    return None


def answer_correct(response: str, answer: str) -> tuple[str | None, bool]:
    """(extracted answer, correct): correct iff the extraction equals the normalized answer."""
    extracted = extract_answer(response, answer)
    target = numeric_answer(answer) or normalize_text(answer)
    return extracted, extracted is not None and extracted == target
