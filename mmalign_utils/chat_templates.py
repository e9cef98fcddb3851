"""The two chat templates the project pins, and one way to render them.

TOY_CHAT_TEMPLATE   SmolLM2-135M-Instruct's ChatML, exactly as the template in its GGUF renders text-only chats
                    (default system prompt included when no system turn is given), so the base LLM and the toy
                    LLaVA see identical text prompts.
PAPER_CHAT_TEMPLATE LLaVA-1.5's `vicuna_v1` conversation (llava/conversation.py: `conv_vicuna_v1`,
                    SeparatorStyle.TWO, sep " ", sep2 "</s>"), used by the paper for training, sampling and
                    MT-Bench; it starts with the BOS token `<s>` that LLaVA's tokenizer prepended.

Both accept message content as a string or as a list of parts `{"type": "image"}` / `{"type": "text", "text": ...}`
(TRL's conversational vision format); each image part renders as "<image>\\n" where it stands. Both wrap every
assistant reply, end token included, in `{% generation %}...{% endgeneration %}`, so that
`return_assistant_tokens_mask=True` and TRL's `assistant_only_loss=True` train on the reply and on stopping.

Rendered strings already contain their special tokens: tokenize them with `add_special_tokens=False` (as
`apply_chat_template` and TRL's collators do), or Vicuna gets a second `<s>`.
"""
from __future__ import annotations

from typing import Any

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# Renders a message's content: a plain string, or image/text parts in order. Unknown part types are an error
# rather than silently dropped, so a dataset in the wrong format fails loudly.
_CONTENT_MACRO = """\
{%- macro render_content(content) -%}
{%- if content is string -%}{{- content -}}
{%- else -%}{%- for part in content -%}
{%- if part['type'] == 'image' -%}{{- '<image>\\n' -}}
{%- elif part['type'] == 'text' -%}{{- part['text'] -}}
{%- else -%}{{- raise_exception('unsupported content part type: ' + part['type']) -}}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
"""

# The message loop must stay at the template's top level (not inside a macro): transformers finds the
# {% generation %} spans by counting the characters yielded before them.
TOY_CHAT_TEMPLATE = _CONTENT_MACRO + """\
{%- for message in messages -%}
{%- if loop.first and messages[0]['role'] != 'system' -%}
{{- '<|im_start|>system\\n""" + SMOLLM2_DEFAULT_SYSTEM + """<|im_end|>\\n' -}}
{%- endif -%}
{{- '<|im_start|>' + message['role'] + '\\n' -}}
{%- if message['role'] == 'assistant' -%}
{%- generation -%}{{- render_content(message['content']) + '<|im_end|>' -}}{%- endgeneration -%}
{{- '\\n' -}}
{%- else -%}
{{- render_content(message['content']) + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""

# conv_vicuna_v1.get_prompt(): system + sep, then "ROLE: message" + (sep after a user turn, sep2 after an
# assistant turn), and a bare "ASSISTANT:" as the generation prompt. A system turn replaces the default sentence.
PAPER_CHAT_TEMPLATE = _CONTENT_MACRO + """\
{{- bos_token -}}
{%- if messages and messages[0]['role'] == 'system' -%}
{{- render_content(messages[0]['content']) + ' ' -}}
{%- else -%}
{{- '""" + VICUNA_V1_SYSTEM.replace("'", "\\'") + """ ' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message['role'] == 'user' -%}
{{- 'USER: ' + render_content(message['content']) + ' ' -}}
{%- elif message['role'] == 'assistant' -%}
{{- 'ASSISTANT: ' -}}
{%- generation -%}{{- render_content(message['content']) + '</s>' -}}{%- endgeneration -%}
{%- elif message['role'] != 'system' or not loop.first -%}
{{- raise_exception('vicuna_v1 has roles system (first only), user and assistant, not ' + message['role']) -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}
"""

CHAT_TEMPLATES = {"toy": TOY_CHAT_TEMPLATE, "paper": PAPER_CHAT_TEMPLATE}


def render_chat(processor_or_tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The text a model sees for `messages`, rendered with the chat template pinned on the processor/tokenizer."""
    rendered = processor_or_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    # Processors may return a one-element list for a single conversation.
    return rendered[0] if isinstance(rendered, list) else rendered
