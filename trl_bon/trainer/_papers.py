"""Paper metadata for the model cards (TRL's `_paper` class attribute)."""

import textwrap


BOND_PAPER = {
    "title": "BOND: Aligning LLMs with Best-of-N Distillation",
    "id": "2407.14622",
    "citation": textwrap.dedent("""\
        @article{sessa2024bond,
            title        = {{BOND: Aligning LLMs with Best-of-N Distillation}},
            author       = {Pier Giuseppe Sessa and Robert Dadashi and L{\\'{e}}onard Hussenot and others},
            year         = 2024,
            journal      = {arXiv preprint arXiv:2407.14622},
            eprint       = {2407.14622},
            archivePrefix= {arXiv},
        }"""),
}

VBON_PAPER = {
    "title": "Variational Best-of-N Alignment",
    "id": "2407.06057",
    "citation": textwrap.dedent("""\
        @inproceedings{amini2025variational,
            title        = {{Variational Best-of-N Alignment}},
            author       = {Afra Amini and Tim Vieira and Elliott Ash and Ryan Cotterell},
            year         = 2025,
            booktitle    = {The Thirteenth International Conference on Learning Representations, {ICLR} 2025},
        }"""),
}
