"""``sepo.policies.chat_template``: a template that cannot render, or that jinja's sandbox
stops, is a one-line error rather than a traceback out of the middle of a game."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sepo.core.errors import SepoError
from sepo.policies.chat_template import ChatTemplate, ChatTemplateError


class TemplateTokenizer:
    """Just enough of a tokenizer: renders ``template`` in jinja's sandbox, as
    transformers' ``apply_chat_template`` does."""

    def __init__(self, template: str) -> None:
        self.source = template

    def apply_chat_template(
        self, messages: Any, tokenize: bool, add_generation_prompt: bool
    ) -> str:
        template = ImmutableSandboxedEnvironment().from_string(self.source)
        return str(template.render(messages=messages, add_generation_prompt=add_generation_prompt))

    def get_added_vocab(self) -> dict[str, int]:
        return {}


MESSAGES = [{"role": "user", "content": "hello"}]


def test_a_plain_template_renders() -> None:
    t = ChatTemplate(
        TemplateTokenizer("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    )
    assert t.render(MESSAGES) == "user: hello\n"


@pytest.mark.parametrize(
    "template",
    [
        "{{ messages.__class__.__mro__ }}",  # the sandbox refuses private attributes
        "{{ ''.__class__.__subclasses__() }}",
        "{{ raise_exception('no') }}",  # an undefined function: a template error
        "{% for m in messages %}{{ m.content ",  # a syntax error
    ],
)
def test_a_template_that_fails_is_one_line(template: str) -> None:
    with pytest.raises(ChatTemplateError) as err:
        ChatTemplate(TemplateTokenizer(template)).render(MESSAGES)
    assert isinstance(err.value, SepoError)
    assert "\n" not in str(err.value) and "chat template" in str(err.value)


@pytest.mark.parametrize(
    "template",
    [
        # 10^10 empty iterations: each range is within the sandbox's 100,000 cap
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        # loops over the conversation itself, nested
        "{% set r = range(1000) %}{% for a in r %}{% for b in r %}{{ '' }}{% endfor %}{% endfor %}",
        # a macro that calls itself
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    ],
)
def test_a_template_that_does_not_end_is_stopped(template: str) -> None:
    import time

    started = time.perf_counter()
    with pytest.raises(ChatTemplateError) as err:
        ChatTemplate(TemplateTokenizer(template)).render(MESSAGES)
    assert time.perf_counter() - started < 30  # the first took hours before the bound
    assert "\n" not in str(err.value) and "chat template" in str(err.value)


def test_a_tracer_already_installed_is_restored() -> None:
    import sys

    def tracer(frame: Any, event: str, arg: Any) -> None:
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        ChatTemplate(TemplateTokenizer("{{ messages[0].content }}")).render(MESSAGES)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(previous)


def test_a_long_real_conversation_stays_far_below_the_bound() -> None:
    """The ChatML layout (SmolLM2's, Qwen's) over 200 messages uses a small share of
    :data:`TEMPLATE_STEP_LIMIT`."""
    import sys

    from sepo.policies.chat_template import TEMPLATE_STEP_LIMIT, _StepBudget

    chatml = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    conversation = [
        {"role": "user" if i % 2 else "assistant", "content": f"turn {i}"} for i in range(200)
    ]
    budget = _StepBudget(TEMPLATE_STEP_LIMIT)
    previous = sys.gettrace()
    sys.settrace(budget)
    try:
        TemplateTokenizer(chatml).apply_chat_template(conversation, False, True)
    finally:
        sys.settrace(previous)
    used = TEMPLATE_STEP_LIMIT - budget.left
    assert 0 < used < TEMPLATE_STEP_LIMIT / 100


def test_a_model_folder_whose_template_loops_is_one_line_and_writes_nothing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Through ``sepo eval``: exit 2, one line, no traceback, the earlier results kept."""
    import hashlib

    from typer.testing import CliRunner

    from sepo.cli.main import app

    pytest.importorskip("torch")
    runner = CliRunner()
    root = tmp_path_factory.mktemp("looping")
    model = root / "model"
    made = runner.invoke(app, ["model", "init", "--out", str(model)])
    assert made.exit_code == 0, made.output
    (model / "chat_template.jinja").write_text(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    )
    out = root / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": "run"}\n')
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    result = runner.invoke(
        app,
        [
            *("eval", "--game", "kuhn", "--policy", f"hf:{model}", "--episodes", "1"),
            *("--out", str(out), "--overwrite", "--max-new-tokens", "4"),
        ],
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "chat template" in errors[0], result.output
    assert "Traceback" not in result.output
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    assert after == before


def test_only_the_embedded_tiny_template_renders_without_the_count() -> None:
    """sepo's own template (one pass over the messages) skips the step count, which
    costs more than the rendering; any other template, even one character away, is
    counted."""
    import functools

    from sepo.policies.chat_template import bounded_render
    from sepo.policies.tiny import TINY_CHAT_TEMPLATE

    ours = TemplateTokenizer(TINY_CHAT_TEMPLATE)
    ours.chat_template = TINY_CHAT_TEMPLATE  # type: ignore[attr-defined]
    assert not isinstance(ChatTemplate(ours)._render_with, functools.partial)
    theirs = TemplateTokenizer(TINY_CHAT_TEMPLATE + " ")
    theirs.chat_template = TINY_CHAT_TEMPLATE + " "  # type: ignore[attr-defined]
    render = ChatTemplate(theirs)._render_with
    assert isinstance(render, functools.partial) and render.func is bounded_render
