"""Final-answer extraction, math equivalence (math-verify), exact match and the verifier API."""

from __future__ import annotations

import signal
import sys
import threading
import time

import pytest

from hazyzoo.evaluation import verifiers
from hazyzoo.evaluation.verifiers import (
    CodeVerifier,
    ExactMatchVerifier,
    MathVerifier,
    exact_match,
    extract_code,
    extract_final_answer,
    get_verifier,
    math_equal,
    verify_many,
)

pytest.importorskip("math_verify")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so x = 2, hence \\boxed{2}.", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("first \\boxed{1} then \\boxed{\\frac{3}{\\sqrt{4}}}", "\\frac{3}{\\sqrt{4}}"),
        ("the set \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{7} and a cut-off \\boxed{\\frac{1}{", "7"),
        ("\\fbox{9}", "9"),
        ("She sold 48/2 = 24 clips.\n#### 72", "72"),
        ("#### 1,000", "1000"),
        ("So the answer is 18.", "18"),
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
        ("**Answer:** 42", "42"),
        ("The answer is:\n  -7.5.", "-7.5"),
        ("The answer is 18 dollars.", "18"),
        ("the answer is \\$18.", "18"),
        ("We get 3 apples and 4 pears, 1,234,567 in all", "1234567"),
        ("half of it: 3/4", "3/4"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_final_answer(text: str, expected: str | None) -> None:
    assert extract_final_answer(text) == expected


def test_extract_final_answer_order_boxed_beats_gsm8k_beats_stated_beats_last_number() -> None:
    assert extract_final_answer("The answer is 3. #### 4 \\boxed{5} 6") == "5"
    assert extract_final_answer("The answer is 3.\n#### 4\n6") == "4"
    assert extract_final_answer("The answer is 3. Then 6 more.") == "3"


def test_extract_final_answer_is_linear_on_unclosed_boxes() -> None:
    start = time.monotonic()
    assert extract_final_answer("\\boxed{" * 50_000) is None
    assert time.monotonic() - start < 5


def test_extract_final_answer_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="text must be a str"):
        extract_final_answer(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("candidate", "reference"),
    [
        ("1/2", "0.5"),
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "\\frac{1}{2}"),
        ("\\dfrac{1}{2}", "\\frac12"),
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("1,000", "1000"),
        ("x+1", "1+x"),
        ("\\{1,2\\}", "\\{2,1\\}"),
        ("$\\frac{3}{4}$", "0.75"),
    ],
)
def test_math_equal_accepts_equivalent_forms(candidate: str, reference: str) -> None:
    assert math_equal(candidate, reference)


@pytest.mark.parametrize(
    ("candidate", "reference"),
    [("3", "4"), ("-5", "5"), ("\\sqrt{2}", "2"), ("x+1", "x-1"), ("(1,2)", "(2,1)")],
)
def test_math_equal_rejects_different_values(candidate: str, reference: str) -> None:
    assert not math_equal(candidate, reference)


def test_math_equal_edge_inputs() -> None:
    assert not math_equal(None, "1")
    assert not math_equal("   ", "1")
    with pytest.raises(ValueError, match="reference must be a non-empty"):
        math_equal("1", " ")
    with pytest.raises(TypeError, match="candidate must be a str or None"):
        math_equal(1, "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s must be a positive"):
        math_equal("1", "1", timeout_s=0)


def test_math_equal_falls_back_when_math_verify_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import math_verify

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("parser exploded")

    monkeypatch.setattr(math_verify, "parse", broken)
    assert math_equal("1/2", "0.5")  # exact numbers agree
    assert math_equal("\\text{ B }", "B")  # normalised strings agree
    assert not math_equal("3", "4")
    assert not math_equal("2\\sqrt{2}", "\\sqrt{8}")  # the fallback knows no algebra


def _in_thread(function):  # type: ignore[no-untyped-def]
    box: dict[str, object] = {}

    def target() -> None:
        box["value"] = function()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    return box["value"]


def test_math_equal_off_the_main_thread_uses_a_helper_process() -> None:
    pairs = [("1/2", "0.5"), ("2\\sqrt{2}", "\\sqrt{8}"), ("3", "4")]
    expected = [math_equal(c, r) for c, r in pairs]
    assert expected == [True, True, False]
    assert _in_thread(lambda: [math_equal(c, r) for c, r in pairs]) == expected
    assert verifiers._idle_math_workers  # the helper was kept for reuse


