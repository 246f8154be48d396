"""Preference optimisation (DPO or IPO) after SFT: does it repair the facts the model got wrong?

The policy starts from an SFT checkpoint of train.py; the reference is that SFT model, frozen (never the
pre-SFT base; config.json records which reference was used and how). Pairs come from `make_data.py facts`
(dpo_pairs.jsonl: chosen = the true answer, rejected = a distractor) or are built on-policy from
`generate.py --mode qa` answers (each wrong answer becomes `rejected`). Examples:

    # full DPO of a full SFT checkpoint on make_data's pairs
    python finetune_dpo.py --sft_checkpoint runs/sft/checkpoints/exposure_10 \
        --pairs_file data/facts/dpo_pairs.jsonl --output_dir runs/dpo --beta 0.1 --learning_rate 5e-6 \
        --num_epochs 3 --save_epochs 1,2,3 --batch_size 8
    # LoRA: a new adapter on a full SFT checkpoint (reference = adapters off = the SFT model) ...
    python finetune_dpo.py ... --lora_r 16 --lora_alpha 32 --lora_target_modules all-linear --learning_rate 5e-5
    # ... or an SFT adapter, which DPO continues (reference = that adapter loaded again, frozen)
    python finetune_dpo.py --sft_checkpoint runs/sft_lora/checkpoints/exposure_10 ... --learning_rate 5e-5
    # on-policy pairs from the SFT model's own wrong answers; IPO; reference log-probs computed once
    python generate.py --mode qa --input_file data/facts/probes.jsonl --checkpoints runs/sft/checkpoints/exposure_10 \
        --output_dir runs/sft_qa
    python finetune_dpo.py --sft_checkpoint runs/sft/checkpoints/exposure_10 --pairs_from_generate \
        runs/sft_qa/items.csv --facts data/facts/facts.jsonl --loss ipo --precompute_reference --output_dir runs/dpo_op
    # 2 processes (DDP)
    accelerate launch --config_file accelerate_config.yaml finetune_dpo.py ...

Writes config.json (with `reference` and `pairs`), pairs.jsonl (the pairs trained on), reference_logps.jsonl,
metrics.jsonl (per step: loss, reward margin and accuracy, policy log-probs, lr), checkpoints/epoch_{k}/
(model or adapter + tokenizer), items.csv (per pair: log-probs before and after) and results.json (last).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from memlab import cli, dpo, quiet, runtime, tracking, training
from memlab.io import append_jsonl, write_csv_atomic, write_json_atomic, write_jsonl_atomic
from memlab.models import is_adapter_dir, load_tokenizer, trust_remote_code_arg
from memlab.runtime import TrainRuntimeArgs
from memlab.rundir import empty_dir, guard_output_dir, prepare_run_dir, read_metrics, write_results
from memlab.likelihood import distributed_map

# after memlab, whose import sets the Hugging Face offline mode and the noise filters (memlab/__init__.py)
from accelerate.utils import set_seed


@dataclass
class DPOArgs(TrainRuntimeArgs):
    sft_checkpoint: Optional[str] = cli.arg(None, "SFT checkpoint of train.py to start from (required): a full model "
                                            "directory or a LoRA adapter directory; the SFT model, frozen, is the "
                                            "reference")
    output_dir: Optional[str] = cli.output_dir_arg("config.json, pairs.jsonl, metrics.jsonl, checkpoints/, items.csv "
                                                   "and results.json", kind="run directory")
    overwrite_output_dir: bool = cli.overwrite_output_dir_arg()
    pairs_file: Optional[str] = cli.arg(None, "DPO pairs JSONL {id, fact_id, prompt, chosen, rejected}, e.g. the "
                                        "dpo_pairs.jsonl of make_data.py facts; give this or --pairs_from_generate")
    pairs_from_generate: Optional[str] = cli.arg(None, "on-policy pairs: the items.csv of a generate.py --mode qa "
                                                 "run, whose wrong answers become `rejected` (the true answer "
                                                 "`chosen`); give this or --pairs_file")
    facts: Optional[str] = cli.arg(None, "with --pairs_from_generate: facts.jsonl or probes giving the true answers "
                                   "(joined on fact_id); when not given, the answer column of items.csv")
    generate_checkpoint: Optional[str] = cli.arg(None, "with --pairs_from_generate: the `checkpoint` label of "
                                                 "items.csv whose answers to use, needed when it holds several")
    rejected_field: str = cli.arg("response", "on-policy rejected text: response (the answer as generated) or "
                                  "extracted_answer (the answer extracted from it)")
    chat_template: Optional[str] = cli.arg(None, "chat template when the tokenizer has none: 'plain' "
                                           "(User:/Assistant: lines), a .jinja file or a template string; replaces "
                                           "the tokenizer's own when given")
    block_size: int = cli.arg(256, "maximum tokens per prompt + answer; longer sequences are truncated, and a pair "
                              "whose answer lies beyond it is an error")
    loss: str = cli.arg("sigmoid", "preference loss: sigmoid (DPO) or ipo")
    beta: float = cli.arg(0.1, "DPO: inverse temperature of the implicit reward; IPO: the target margin is "
                          "1/(2 beta); > 0")
    learning_rate: float = cli.arg(5e-6, "peak learning rate of the AdamW optimizer")
    lr_scheduler: str = cli.arg("constant", "learning-rate schedule after the --warmup_steps linear warm-up: "
                                "constant, linear (decays to 0 at the last step) or cosine")
    warmup_steps: int = cli.arg(0, "optimizer steps of linear learning-rate warm-up from 0; 0 = none")
    weight_decay: float = cli.arg(0.0, "AdamW weight decay, applied to the trainable parameters with 2 or more "
                                  "dimensions, not to biases and norm weights")
    max_grad_norm: float = cli.arg(1.0, "clip the gradient norm to this value before each optimizer step; 0 "
                                   "disables clipping")
    num_epochs: int = cli.arg(1, "number of epochs over the pairs")
    batch_size: int = cli.arg(8, "pairs per micro-batch per process (each forward pass holds 2x as many sequences: "
                              "chosen and rejected)")
    save_epochs: str = cli.arg("", "epochs after which to save a checkpoint, comma-separated, e.g. 1,2 -> "
                               "checkpoints/epoch_{k}/; the last epoch is always saved")
    lora_r: int = cli.arg(0, "rank of a new LoRA adapter on a full SFT checkpoint; 0 = full fine-tuning; an SFT "
                          "adapter is always continued (then 0 or the adapter's own rank)")
    lora_alpha: int = cli.arg(16, "alpha of a new LoRA adapter: its update is scaled by lora_alpha / lora_r")
    lora_dropout: float = cli.arg(0.0, "dropout probability on the input of a new LoRA adapter's layers, in [0, 1)")
    lora_target_modules: str = cli.arg("all-linear", "layers a new LoRA adapter adapts: module names (q_proj,v_proj), "
                                       "the shorthands q,k,v,o, or attn, mlp or all-linear (as in train.py)")
    precompute_reference: bool = cli.arg(False, "compute the reference log-probs once before training, then free "
                                         "the reference (less memory; the reference is not re-checked after "
                                         "training)")
    seed: int = cli.arg(0, "random seed of the pair order and of a new LoRA adapter's initialisation")
    logging_steps: int = cli.arg(1, "write a row (loss, reward margin and accuracy, log-probs, learning rate) to "
                                 "metrics.jsonl and the trackers every this many optimizer steps and at the last")
    trust_remote_code: bool = trust_remote_code_arg()
    report_to: str = cli.arg("none", "also send the training curves to none, tensorboard, wandb or all "
                             "(accelerate's trackers; W&B runs offline unless WANDB_MODE says otherwise); "
                             "metrics.jsonl is written in any case")
    run_name: Optional[str] = cli.arg(None, "tracker run name; when not given: <parent dir>/<output dir> (the "
                                      "cell name in an experiment)")


def validate(args: DPOArgs) -> None:
    epochs = cli.parse_list(args.save_epochs, int, "save_epochs")
    found = bool(args.sft_checkpoint) and Path(args.sft_checkpoint).is_dir()
    adapter_r = None
    if found and is_adapter_dir(args.sft_checkpoint):
        from peft import PeftConfig  # only for an adapter: peft imports bitsandbytes (seconds; -h needs none)

        adapter_r = PeftConfig.from_pretrained(args.sft_checkpoint).r
    cli.collect_errors([
        (args.sft_checkpoint is not None, "--sft_checkpoint is required"),
        (args.sft_checkpoint is None or found, f"--sft_checkpoint {args.sft_checkpoint}: checkpoint not found"),
        (args.output_dir is not None, "--output_dir is required"),
        ((args.pairs_file is None) != (args.pairs_from_generate is None),
         "give exactly one of --pairs_file and --pairs_from_generate"),
        (args.facts is None or args.pairs_from_generate is not None, "--facts goes with --pairs_from_generate"),
        (args.rejected_field in ("response", "extracted_answer"),
         "--rejected_field must be response or extracted_answer"),
        (args.loss in dpo.LOSS_TYPES, f"--loss must be one of {dpo.LOSS_TYPES}, got '{args.loss}'"),
        (args.beta > 0, "--beta must be > 0"),
        *tracking.checks(args.report_to),
        (args.num_epochs >= 1 and args.batch_size >= 1, "--num_epochs and --batch_size must be >= 1"),
        (all(1 <= k <= args.num_epochs for k in epochs),
         f"--save_epochs {epochs} goes beyond --num_epochs {args.num_epochs}"),
        (args.lr_scheduler in ("constant", "linear", "cosine"), f"--lr_scheduler {args.lr_scheduler} unknown"),
        (args.lora_r >= 0, "--lora_r must be >= 0"),
        *cli.numeric_checks(args, positive=("learning_rate", "beta", "block_size", "logging_steps"),
                            non_negative=("weight_decay", "warmup_steps", "max_grad_norm", "lora_alpha", "seed"),
                            fraction=("lora_dropout",)),
        (adapter_r is None or args.lora_r in (0, adapter_r),
         f"--lora_r {args.lora_r}: the SFT checkpoint is a LoRA adapter of rank {adapter_r}, which DPO continues"),
    ])


def load_training_pairs(args: DPOArgs) -> tuple[list[dict], dict]:
    if args.pairs_file:
        pairs = dpo.load_pairs(args.pairs_file)
        return pairs, {"source": "pairs_file", "path": str(args.pairs_file), "pairs": len(pairs)}
    pairs, counts = dpo.pairs_from_generate(args.pairs_from_generate, args.facts, args.generate_checkpoint, args.rejected_field)
    return pairs, {"source": "on_policy", "items_csv": str(args.pairs_from_generate), "facts": args.facts,
                   "rejected_field": args.rejected_field, **counts}


def score_pairs(logps_fn, n_pairs: int, batch_of, batch_size: int, acc) -> torch.Tensor:
    """(N, 2) [chosen, rejected] sequence log-probs of every pair in input order, sharded over processes."""
    def run(idx: list[int]) -> list[tuple[int, float, float]]:
        out = []
        for b in range(0, len(idx), batch_size):
            chunk = idx[b:b + batch_size]
            lp = logps_fn(batch_of(chunk)).float().cpu()
            out += [(i, float(lp[j]), float(lp[len(chunk) + j])) for j, i in enumerate(chunk)]
        return out
    rows = distributed_map(run, list(range(n_pairs)), key=lambda i: i, result_key=lambda r: r[0], accelerator=acc)
    return torch.tensor([[r[1], r[2]] for r in rows])


def save_checkpoint(acc, model, tok, path: Path, state: dict) -> None:
    """Model (or the trained adapter only, never the frozen 'reference' one) + tokenizer + state.json."""
    acc.wait_for_everyone()
    state_dict = acc.get_state_dict(model)
    if acc.is_main_process:
        tmp = path.with_name(f".{path.name}.tmp")
        unwrapped = acc.unwrap_model(model)
        # disk full: the partial checkpoint is removed and one error says how much space was needed
        with training.checkpoint_write_guard(tmp, path, training.checkpoint_bytes(unwrapped, state_dict)[0]):
            (tmp / "trainer_state").mkdir(parents=True, exist_ok=True)
            kw = {"selected_adapters": ["default"]} if hasattr(unwrapped, "peft_config") else {}
            unwrapped.save_pretrained(tmp, state_dict=state_dict, **kw)
            tok.save_pretrained(tmp)
            write_json_atomic(tmp / "trainer_state" / "state.json", state)
            training.replace_dir(tmp, path)
    acc.wait_for_everyone()


@dataclass
class Job:
    """Everything the steps of one DPO run share (built by `setup`)."""
    args: DPOArgs
    acc: object
    tok: object
    model: object
    optimizer: object
    scheduler: object
    reference: dpo.Reference
    pairs: list
    pairs_info: dict
    examples: list
    lengths: list
    steps_per_epoch: int
    total_steps: int
    policy_kind: str
    runtime: dict                    # precision, attention, quantization, device as resolved (memlab.runtime)
    step: int = 0
    saved: list = field(default_factory=list)  # checkpoints written by this run

    @property
    def out(self) -> Path:
        return Path(self.args.output_dir)

    def batch_of(self, idx: list[int]) -> dict:
        """2B rows on this process's device: B chosen, then B rejected."""
        return {k: v.to(self.acc.device)
                for k, v in dpo.collate_pairs([self.examples[i] for i in idx], self.tok.pad_token_id).items()}

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """One micro-batch per process per optimizer step."""
        return training.padded_epoch_batches(self.lengths, self.args.batch_size, self.args.seed, epoch,
                                             self.acc.num_processes)

    def score(self, logps_fn) -> torch.Tensor:
        return score_pairs(logps_fn, len(self.pairs), self.batch_of, self.args.batch_size, self.acc)


