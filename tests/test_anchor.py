"""Tests for `trl_bon.anchor`: LoRA and full-model anchors, their EMA, checkpoints and the per-step callback."""

import copy
import json
import warnings

import pytest
import torch

from tests.helpers import cpu_args


def _lora_model(path, **lora_kwargs):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, **lora_kwargs)
    return get_peft_model(AutoModelForCausalLM.from_pretrained(path), config)


def _adapter(model, adapter):
    """`{name with the adapter part replaced by '<a>': tensor}` for one adapter, to compare adapters by position."""
    marker = f".{adapter}."
    return {name.replace(marker, ".<a>."): param for name, param in model.named_parameters() if marker in name}


def _base(model):
    return {name: param.detach().clone() for name, param in model.named_parameters() if "lora_" not in name}


@torch.no_grad()
def _perturb(model, adapter="default", seed=0, scale=0.5):
    """Give the adapter random values: a fresh LoRA has B = 0, so policy = anchor = base and nothing is tested."""
    generator = torch.Generator().manual_seed(seed)
    for param in _adapter(model, adapter).values():
        param.copy_(torch.randn(param.shape, generator=generator) * scale)


def _inputs():
    return {"input_ids": torch.tensor([[1, 5, 9, 13, 17, 21]]), "attention_mask": torch.ones(1, 6, dtype=torch.long)}


@pytest.fixture
def lora(tiny_kit):
    """A LoRA policy with non-zero adapter weights, its anchor, and the policy perturbed away from the anchor."""
    from trl_bon.anchor import LoraAnchor

    model = _lora_model(tiny_kit["policy"])
    _perturb(model, seed=0)
    anchor = LoraAnchor(model)
    _perturb(model, seed=1)  # as if the policy had trained since
    return model, anchor


