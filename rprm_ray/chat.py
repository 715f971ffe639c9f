"""Chat templates: how a role's prompts reach its model.

`models.<role>.chat_template` is `auto` (the tokenizer's own template when it has one), `none`
(raw prompts) or a Jinja template file. With a template, every prompt a style writes (policy,
pointwise judge, pairwise judge) is rendered by `render_user_turn` as one user turn followed by
the assistant's generation prompt; the model's output continues the assistant turn. `ChatStyle`
applies it inside the style itself, so the SFT rows, the DPO pairs, the sampled prompts and the
P(Yes) scoring prompts all come from the same rendering of the same text.

`render_user_turn` renders the way `tokenizer.apply_chat_template(..., tokenize=False,
add_generation_prompt=True)` does (transformers' own Jinja renderer, the tokenizer's special
tokens as template variables), without holding a tokenizer, so a style travels to Ray actors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rprm_ray.prompts import PromptStyle, get_style

if TYPE_CHECKING:
    from rprm_ray.config import ModelSpec, Recipe


class ChatTemplateError(ValueError):
    pass


@dataclass(frozen=True)
class ChatTemplate:
    template: str
    special_tokens: tuple[tuple[str, str], ...]  # bos_token, eos_token, ... as the template sees them
    source: str  # where it came from, for messages


def render_user_turn(chat: ChatTemplate | None, text: str) -> str:
    """`text` as the user turn of a conversation, ending in the assistant's generation prompt
    (unchanged without a template). The one rendering function of every role."""
    if chat is None:
        return text
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template([[{"role": "user", "content": text}]], chat_template=chat.template,
                                        add_generation_prompt=True, **dict(chat.special_tokens))
    return rendered[0]


def _tokenizer_special_tokens(tok) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in tok.special_tokens_map.items() if isinstance(v, str)))


def load_chat_template(setting: str, model_dir: str | Path | None, where: str) -> ChatTemplate | None:
    """The template `setting` names for the model in `model_dir` (None: no template).
    `auto` takes the tokenizer's template (none if it has none), a path reads a Jinja file."""
    if setting == "none":
        return None
    tok = None
    if model_dir is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
    if setting == "auto":
        template = getattr(tok, "chat_template", None) if tok is not None else None
        if isinstance(template, dict):  # named templates: the default one renders conversations
            template = template.get("default")
        if not template:
            return None
        return ChatTemplate(template, _tokenizer_special_tokens(tok), f"{where}: the tokenizer's template")
    path = Path(setting).expanduser()
    if not path.is_file():
        raise ChatTemplateError(f"{where}: chat template file not found: {setting} (or use auto / none)")
    special = _tokenizer_special_tokens(tok) if tok is not None else ()
    return ChatTemplate(path.read_text(), special, f"{where}: {path}")


class ChatStyle(PromptStyle):
    """A prompt style whose prompts are rendered through a chat template; steps, separators and
    verdict parsing are the wrapped style's."""

    def __init__(self, base: PromptStyle, chat: ChatTemplate):
        self.base = base
        self.chat = chat
        self.name = base.name
        self.step_separator = base.step_separator
        self.step_stop = list(base.step_stop)
        self.recompute_first = base.recompute_first

    def policy_prompt(self, question: str) -> str:
        return render_user_turn(self.chat, self.base.policy_prompt(question))

    def judge_prompt(self, question: str, previous_steps: list[str], now_step: str) -> str:
        return render_user_turn(self.chat, self.base.judge_prompt(question, previous_steps, now_step))

    def pairwise_prompt(self, question: str, previous_steps: list[str], step_a: str, step_b: str) -> str:
        return render_user_turn(self.chat, self.base.pairwise_prompt(question, previous_steps, step_a, step_b))

    def format_step(self, step: str, index: int) -> str:
        return self.base.format_step(step, index)

    def split_steps(self, text: str) -> list[str]:
        return self.base.split_steps(text)

    def is_final_step(self, step: str) -> bool:
        return self.base.is_final_step(step)

    def extract_answer(self, steps_or_text: str | list[str]) -> str | None:
        return self.base.extract_answer(steps_or_text)

    def shown_step(self, now_step: str) -> str:
        return self.base.shown_step(now_step)

    def __getattr__(self, name: str):  # style-specific helpers (e.g. compact's answer_step)
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


def style_with_chat(style_name: str | PromptStyle, chat: ChatTemplate | None) -> PromptStyle:
    style = get_style(style_name)
    return style if chat is None else ChatStyle(style, chat)


def spec_chat_template(spec: ModelSpec, model_dir: str | Path | None, where: str) -> ChatTemplate | None:
    """A model spec's template. A tiny model's tokenizer has none (`auto` gives raw prompts)."""
    if spec.is_tiny:
        return None if spec.chat_template in ("auto", "none") else load_chat_template(spec.chat_template, None, where)
    return load_chat_template(spec.chat_template, model_dir, where)


_role_styles: dict[tuple[str, str], PromptStyle] = {}


def role_style(recipe: Recipe, role: str) -> PromptStyle:
    """The prompt style of `role` ("policy" / "judge"; a self-judging policy's judge is the
    policy): the recipe's prompt_style rendered through that role's chat template."""
    from rprm_ray.hub import resolve_model

    spec = recipe.models.policy
    if role == "judge" and recipe.judge_model is not None:
        spec = recipe.judge_model
    else:
        role = "policy"
    key = (recipe.model_dump_json(include={"models"}), recipe.distinct_judge_prompts, role)
    if key not in _role_styles:
        model_dir = None if spec.is_tiny else resolve_model(spec.name_or_path, revision=spec.revision,
                                                            cache=recipe.models.hub_cache,
                                                            where=f"models.{role}.name_or_path")
        chat = spec_chat_template(spec, model_dir, f"models.{role}.chat_template")
        style = get_style(recipe.models.prompt_style, distinct_judge_prompts=recipe.distinct_judge_prompts)
        _role_styles[key] = style_with_chat(style, chat)
    return _role_styles[key]