def setup(args: DPOArgs) -> Job:
    """Output directory, accelerator, pairs, policy and frozen reference, optimizer and schedule, run directory."""
    # precision, attention kernel, k-bit loading: resolved for this machine and checked before anything is written
    rt = runtime.resolve_train(args, lora=args.lora_r > 0 or is_adapter_dir(args.sft_checkpoint))
    # the output-directory rule, before any model loads; the same configuration re-runs into the emptied directory
    if guard_output_dir(args.output_dir, "finetune_dpo.py", args, args.overwrite_output_dir) == "same":
        empty_dir(Path(args.output_dir))
    acc = training.make_accelerator(rt["precision"], args.report_to, args.output_dir)
    set_seed(args.seed)
    out, world = Path(args.output_dir), acc.num_processes

    # ---- pairs: chat items [user: prompt, assistant: chosen|rejected], labels on the assistant turn
    pairs, pairs_info = load_training_pairs(args)
    tok = load_tokenizer(args.sft_checkpoint, args.trust_remote_code)
    training.ensure_chat_template(tok, args.chat_template, args.pairs_file or args.pairs_from_generate)
    examples = [dpo.tokenize_pair(p, tok, args.block_size) for p in pairs]
    lengths = [max(len(e["chosen"]["input_ids"]), len(e["rejected"]["input_ids"])) for e in examples]

    # ---- policy and the frozen SFT reference
    lora = {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
            "target_modules": args.lora_target_modules} if args.lora_r > 0 else None
    policy, reference = dpo.build_policy_and_reference(args.sft_checkpoint, lora, args.trust_remote_code,
                                                       load_reference_copy=not args.precompute_reference,
                                                       load=runtime.load_kwargs(rt, acc.device, lora=args.lora_r > 0), rt=rt)
    policy_kind = {"frozen_adapter_copy": "continue_sft_adapter", "adapters_disabled": "new_lora"}.get(
        reference.mechanism, "full")
    if reference.mechanism == "separate_copy":
        reference.model.to(acc.device)
    n_trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    optimizer = training.adamw_with_groups(policy, args.learning_rate, args.weight_decay)
    steps_per_epoch = len(training.padded_epoch_batches(lengths, args.batch_size, args.seed, 0, world)) // world
    total_steps = steps_per_epoch * args.num_epochs
    scheduler = training.make_scheduler(args.lr_scheduler, optimizer, args.warmup_steps, total_steps)
    model, optimizer = acc.prepare(policy, optimizer)
    if acc.is_main_process:
        prepare_run_dir(out, args, "finetune_dpo.py", {
            "reference": {**reference.describe(), "precomputed": args.precompute_reference},
            "policy": {"kind": policy_kind, "trainable_params": n_trainable},
            "pairs": pairs_info, "num_processes": world, "distributed_type": str(acc.distributed_type),
            "runtime": rt})
        write_jsonl_atomic(out / "pairs.jsonl", pairs)
        (out / "metrics.jsonl").unlink(missing_ok=True)
        (out / "results.json").unlink(missing_ok=True)
    tracking.start(acc, args.report_to, out, args, args.run_name)
    return Job(args, acc, tok, model, optimizer, scheduler, reference, pairs, pairs_info, examples, lengths,
               steps_per_epoch, total_steps, policy_kind, rt)


