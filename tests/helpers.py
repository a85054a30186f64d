"""Small helpers shared by the trainer tests (fixtures live in conftest.py)."""


def cpu_args(**overrides) -> dict:
    """Keyword arguments shared by every trainer test: CPU, fp32, no reporting, no checkpoints, seeded."""
    args = dict(
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    args.update(overrides)
    return args
