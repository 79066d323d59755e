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