class TestLoraAnchor:
    def test_construction_copies_and_freezes(self, tiny_kit):
        from trl_bon.anchor import LoraAnchor

        model = _lora_model(tiny_kit["policy"])
        _perturb(model)
        anchor = LoraAnchor(model)
        policy, anchored = _adapter(model, "default"), _adapter(model, "anchor")
        assert policy.keys() == anchored.keys() and len(policy) == 8
        for key in policy:
            assert torch.equal(policy[key], anchored[key])
            assert policy[key].requires_grad and not anchored[key].requires_grad
        assert model.active_adapter == "default"
        shadows = anchor.state_dict()
        assert len(shadows) == 8 and all(tensor.dtype == torch.float32 for tensor in shadows.values())
        for name, param in model.named_parameters():
            if ".anchor." in name:
                assert torch.equal(shadows[name], param)

    def test_frozen_lora_a_stays_frozen_and_ema_is_exact_in_weight_space(self, tiny_kit):
        from trl_bon.anchor import LoraAnchor

        model = _lora_model(tiny_kit["policy"])
        _perturb(model)
        for name, param in model.named_parameters():  # LoRA-FA: only B trains
            if ".default." in name and "lora_A" in name:
                param.requires_grad_(False)
        flags = {name: param.requires_grad for name, param in model.named_parameters()}
        anchor = LoraAnchor(model)
        assert model.active_adapter == "default"
        assert {name: param.requires_grad for name, param in model.named_parameters() if name in flags} == flags
        with torch.no_grad():
            for name, param in model.named_parameters():
                if ".default." in name and "lora_B" in name:
                    param.add_(torch.randn_like(param))
        layer = model.base_model.model.model.layers[0].self_attn.q_proj
        delta = {a: layer.lora_B[a].weight @ layer.lora_A[a].weight for a in ("default", "anchor")}
        rate = 0.2
        anchor.ema_update(rate)
        # With A shared and frozen, the factor-space EMA is the EMA of the weight delta B·A (no cross term).
        expected = (1 - rate) * delta["anchor"] + rate * delta["default"]
        torch.testing.assert_close(layer.lora_B["anchor"].weight @ layer.lora_A["anchor"].weight, expected)

    def test_ema_update_is_exact(self, lora):
        model, anchor = lora
        base = _base(model)
        rate = 0.3
        old = {name: shadow.clone() for name, shadow in anchor.state_dict().items()}
        policy = {name: param.detach().clone() for name, param in _adapter(model, "default").items()}
        anchor.ema_update(rate)
        params = dict(model.named_parameters())
        for name, shadow in anchor.state_dict().items():
            target = policy[name.replace(".anchor.", ".<a>.")]
            assert not torch.equal(old[name], target)  # the update is not trivially a no-op
            expected = (1 - rate) * old[name].double() + rate * target.double()
            torch.testing.assert_close(shadow.double(), expected, rtol=0, atol=1e-7)
            assert torch.equal(shadow, torch.lerp(old[name], target, rate))
            assert torch.equal(params[name], shadow)  # fp32 compute adapter = shadow
        for key, value in policy.items():
            assert torch.equal(_adapter(model, "default")[key], value)  # the policy does not move
        for name, value in _base(model).items():
            assert torch.equal(value, base[name])

    def test_zero_rate_and_hard_update(self, lora):
        model, anchor = lora
        old = {name: shadow.clone() for name, shadow in anchor.state_dict().items()}
        anchor.ema_update(0.0)
        for name, shadow in anchor.state_dict().items():
            assert torch.equal(shadow, old[name])
        anchor.hard_update()
        policy, anchored = _adapter(model, "default"), _adapter(model, "anchor")
        for key in policy:
            assert torch.equal(policy[key], anchored[key])
        with pytest.raises(ValueError, match="EMA rate"):
            anchor.ema_update(1.5)

    def test_active_computes_with_anchor_and_restores(self, lora):
        model, anchor = lora
        base = _base(model)
        for name, param in model.named_parameters():  # e.g. LoRA-FA: a frozen lora_A must stay frozen afterwards
            if ".default." in name and "lora_A" in name:
                param.requires_grad_(False)
        flags = {name: param.requires_grad for name, param in model.named_parameters()}
        with torch.no_grad():
            policy_logits = model(**_inputs()).logits
            with anchor.active() as anchor_model:
                assert anchor_model is model and model.active_adapter == "anchor"
                assert not any(p.requires_grad for n, p in model.named_parameters() if ".anchor." in n)
                anchor_logits = model(**_inputs()).logits
            # The same forward with the anchor weights written into the policy adapter of a copy.
            manual = copy.deepcopy(model)
            anchored = _adapter(manual, "anchor")
            for key, param in _adapter(manual, "default").items():
                param.copy_(anchored[key])
            manual_logits = manual(**_inputs()).logits
        assert not torch.allclose(policy_logits, anchor_logits)
        assert torch.equal(anchor_logits, manual_logits)
        assert model.active_adapter == "default"
        assert {name: param.requires_grad for name, param in model.named_parameters()} == flags
        with pytest.raises(RuntimeError, match="boom"), anchor.active():
            raise RuntimeError("boom")
        assert model.active_adapter == "default"
        assert {name: param.requires_grad for name, param in model.named_parameters()} == flags
        for name, value in _base(model).items():
            assert torch.equal(value, base[name])

    @pytest.mark.parametrize("architecture", ["llama", "gpt2"])
    def test_rows_routed_equals_peft_mixed_adapters(self, tiny_kit, architecture):
        """Strided row views give each row PEFT's `adapter_names` logits (to rounding), on a left-padded batch of mixed
        prompt lengths (LoRA on every linear layer, `lora_dropout` in the config), and restore every flag."""
        from peft import LoraConfig, get_peft_model
        from transformers import AutoTokenizer

        from trl_bon.anchor import LoraAnchor
        from trl_bon.toy import tiny_causal_lm

        tokenizer = AutoTokenizer.from_pretrained(tiny_kit["policy"])
        base = tiny_causal_lm(tokenizer, architecture, dropout=0.1)
        model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.1)).eval()
        _perturb(model, seed=0)
        anchor = LoraAnchor(model)
        _perturb(model, seed=1)
        model.eval()  # generation's mode: the anchor adapter's `lora_dropout` modules are new, in training mode
        flags = {name: param.requires_grad for name, param in model.named_parameters()}
        lengths = [3, 6, 4, 5, 2, 6]
        input_ids = torch.zeros(6, 6, dtype=torch.long)
        attention_mask = torch.zeros(6, 6, dtype=torch.long)
        for row, length in enumerate(lengths):  # left-padded
            input_ids[row, 6 - length :] = torch.arange(5, 5 + length) + row
            attention_mask[row, 6 - length :] = 1
        names = ["default", "anchor", "anchor"] * 2
        routes = [("default", slice(0, None, 3)), ("anchor", slice(1, None, 3)), ("anchor", slice(2, None, 3))]
        with torch.no_grad():
            expected = model(input_ids=input_ids, attention_mask=attention_mask, adapter_names=names).logits
            with anchor.rows_routed(routes):
                routed = model(input_ids=input_ids, attention_mask=attention_mask).logits
            policy = model(input_ids=input_ids, attention_mask=attention_mask).logits
        torch.testing.assert_close(routed, expected, rtol=1e-5, atol=1e-5)  # float rounding of strided inputs
        assert not torch.allclose(routed[1], policy[1])  # the anchor rows did use the anchor
        assert {name: param.requires_grad for name, param in model.named_parameters()} == flags
        assert anchor.routes_rows_by_views()

    def test_bf16_adapter_keeps_small_updates_in_fp32_shadow(self, tiny_kit):
        from trl_bon.anchor import LoraAnchor
        from trl_bon.core.ema import ema_update_

        model = _lora_model(tiny_kit["policy"])
        with torch.no_grad():
            for param in _adapter(model, "default").values():
                param.data = torch.ones(param.shape, dtype=torch.bfloat16)
        anchor = LoraAnchor(model)
        assert all(param.dtype == torch.bfloat16 for param in _adapter(model, "anchor").values())
        with torch.no_grad():
            for param in _adapter(model, "default").values():
                param.fill_(1.0625)  # exact in bf16
        rate, steps = 0.0016, 100  # each update moves the anchor by 1e-4, below bf16's spacing of 2**-7 near 1
        bf16_alone = torch.ones(3, dtype=torch.bfloat16)
        for _ in range(steps):
            anchor.ema_update(rate)
            ema_update_([bf16_alone], [torch.full((3,), 1.0625, dtype=torch.bfloat16)], rate)
        assert torch.equal(bf16_alone, torch.ones(3, dtype=torch.bfloat16))  # rounded away every time
        expected = 1.0 + 0.0625 * (1 - (1 - rate) ** steps)  # ≈ 1.00925
        params = dict(model.named_parameters())

        adapter_bytes = sum(p.numel() * p.element_size() for p in _adapter(model, "anchor").values())
        assert anchor.memory_bytes() == 3 * adapter_bytes  # bf16 compute adapter + fp32 shadow (2x)
        for name, shadow in anchor.state_dict().items():
            assert shadow.dtype == torch.float32
            torch.testing.assert_close(shadow, torch.full_like(shadow, expected), rtol=0, atol=1e-5)
            assert torch.equal(params[name], shadow.to(torch.bfloat16))
            assert (params[name] > 1.0).all()

    def test_modules_to_save_rejected(self, tiny_kit):
        from trl_bon.anchor import LoraAnchor

        model = _lora_model(tiny_kit["policy"], modules_to_save=["lm_head"])
        with pytest.raises(ValueError, match="modules_to_save"):
            LoraAnchor(model)

    def test_save_load_round_trip(self, lora, tiny_kit, tmp_path):
        from trl_bon.anchor import LoraAnchor

        model, anchor = lora
        anchor.ema_update(0.25)
        anchor.save(tmp_path, metadata={"rate": 0.25})
        config = json.loads((tmp_path / "anchor.json").read_text())
        assert config["kind"] == "lora" and config["adapter_name"] == "anchor" and config["rate"] == 0.25
        assert (tmp_path / "anchor.safetensors").is_file()

        other = _lora_model(tiny_kit["policy"])
        _perturb(other, seed=7)
        restored = LoraAnchor(other)
        assert not torch.equal(*[next(iter(a.state_dict().values())) for a in (anchor, restored)])
        restored.load(tmp_path)
        for name, shadow in anchor.state_dict().items():
            assert torch.equal(restored.state_dict()[name], shadow)
        saved, loaded = _adapter(model, "anchor"), _adapter(other, "anchor")
        for key in saved:
            assert torch.equal(saved[key], loaded[key])

        empty = tmp_path / "nothing-here"
        empty.mkdir()
        with pytest.raises(FileNotFoundError, match="nothing-here"):
            restored.load(empty)

        # The record `anchor.json`: another adapter name is named by the shared provenance check; a garbage record
        # names its file (it was a raw JSONDecodeError naming none).
        renamed = LoraAnchor(_lora_model(tiny_kit["policy"]), adapter_name="other")
        with pytest.raises(ValueError, match="adapter_name: saved 'anchor', this run 'other'"):
            renamed.load(tmp_path)
        record = (tmp_path / "anchor.json").read_text()
        (tmp_path / "anchor.json").write_text(record[:20])
        with pytest.raises(ValueError, match=r"anchor record .*anchor\.json is damaged"):
            restored.load(tmp_path)
        (tmp_path / "anchor.json").write_text(record)

        # A garbage header: safetensors' own error names no file; ours names it.
        weights = tmp_path / "anchor.safetensors"
        weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])
        with pytest.raises(ValueError, match=r"saved anchor .*anchor\.safetensors is not a safetensors file"):
            restored.load(tmp_path)

    def test_memory_bytes(self, lora):

        model, anchor = lora
        adapter_bytes = sum(p.numel() * p.element_size() for p in _adapter(model, "anchor").values())
        assert adapter_bytes > 0
        # An fp32 adapter is its own EMA state: no shadow, the anchor costs exactly one adapter.
        assert anchor.memory_bytes() == adapter_bytes


