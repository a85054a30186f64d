"""Model cards that say what was trained: TRL's card (which names the trainer class's method whatever the config, and
"[None]" as the base of a local model) with the configured method, the local base path, the settings and the paper."""

import os

from huggingface_hub import ModelCard

from .._trl_compat import get_config_model_id
from ._rloo_seams import trainer_name


_NONE_BASE = "[None](https://huggingface.co/None)"


class BoNModelCardMixin:
    """`create_model_card` with the trainer's method (`_card_method`) and settings table (`_card_settings`)."""

    def _card_method(self) -> str:
        return self._name

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        with trainer_name(self, self._card_method()):
            super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        path = os.path.join(self.args.output_dir, "README.md")
        if not self.is_world_process_zero() or not os.path.isfile(path):
            return
        card = ModelCard.load(path)
        base = get_config_model_id(self.accelerator.unwrap_model(self.model).config)
        card.text = card.text.replace(_NONE_BASE, f"the local model `{base}`" if base else "an unnamed model")
        rows = "\n".join(f"| {name} | {value} |" for name, value in self._card_settings().items())
        paper = f"[{self._paper['title']}](https://huggingface.co/papers/{self._paper['id']})"
        section = (
            f"\n## Best-of-N settings\n\nMethod: {self._card_method()} ({paper}), trained with trl-bon.\n\n"
            f"| setting | value |\n|---|---|\n{rows}\n"
        )
        marker = "\n### Framework versions"
        card.text = card.text.replace(marker, section + marker, 1) if marker in card.text else card.text + section
        card.save(path)
