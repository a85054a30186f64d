"""mkdocs hook: render the TRL/transformers docstring references `[`~trl.SFTTrainer`]` as code.

The docstrings follow TRL's format, whose doc-builder turns `[`~module.Name`]` into a link showing `Name` (the `~`
drops the module path). mkdocs renders them as Markdown, where they would stay literal brackets; this hook rewrites
the rendered HTML to `<code>Name</code>` (or the full path without `~`).
"""

import re


REFERENCE = re.compile(r"\[<code>(~?)([\w.]+)(\(\))?</code>\]")


def _code(match: re.Match) -> str:
    short, path, call = match.groups()
    return f"<code>{path.rsplit('.', 1)[-1] if short else path}{call or ''}</code>"


def on_page_content(html: str, **kwargs) -> str:
    return REFERENCE.sub(_code, html)
