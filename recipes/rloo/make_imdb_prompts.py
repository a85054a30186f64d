# /// script
# dependencies = [
#     "trl-bon",
# ]
# ///
"""Write the IMDB prompt dataset used by the plain-TRL RLOO baseline (`recipes/rloo/imdb_gpt2.yaml`).

    python recipes/rloo/make_imdb_prompts.py --output_dir data/imdb_prompts

`trl rloo` has no prompt transform, so the 2-8-token review prefixes are written once to
`<output_dir>/{train,test}.jsonl` (one `{"prompt": ...}` per line). They are built by the same function and seed as
the trl-bon recipes' `prompt_column`/`prompt_min_tokens`/`prompt_max_tokens` options
(`trl_bon.scripts.utils.make_prompts`), so every method trains and is evaluated on identical prompts.
"""

import argparse
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="data/imdb_prompts")
    parser.add_argument("--tokenizer", default="lvwerra/gpt2-imdb")
    parser.add_argument("--dataset_name", default="stanfordnlp/imdb")
    parser.add_argument("--min_tokens", type=int, default=2)
    parser.add_argument("--max_tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from datasets import load_dataset
    from transformers import AutoTokenizer

    from trl_bon.scripts.utils import make_prompts

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    dataset = load_dataset(args.dataset_name)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        prompts = make_prompts(dataset[split], tokenizer, "text", args.min_tokens, args.max_tokens, args.seed)
        prompts.select_columns(["prompt"]).to_json(f"{args.output_dir}/{split}.jsonl")
        print(f"{split}: {prompts.num_rows} prompts -> {args.output_dir}/{split}.jsonl")


if __name__ == "__main__":
    main()