def reference_pass(job: Job) -> torch.Tensor:
    """The reference's log-probs of every pair (= the policy's "before"), written to reference_logps.jsonl;
    with --precompute_reference the only reference pass, and the reference is freed after it."""
    ref_lp = job.score(lambda b: job.reference.logps(b))
    if job.acc.is_main_process:
        write_jsonl_atomic(job.out / "reference_logps.jsonl", [
            {"id": p["id"], "fact_id": p["fact_id"], "chosen_logp": float(c), "rejected_logp": float(r)}
            for p, (c, r) in zip(job.pairs, ref_lp.tolist())])
    if job.args.precompute_reference:
        job.reference.free()
    return ref_lp


def train_step(job: Job, mb: list[int], ref_lp: torch.Tensor) -> torch.Tensor:
    """One optimizer step on this process's micro-batch; returns its stats row for logging."""
    args, acc, model = job.args, job.acc, job.model
    batch, B = job.batch_of(mb), len(mb)
    if args.precompute_reference:
        ref_c, ref_r = ref_lp[mb, 0].to(acc.device), ref_lp[mb, 1].to(acc.device)
    else:  # before the policy's forward, so the adapter switch never sits between forward and backward
        ref = job.reference.logps(batch)
        ref_c, ref_r = ref[:B], ref[B:]
    logps = dpo.sequence_logps(model, batch)
    losses, chosen_rewards, rejected_rewards = dpo.preference_loss(logps[:B], logps[B:], ref_c, ref_r,
                                                                   args.beta, args.loss)
    loss = losses.mean()
    acc.backward(loss)
    if args.max_grad_norm:
        acc.clip_grad_norm_(model.parameters(), args.max_grad_norm)
    job.optimizer.step()
    job.scheduler.step()
    job.optimizer.zero_grad()
    job.step += 1
    rs = dpo.reward_stats(chosen_rewards, rejected_rewards)
    return torch.tensor([loss.item(), rs["reward_margin"], rs["reward_accuracy"], logps[:B].mean().item(),
                         logps[B:].mean().item(), rs["chosen_reward"], rs["rejected_reward"], B])


