# /// script
# dependencies = [
#     "trl-bon",
# ]
# ///
"""Sample and score M reference completions per prompt for vBoN's reward CDF, the `trl-bon cache-ref-rewards`
subcommand. It takes **the same flags and YAML as `trl-bon vbon`**, so the cache has the training's model, prompts,
rewards and sampling settings, which `VBoNTrainer` checks (docs/vbon_trainer.md).

    trl-bon cache-ref-rewards --config recipes/vbon/imdb_gpt2.yaml
"""

import os
import sys


def run(script_args, training_args, model_args, dataset_args):
    from trl import get_quantization_config

    from trl_bon.ref_cache import build_reference_reward_cache
    from trl_bon.rewards import RewardScorer
    from trl_bon.sampling import Sampler
    from trl_bon.scripts.utils import check_model_paths, load_splits, model_init_kwargs, resolve_reward_funcs

    reward_funcs = resolve_reward_funcs(script_args)
    check_model_paths(model_args, script_args)
    output_dir = training_args.reference_cache_dir or os.path.join(training_args.output_dir, "_reference_rewards")
    kwargs = model_init_kwargs(model_args, training_args)
    # Reward models load as `VBoNTrainer` (TRL) loads them, so the cached rewards are the ones training compares with.
    reward = RewardScorer(reward_funcs, reward_weights=training_args.reward_weights, model_init_kwargs=kwargs)
    if (quantization_config := get_quantization_config(model_args)) is not None:  # the policy's only
        kwargs = {**kwargs, "quantization_config": quantization_config}
    sampler = Sampler(
        model_args.model_name_or_path,
        training_args.generation_settings,
        batch_size=training_args.reference_cache_batch_size,
        backend="vllm" if training_args.use_vllm else "transformers",
        seed=training_args.seed,
        model_init_kwargs=kwargs,
        vllm_kwargs={
            "gpu_memory_utilization": training_args.vllm_gpu_memory_utilization,
            "tensor_parallel_size": training_args.vllm_tensor_parallel_size,
            "max_model_len": training_args.vllm_max_model_length,
        },
        progress=not training_args.disable_tqdm,
    )
    train, evaluation = load_splits(script_args, dataset_args, training_args, model_args.model_name_or_path)
    num_samples, cache = training_args.num_reference_samples, None
    for name, split in (("train", train), ("eval", evaluation)):
        if split is None:
            continue
        print(f"Caching {num_samples} reference rewards per prompt for the {name} split ({split.num_rows} rows)")
        cache = build_reference_reward_cache(
            sampler, split, reward, num_samples, output_dir, prompt_id_column=training_args.prompt_id_column
        )
    print(
        f"Reference-reward cache: {len(cache)} prompts in {output_dir}. Train with "
        f"`trl-bon vbon ... --reference_cache_dir {output_dir}`."
    )
    return cache


def make_parser(prog: str | None = None):
    from trl_bon import VBoNConfig
    from trl_bon.scripts.parser import training_parser
    from trl_bon.scripts.utils import BoNScriptArguments

    parser = training_parser(BoNScriptArguments, VBoNConfig, prog)
    # The cache does not depend on N; a default lets the command run without the vBoN-only `--num_candidates`.
    parser.set_defaults(num_candidates=2)
    return parser


def main(argv: list[str] | None = None) -> int:
    run(*make_parser().parse_args_and_config(argv, fail_with_unknown_args=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