def test_pathological_input_is_bounded_in_every_thread() -> None:
    nested = "(" * 40 + "1" + ")" * 40  # math-verify's parser needs seconds on this
    start = time.monotonic()
    assert not math_equal(nested, "2", timeout_s=1)
    assert time.monotonic() - start < 8
    start = time.monotonic()
    assert not _in_thread(lambda: math_equal(nested, "2", timeout_s=1))
    assert time.monotonic() - start < 8


def test_a_late_helper_process_is_killed() -> None:
    worker = verifiers._MathWorker()
    assert worker.compare("1/2", "0.5", 1.0) is True
    assert worker.compare("1/2", "0.5", 1.0, deadline_s=1e-6) is None
    assert not worker.alive


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGALRM")
def test_a_running_outer_alarm_survives_math_verify() -> None:
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 60)
        assert math_equal("\\frac{1}{3}", "0.3333333")
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 60
        assert not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_exact_match() -> None:
    assert exact_match("  Paris ", "paris")
    assert exact_match("New   York\tCity", "new york city")
    assert not exact_match("Paris", "paris", normalize=False)
    assert exact_match("Paris", "Paris", normalize=False)
    assert not exact_match("Paris!", "paris")
    assert not exact_match(None, "paris")
    with pytest.raises(TypeError, match="reference must be a str"):
        exact_match("a", 1)  # type: ignore[arg-type]


def test_math_verifier() -> None:
    verify = MathVerifier()
    assert verify("We halve it: $\\boxed{\\frac{1}{2}}$", "0.5")
    assert verify("48/2 = 24, 24 + 48 = 72.\n#### 72", "Natalia sold 48+24 = 72.\n#### 72")
    assert verify("so the total is 1,000 apples", "\\boxed{1000}")
    assert not verify("The answer is 71.", "72")
    assert not verify("I do not know.", "72")
    assert verify.check("The answer is 18.", "18") == (True, "18")
    assert verify.check("nothing", "18") == (False, None)


def test_exact_match_verifier() -> None:
    assert ExactMatchVerifier()("  YES ", "yes")
    assert not ExactMatchVerifier(normalize=False)("  YES ", "yes")
    with pytest.raises(TypeError, match="normalize must be a bool"):
        ExactMatchVerifier(normalize="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Here:\n```python\ndef f():\n    return 1\n```\nUse ```python\nf()\n```",
            "def f():\n    return 1\n",
        ),
        ("```cpp\nint x;\n```\n```\nprint(1)\n```", "print(1)\n"),
        ("```py\nprint(3)", "print(3)"),
        ("```Python3 solution.py\nx = 1\n```", "x = 1\n"),
        ("def f():\n    pass", "def f():\n    pass"),
    ],
)
def test_extract_code(text: str, expected: str) -> None:
    assert extract_code(text) == expected


def test_get_verifier() -> None:
    assert isinstance(get_verifier("math"), MathVerifier)
    assert isinstance(get_verifier("exact", normalize=False), ExactMatchVerifier)
    code = get_verifier("code", timeout_s=2.0)
    assert isinstance(code, CodeVerifier) and code.timeout_s == 2.0
    with pytest.raises(ValueError, match=r"name must be one of \['code', 'exact', 'math'\]"):
        get_verifier("regex")
    with pytest.raises(TypeError, match="name must be a str"):
        get_verifier(3)  # type: ignore[arg-type]


def test_verify_many_keeps_order_serial_and_threaded() -> None:
    math_items = [("\\boxed{2}", "2"), ("\\boxed{3}", "2"), ("#### 0.5", "1/2")]
    assert verify_many(MathVerifier(), math_items) == [True, False, True]
    code_items = [
        ("```python\ndef f(x):\n    return x * 2\n```", "assert f(2) == 4"),
        ("def f(x):\n    return x + 2", "assert f(3) == 6"),
        ("def f(x):\n    return 2 * x", "assert f(5) == 10"),
    ]
    assert verify_many(CodeVerifier(timeout_s=10), code_items, num_workers=2) == [
        True,
        False,
        True,
    ]
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        verify_many(MathVerifier(), math_items, num_workers=0)
    with pytest.raises(ValueError, match=r"items\[0\] must be a \(completion, reference\) pair"):
        verify_many(MathVerifier(), ["just a string"])  # type: ignore[list-item]