def log_window(job: Job, window_stats: list, log_t: float) -> dict:
    """The mean of the stats since the last row, over processes, as one metrics.jsonl row."""
    acc = job.acc
    stats = torch.stack(window_stats).mean(0)
    if acc.num_processes > 1:
        stats = acc.reduce(stats.to(acc.device), reduction="mean").cpu()
    row = {"step": job.step, "epoch": math.ceil(job.step / job.steps_per_epoch),
           "epoch_progress": round(job.step / job.steps_per_epoch, 4),
           **{k: round(float(v), 6) for k, v in zip(
               ("loss", "reward_margin", "reward_accuracy", "chosen_logp", "rejected_logp",
                "chosen_reward", "rejected_reward"), stats[:7])},
           "lr": job.scheduler.get_last_lr()[0],
           "pairs_per_s": round(float(stats[7]) * len(window_stats) * acc.num_processes / (time.time() - log_t), 2)}
    if acc.is_main_process:
        append_jsonl(job.out / "metrics.jsonl", row)
    tracking.log(acc, job.args.report_to, row, job.step, "dpo/")
    return row


def train_loop(job: Job, ref_lp: torch.Tensor) -> float:
    """The epochs: steps, a metrics row every --logging_steps, checkpoints at --save_epochs and the last
    epoch; returns the seconds spent."""
    args, acc = job.args, job.acc
    save_epochs = set(cli.parse_list(args.save_epochs, int, "save_epochs")) | {args.num_epochs}
    job.model.train()
    t_start = log_t = time.time()
    window_stats: list[torch.Tensor] = []
    bar = quiet.progress(job.total_steps, "dpo", disable=not acc.is_local_main_process)
    for epoch in range(args.num_epochs):
        batches = job.epoch_batches(epoch)
        for s in range(job.steps_per_epoch):
            window_stats.append(train_step(job, batches[s * acc.num_processes + acc.process_index], ref_lp))
            if job.step % args.logging_steps == 0 or job.step == job.total_steps:
                row = log_window(job, window_stats, log_t)
                bar.set_postfix(loss=row["loss"], margin=row["reward_margin"])
                window_stats, log_t = [], time.time()
            bar.update(1)
        if epoch + 1 in save_epochs:
            job.saved.append(f"epoch_{epoch + 1}")
            save_checkpoint(acc, job.model, job.tok, job.out / "checkpoints" / job.saved[-1],
                            {"step": job.step, "epoch": epoch + 1, "config": training.config_fingerprint(asdict(args))})
    bar.close()
    return time.time() - t_start