@pytest.mark.filterwarnings("ignore:FSDP is switching to use `NO_SHARD`:UserWarning")
def test_fsdp1_rejected_fsdp2_shards_updated_locally(tmp_path):
    """FSDP1 is refused; under FSDP2 (one rank) the EMA runs on the DTensor shards and saving gathers whole tensors."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
    from torch.distributed.tensor import DTensor

    from trl_bon.anchor import ModelAnchor

    def net(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        fsdp1 = net(0)
        fsdp1[0] = FullyShardedDataParallel(fsdp1[0], device_id=torch.device("cpu"))
        with pytest.raises(ValueError, match="FSDP1"):
            ModelAnchor(fsdp1, net(1))
        plain_anchor, plain_policy = net(0), net(1)
        expected = {
            n: torch.lerp(p.detach(), dict(plain_policy.named_parameters())[n].detach(), 0.3)
            for n, p in plain_anchor.named_parameters()
        }
        sharded_anchor, sharded_policy = fully_shard(net(0)), fully_shard(net(1))
        anchor = ModelAnchor(sharded_anchor, sharded_policy, fp32_shadow=True)
        assert all(isinstance(param, DTensor) for param in sharded_anchor.parameters())
        anchor.ema_update(0.3)
        state = anchor.state_dict()
        for name, tensor in expected.items():
            assert torch.equal(state[name], tensor)
            assert torch.equal(sharded_anchor.get_parameter(name).full_tensor(), tensor)
        restored = ModelAnchor(fully_shard(net(2)), sharded_policy, fp32_shadow=True)
        restored.load_state_dict(state)
        assert all(torch.equal(restored.state_dict()[name], tensor) for name, tensor in expected.items())
    finally:
        dist.destroy_process_group()


def test_unsupported_engines_refused_before_loading(monkeypatch):
    from transformers import TrainingArguments

    from trl_bon.anchor import check_anchor_engine

    args = TrainingArguments("unused", use_cpu=True, report_to="none")
    check_anchor_engine(args, lora=True)  # plain runs pass
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match="FSDP1"):
        check_anchor_engine(args, lora=True)
    monkeypatch.setenv("FSDP_VERSION", "2")
    check_anchor_engine(args, lora=False)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    for fsdp_config, refused in (({}, False), ({"version": 2}, False), ({"version": 1}, True)):
        fsdp_args = copy.copy(args)
        fsdp_args.fsdp, fsdp_args.fsdp_config = "full_shard", fsdp_config  # transformers defaults to version 2
        if refused:
            with pytest.raises(ValueError, match="FSDP1"):
                check_anchor_engine(fsdp_args, lora=True)
        else:
            check_anchor_engine(fsdp_args, lora=True)
    monkeypatch.setattr("trl_bon.anchor._engines.is_deepspeed_zero3_enabled", lambda: True)
    check_anchor_engine(args, lora=True)
    with pytest.raises(NotImplementedError, match="ZeRO-3"):
        check_anchor_engine(args, lora=False)


class TestModelAnchor:
    @staticmethod
    def _models(path, dtype=torch.float32):
        from transformers import AutoModelForCausalLM

        policy = AutoModelForCausalLM.from_pretrained(path)
        anchor_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for param in policy.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
            for buffer in policy.buffers():  # rotary `inv_freq` and `original_inv_freq`: floating buffers that differ
                buffer.mul_(1.5)
        return policy, anchor_model

    def test_ema_update_is_exact_over_params_and_buffers(self, tiny_kit):
        from trl_bon.anchor import ModelAnchor

        policy, anchor_model = self._models(tiny_kit["policy"])
        policy.train()
        anchor = ModelAnchor(anchor_model, policy)
        assert not anchor_model.training and not any(p.requires_grad for p in anchor_model.parameters())
        assert anchor.state_dict().keys() >= {"model.rotary_emb.inv_freq", "lm_head.weight"}
        old = {name: tensor.clone() for name, tensor in anchor.state_dict().items()}
        sources = {**dict(policy.named_parameters()), **dict(policy.named_buffers())}
        rate = 0.3
        anchor.ema_update(rate)
        for name, tensor in anchor.state_dict().items():
            assert not torch.equal(old[name], sources[name])
            expected = (1 - rate) * old[name].double() + rate * sources[name].double()
            torch.testing.assert_close(tensor.double(), expected, rtol=0, atol=1e-6)
            assert torch.equal(tensor, torch.lerp(old[name], sources[name].detach(), rate))
        with anchor.active() as model:
            assert model is anchor_model
        anchor.hard_update()
        for name, tensor in anchor.state_dict().items():
            assert torch.equal(tensor, sources[name])

    def test_save_load_round_trip_with_bf16_shadow(self, tiny_kit, tmp_path):
        from transformers import AutoModelForCausalLM

        from trl_bon.anchor import ModelAnchor

        policy, anchor_model = self._models(tiny_kit["policy"], dtype=torch.bfloat16)
        anchor = ModelAnchor(anchor_model, policy)
        assert all(tensor.dtype == torch.float32 for tensor in anchor.state_dict().values())  # fp32 shadows
        anchor.ema_update(0.01)
        anchor.save(tmp_path / "anchor")
        assert json.loads((tmp_path / "anchor" / "anchor.json").read_text())["fp32_shadow"] is True
        inspected = AutoModelForCausalLM.from_pretrained(tmp_path / "anchor", dtype=torch.float32)
        # The saved weights are the fp32 shadows, not their bf16 copies.
        assert torch.equal(inspected.lm_head.weight, anchor.state_dict()["lm_head.weight"])

        _, fresh_model = self._models(tiny_kit["policy"], dtype=torch.bfloat16)
        restored = ModelAnchor(fresh_model, policy)
        restored.load(tmp_path / "anchor")
        params = {name for name, _ in fresh_model.named_parameters()}
        for name in params:
            assert torch.equal(restored.state_dict()[name], anchor.state_dict()[name])
            assert torch.equal(fresh_model.get_parameter(name), anchor_model.get_parameter(name))
        with pytest.raises(FileNotFoundError, match="missing-dir"):
            restored.load(tmp_path / "missing-dir")


@pytest.mark.slow
class TestAnchorCallback:
    @staticmethod
    def _trainer(tiny_kit, prompt_dataset, output_dir, **overrides):
        from peft import LoraConfig
        from trl import RLOOConfig, RLOOTrainer

        kwargs = dict(
            max_completion_length=4,
            per_device_train_batch_size=4,
            num_generations=2,
            gradient_accumulation_steps=2,  # 2 micro-batches per optimizer step: the anchor must move once
            max_steps=2,
            learning_rate=0.1,  # tiny model: gradients are tiny
            beta=0.0,
        )
        args = RLOOConfig(output_dir=str(output_dir), **cpu_args(**{**kwargs, **overrides}))
        peft_config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return RLOOTrainer(
                model=tiny_kit["policy"],
                reward_funcs=tiny_kit["reward"],
                args=args,
                train_dataset=prompt_dataset,
                peft_config=peft_config,
            )

    def test_ema_once_per_optimizer_step_and_checkpoints(self, tiny_kit, prompt_dataset, tmp_path):
        """Through the one save/resume path there is (`JBondTrainer`'s checkpoints): one EMA update per optimizer
        step, the anchor in every checkpoint, and a fresh anchor restored from it equal to the trained one."""
        from peft import LoraConfig

        from trl_bon import JBondConfig, JBondTrainer
        from trl_bon.anchor import AnchorCallback, LoraAnchor
        from trl_bon.core import AnchorSchedule

        args = JBondConfig(
            **cpu_args(
                output_dir=str(tmp_path),
                max_completion_length=4,
                per_device_train_batch_size=6,
                gradient_accumulation_steps=2,  # 2 micro-batches per optimizer step: the anchor must move once
                max_steps=2,
                learning_rate=0.1,  # tiny model: gradients are tiny
                anchor_ema_rate=0.5,
                save_strategy="steps",
                save_steps=1,
            )
        )
        peft_config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = JBondTrainer(
                tiny_kit["policy"], tiny_kit["reward"], args, prompt_dataset, peft_config=peft_config
            )
        anchor = trainer.anchor
        initial = {name: shadow.clone() for name, shadow in anchor.state_dict().items()}

        micro_batches, updates = [], []
        compute_loss, ema_update = trainer.compute_loss, anchor.ema_update

        def counting_compute_loss(*args, **kwargs):
            micro_batches.append(1)
            return compute_loss(*args, **kwargs)

        def checked_ema_update(rate):
            # Called after the optimizer step: check this one update against eq. 18.
            old = {name: shadow.clone() for name, shadow in anchor.state_dict().items()}
            policy = {name: param.detach().clone() for name, param in _adapter(trainer.model, "default").items()}
            ema_update(rate)
            for name, shadow in anchor.state_dict().items():
                assert torch.equal(shadow, torch.lerp(old[name], policy[name.replace(".anchor.", ".<a>.")], 0.5))
            updates.append(trainer.state.global_step)

        trainer.compute_loss, anchor.ema_update = counting_compute_loss, checked_ema_update
        trainer.train()

        assert len(micro_batches) == 4 and updates == [1, 2]
        assert any(not torch.equal(initial[name], shadow) for name, shadow in anchor.state_dict().items())
        assert model_policy_differs(trainer.model)
        for step in (1, 2):
            assert (tmp_path / f"checkpoint-{step}" / "anchor" / "anchor.safetensors").is_file()
            config = json.loads((tmp_path / f"checkpoint-{step}" / "anchor" / "anchor.json").read_text())
            assert config["global_step"] == step and config["rate"] == 0.5 and config["mode"] == "ema"
        from safetensors.torch import load_file

        last = load_file(tmp_path / "checkpoint-2" / "anchor" / "anchor.safetensors")
        for name, shadow in anchor.state_dict().items():
            assert torch.equal(last[name], shadow)

        # Resume path: a fresh anchor restored from the checkpoint equals the trained one, whether the restore runs
        # before or after the callback's own `on_train_begin` (it binds the anchor itself: no callback order).
        for restore_first in (True, False):
            callback = AnchorCallback(LoraAnchor(_lora_model(tiny_kit["policy"])), AnchorSchedule(rate=0.5))
            if restore_first:
                callback.load_from_checkpoint(tmp_path / "checkpoint-2", global_step=2)
            callback.on_train_begin(args, trainer.state, None)
            if not restore_first:
                callback.load_from_checkpoint(tmp_path / "checkpoint-2", global_step=2)
            for name, shadow in anchor.state_dict().items():
                assert torch.equal(callback.anchor.state_dict()[name], shadow)
        # The anchor's record `anchor.json` goes through the shared provenance check: another step is named.
        with pytest.raises(ValueError, match=r"fields that differ: 'global_step'\): global_step: saved 2, this run 1"):
            callback.load_from_checkpoint(tmp_path / "checkpoint-2", global_step=1)

    @pytest.mark.parametrize("mode", ["periodic", "fixed"])
    def test_periodic_and_fixed(self, tiny_kit, prompt_dataset, tmp_path, mode):
        from trl_bon.anchor import AnchorCallback, LoraAnchor
        from trl_bon.core import AnchorSchedule

        trainer = self._trainer(tiny_kit, prompt_dataset, tmp_path, max_steps=3)
        anchor = LoraAnchor(trainer.model)
        trainer.add_callback(AnchorCallback(anchor, AnchorSchedule(mode=mode, rate=0.5, period=2)))
        initial = {name: shadow.clone() for name, shadow in anchor.state_dict().items()}
        copies, snapshots, hard_update = [], [], anchor.hard_update

        def recording_hard_update():
            hard_update()
            copies.append(trainer.state.global_step)
            snapshots.append({k: p.detach().clone() for k, p in _adapter(trainer.model, "default").items()})

        anchor.hard_update = recording_hard_update
        trainer.train()

        final = _adapter(trainer.model, "anchor")
        if mode == "fixed":
            assert copies == []
            for name, shadow in anchor.state_dict().items():
                assert torch.equal(shadow, initial[name])
        else:
            assert copies == [2]  # period 2 over 3 steps: one copy, at step 2
            for key, value in snapshots[0].items():
                assert torch.equal(final[key], value)  # the anchor holds the policy of step 2 ...
            policy = _adapter(trainer.model, "default")
            assert any(not torch.equal(final[k], policy[k]) for k in policy)  # ... not the one of step 3
        assert model_policy_differs(trainer.model)

    def test_rejects_bad_arguments(self, lora):
        from trl_bon.anchor import AnchorCallback
        from trl_bon.core import AnchorSchedule

        _, anchor = lora
        with pytest.raises(ValueError, match="mode"):
            AnchorCallback(anchor, AnchorSchedule(mode="sometimes"))
        with pytest.raises(ValueError, match="rate"):
            AnchorCallback(anchor, AnchorSchedule(rate=2.0))
        with pytest.raises(ValueError, match="period"):
            AnchorCallback(anchor, AnchorSchedule(mode="periodic", period=0))


def model_policy_differs(model) -> bool:
    """Whether training moved the policy adapter away from the anchor adapter (so the checks above mean something)."""
    policy, anchored = _adapter(model, "default"), _adapter(model, "anchor")
    return any(not torch.equal(policy[key], anchored[key]) for key in policy)
