# /// script
# dependencies = [
#     "trl-bon",
# ]
# ///
"""Sample and score M reference completions per prompt for vBoN's reward CDF, the `trl-bon cache-ref-rewards`
subcommand.

    trl-bon cache-ref-rewards --config recipes/vbon/imdb_gpt2.yaml
    python -m trl_bon.scripts.cache_ref_rewards --config recipes/vbon/imdb_gpt2.yaml

It takes **the same flags and YAML as `trl-bon vbon`**, so the cache is built with exactly the training's model,
prompts (dataset, split and prompt transform), reward(s) and sampling settings (`max_completion_length`,
`temperature`, `top_p`, `top_k`, `min_p`, `repetition_penalty`, `generation_kwargs`, `chat_template_kwargs`), which
`VBoNTrainer` checks when it joins the cache, together with the reference model's and the reward's content
fingerprints. The cache goes to `--reference_cache_dir` (default `<output_dir>/_reference_rewards`), with M =
`--num_reference_samples` (default 300) samples per distinct prompt, `--reference_cache_batch_size` sequences per
`generate` call and `--seed`. The build is resumable: re-running skips finished shards (about 4,096 completions
each). The test split is cached too when `--eval_strategy` is not `no`. It runs in one process (no
`accelerate launch`); `--use_vllm` samples with an offline vLLM engine.
"""

import os
import sys

from trl_bon.scripts.utils import (
    BoNScriptArguments,
    check_model_paths,
    load_splits,
    model_init_kwargs,
    resolve_reward_funcs,
    run_main,
)


def run(script_args, training_args, model_args, dataset_args):
    from trl import get_quantization_config

    from trl_bon.ref_cache import build_reference_reward_cache
    from trl_bon.rewards import RewardScorer
    from trl_bon.sampling import Sampler

    reward_funcs = resolve_reward_funcs(script_args)
    check_model_paths(model_args, script_args)
    output_dir = training_args.reference_cache_dir or os.path.join(training_args.output_dir, "_reference_rewards")
    kwargs = model_init_kwargs(model_args, training_args)
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    sampler = Sampler(
        model_args.model_name_or_path,
        training_args.generation_settings,
        batch_size=training_args.reference_cache_batch_size,
        backend="vllm" if training_args.use_vllm else "transformers",
        seed=training_args.seed,
        model_init_kwargs=kwargs,
        # The vLLM engine takes the run's own vLLM settings (they used to be ignored: the default 0.9 share).
        vllm_kwargs={
            "gpu_memory_utilization": training_args.vllm_gpu_memory_utilization,
            "tensor_parallel_size": training_args.vllm_tensor_parallel_size,
            "max_model_len": training_args.vllm_max_model_length,
        },
        progress=not training_args.disable_tqdm,
    )
    reward = RewardScorer(reward_funcs, reward_weights=training_args.reward_weights)
    train, evaluation = load_splits(script_args, dataset_args, training_args, model_args.model_name_or_path)
    cache = None
    for name, split in (("train", train), ("eval", evaluation)):
        if split is None:
            continue
        print(
            f"Caching {training_args.num_reference_samples} reference rewards per prompt for the {name} split "
            f"({split.num_rows} rows) in {output_dir}"
        )
        cache = build_reference_reward_cache(
            sampler,
            split,
            reward,
            training_args.num_reference_samples,
            output_dir,
            prompt_id_column=training_args.prompt_id_column,
        )
    print(
        f"Reference-reward cache: {len(cache.rewards)} prompts in {output_dir}. Train with "
        f"`trl-bon vbon ... --reference_cache_dir {output_dir}`."
    )
    return cache


def make_parser(prog: str | None = None):
    from trl_bon import VBoNConfig
    from trl_bon.scripts.parser import training_parser

    parser = training_parser(BoNScriptArguments, VBoNConfig, prog)
    # The cache does not depend on N; a default lets the command run without the vBoN-only `--num_candidates`.
    parser.set_defaults(num_candidates=2)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(make_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