def finish(job: Job, ref_lp: torch.Tensor, ref_digest_start: str, loop_s: float, t0: float) -> dict:
    """After training: the policy's log-probs of the training pairs, the reference re-checked where it is
    still held, items.csv and results.json."""
    args, acc, out, reference = job.args, job.acc, job.out, job.reference
    unwrapped = acc.unwrap_model(job.model)

    def policy_logps(b):
        unwrapped.eval()
        with torch.no_grad():
            return dpo.sequence_logps(unwrapped, b)
    after_lp = job.score(policy_logps)
    ref_check = {"digest_start": ref_digest_start}
    if reference.model is not None:
        ref_again = job.score(lambda b: reference.logps(b))
        ref_check.update(digest_end=reference.digest(), unchanged=reference.digest() == ref_digest_start,
                         max_abs_logp_change=float((ref_again - ref_lp).abs().max()))
    rewards = args.beta * ((after_lp[:, 0] - ref_lp[:, 0]) - (after_lp[:, 1] - ref_lp[:, 1]))
    rows = read_metrics(out / "metrics.jsonl") if acc.is_main_process else []
    loss_per_epoch = {str(k): round(sum(r["loss"] for r in rows if r["epoch"] == k)
                                    / max(1, sum(r["epoch"] == k for r in rows)), 6)
                      for k in range(1, args.num_epochs + 1)}
    results = {
        "loss": args.loss, "beta": args.beta, "n_pairs": len(job.pairs), "steps": job.step,
        "steps_per_epoch": job.steps_per_epoch,
        "num_epochs": args.num_epochs, "loss_per_epoch": loss_per_epoch, "final": rows[-1] if rows else None,
        "before": dpo.pair_summary(ref_lp), "after": {**dpo.pair_summary(after_lp),
                                                  "reward_margin": round(float(rewards.mean()), 4),
                                                  "reward_accuracy": round(float((rewards > 0).float().mean()), 4)},
        "reference": {**reference.describe(), "mechanism": reference.mechanism if reference.model is not None
                      else f"{reference.mechanism} (freed after precomputing)", **ref_check},
        "policy": job.policy_kind, "pairs": job.pairs_info, "runtime": job.runtime,
        "checkpoints": job.saved,
        "final_checkpoint": str(out / "checkpoints" / f"epoch_{args.num_epochs}"),
        "train_loop_s": round(loop_s, 2), "wall_time_s": round(time.time() - t0, 2), "num_processes": acc.num_processes,
    }
    if acc.is_main_process:
        write_csv_atomic(out / "items.csv", [
            {"id": p["id"], "fact_id": p["fact_id"], "chosen_logp_before": round(b[0], 4),
             "rejected_logp_before": round(b[1], 4), "chosen_logp_after": round(f[0], 4),
             "rejected_logp_after": round(f[1], 4), "logp_margin_before": round(b[0] - b[1], 4),
             "logp_margin_after": round(f[0] - f[1], 4), "reward_margin": round(float(r), 4)}
            for p, b, f, r in zip(job.pairs, ref_lp.tolist(), after_lp.tolist(), rewards)])
        write_results(out, results)
    acc.wait_for_everyone()
    acc.end_training()
    return results


def main(args: DPOArgs) -> dict:
    """setup -> reference_pass -> train_loop -> finish."""
    t0 = time.time()
    validate(args)
    job = setup(args)
    ref_digest_start = job.reference.digest()
    ref_lp = reference_pass(job)
    return finish(job, ref_lp, ref_digest_start, train_loop(job, ref_lp), t0)


if __name__ == "__main__":
    cli.run(main, DPOArgs)
