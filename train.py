"""Supervised fine-tuning (full or LoRA) with exposure-indexed checkpoints; also the retention phase.

One exposure = one epoch over the study set (reshuffled each epoch with the seed). Examples:

    # full fine-tuning of the embedded SmolLM2 on chat facts, checkpoints after exposures 1,2,3,5,10
    python train.py --train_file data/facts/train_active_5.jsonl --output_dir runs/sft \
        --num_exposures 10 --save_exposures 1,2,3,5,10 --learning_rate 5e-5 --batch_size 8
    # LoRA on attention and MLP, adapter-only checkpoints (plus a merged copy)
    python train.py ... --lora_r 16 --lora_alpha 32 --lora_target_modules all-linear --merge_on_save
    # evaluation inside training, before it (0) and after each exposure: QA probes, recognition (2AFC) of
    # the studied sentences and their recall from the first half (eval/recall, eval/recognition,
    # eval/prefix_recall)
    python train.py ... --eval_probes_file probes.jsonl --eval_seen_file seen.jsonl \
        --eval_unseen_file unseen.jsonl --eval_prefix_fraction 0.5 --eval_exposures 0,1,2,3
    # retention: continue from a checkpoint on an interference corpus, log-spaced step checkpoints
    python train.py --init_from runs/sft/checkpoints/exposure_10 --train_file data/corpus/sentences.jsonl \
        --output_dir runs/retention --num_exposures 1 --save_steps log
    # 2 GPUs (DDP) or DeepSpeed ZeRO-2/3
    accelerate launch --config_file accelerate_config.yaml train.py ...
    accelerate launch --config_file accelerate_config.yaml --use_deepspeed \
        --deepspeed_config_file ds_config.json train.py ...

Preemption: SIGTERM, SIGUSR1 or Ctrl-C (SIGINT; a second one stops at once) saves a resumable state to
OUTPUT_DIR/resume/ and exits with status 75 (EX_TEMPFAIL: "retry me"); rerun with --resume to continue
from the newest checkpoint; the final weights equal those of an uninterrupted run. `--resume` on a run
with no checkpoint starts fresh; `--resume` after a training or eval file changed (config.json keeps
each file's sha256) is refused, naming the file.

Output directory: a new or empty one is used; this script's own run with the same configuration is
resumed (--resume) or re-run from scratch (emptied first); anything else (another configuration, another
script's run, a model directory, your files) is refused, unless --overwrite_output_dir empties it first.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch

from memlab import cli, legacy, quiet, runtime, tracking, training
from memlab.evaluation import LEAKAGE_MODES, InTrainingEval, eval_label, read_eval_inputs
from memlab.io import DataError, append_jsonl, split_paths, write_text_atomic
from memlab.models import (is_adapter_dir, load_model, load_tokenizer, model_name_or_path_arg, resolve_model_path,
                           trust_remote_code_arg)
from memlab.runtime import TrainRuntimeArgs
from memlab.rundir import (EXIT_REQUEUE, check_data_unchanged, differences, empty_dir, file_digest, guard_output_dir,
                           prepare_run_dir, read_metrics, write_results)

# after memlab, whose import sets the Hugging Face offline mode and the noise filters (memlab/__init__.py)
from accelerate.utils import set_seed


@dataclass
class TrainArgs(TrainRuntimeArgs):
    train_file: Optional[str] = cli.arg(None, "training data (required): a JSONL, CSV or TXT file, or several "
                                        "comma-separated; each item is plain text, chat or prompt/completion, and "
                                        "files may differ in kind")
    output_dir: Optional[str] = cli.output_dir_arg("config.json, metrics.jsonl, results.json and checkpoints/",
                                                   kind="run directory")
    overwrite_output_dir: bool = cli.overwrite_output_dir_arg()
    model_name_or_path: str = model_name_or_path_arg("model to fine-tune: a built-in name (smollm2-135m, tiny-llama, "
                                                     "tiny-gpt2) or a local Hugging Face model directory; not used "
                                                     "with --init_from")
    text_column: Optional[str] = cli.arg(None, "column holding the text of plain-text items; when not given: "
                                         "`text`, else the first string column")
    loss_on: Optional[str] = cli.arg(None, "tokens that carry the loss: completion (the assistant turns of chat "
                                     "items, the completion of prompt/completion items) or all (every token); when "
                                     "not given: completion for chat and prompt/completion data, all for plain text")
    chat_template: Optional[str] = cli.arg(None, "chat template for chat data: 'plain' (User:/Assistant: lines), a "
                                           ".jinja file or a template string; replaces the tokenizer's own, and is "
                                           "required for chat data when the tokenizer has none")
    block_size: int = cli.arg(256, "maximum tokens per item; longer items are truncated (results.json counts them "
                              "as n_truncated)")
    batch_size: int = cli.arg(8, "items per micro-batch per process; the batch of one optimizer step is "
                              "batch_size x processes x --gradient_accumulation_steps")
    gradient_accumulation_steps: int = cli.arg(1, "micro-batches accumulated into one optimizer step")
    num_exposures: int = cli.arg(5, "number of exposures, i.e. epochs over the study set (reshuffled each epoch "
                                 "with --seed)")
    max_steps: int = cli.arg(0, "stop after this many optimizer steps (0: no limit): the exposures run are then "
                             "ceil(max_steps / steps per exposure), replacing --num_exposures, and the last one may "
                             "end early (run_clm_no_trainer's --max_train_steps); final weights go to final/")
    save_exposures: str = cli.arg("", "exposures after which to save a checkpoint, comma-separated, e.g. 1,2,3,5,10 "
                                  "-> checkpoints/exposure_{k}/, or 'all'; each at most --num_exposures; empty: none (the "
                                  "final weights go to final/ unless the last exposure is listed)")
    save_steps: str = cli.arg("", "optimizer steps after which to save a checkpoint, e.g. 10,100, or 'log' "
                              "(1..10, 20..100, 200..1000, ...), or every:N -> checkpoints/step_{n:07d}/ (also "
                              "addressable as OUTPUT_DIR/step_{n}); empty: none")
    no_shuffle: bool = cli.arg(False, "keep the file order in every epoch (no reshuffling, no grouping of items of "
                               "similar length)")
    init_from: Optional[str] = cli.arg(None, "continue from a trained model directory or LoRA adapter directory (a "
                                       "checkpoint of an earlier run, e.g. for the retention phase) instead of "
                                       "--model_name_or_path; an adapter keeps training as it is")
    from_scratch: bool = cli.arg(False, "randomly initialise the architecture of --model_name_or_path (seeded by "
                                 "--seed) instead of loading its weights: the no-prior-knowledge baseline; excludes "
                                 "--init_from")
    lora_r: int = cli.arg(0, "LoRA rank; 0 = full fine-tuning (every weight is trained); not used when --init_from "
                          "is an adapter")
    lora_alpha: int = cli.arg(16, "LoRA alpha: the adapter update is scaled by lora_alpha / lora_r (with --lora_r > 0)")
    lora_dropout: float = cli.arg(0.0, "dropout probability on the input of the LoRA layers, in [0, 1) (with "
                                  "--lora_r > 0)")
    lora_target_modules: str = cli.arg("all-linear", "layers LoRA adapts: module names (q_proj,v_proj), the "
                                       "shorthands q,k,v,o, or attn (attention projections), mlp (feed-forward "
                                       "layers) or all-linear (both; never lm_head)")
    merge_on_save: bool = cli.arg(False, "with LoRA, also save a merged full model to <checkpoint>/merged/ beside "
                                  "the adapter")
    learning_rate: float = cli.arg(5e-5, "peak learning rate of the AdamW optimizer")
    weight_decay: float = cli.arg(0.0, "AdamW weight decay, applied to the parameters with 2 or more dimensions "
                                  "(weight matrices, embeddings), not to biases and norm weights")
    lr_scheduler: str = cli.arg("constant", "learning-rate schedule after the --warmup_steps linear warm-up: "
                                "constant, linear (decays to 0 at the last step) or cosine")
    warmup_steps: int = cli.arg(0, "optimizer steps of linear learning-rate warm-up from 0; 0 = none")
    max_grad_norm: float = cli.arg(1.0, "clip the gradient norm to this value before each optimizer step; 0 "
                                   "disables clipping")
    gradient_checkpointing: bool = cli.arg(False, "recompute activations during the backward pass (gradient "
                                           "checkpointing): less memory, slower steps")
    seed: int = cli.arg(0, "random seed of the data order, LoRA and --from_scratch initialisation and the sampled "
                        "in-training QA answers")
    logging_steps: int = cli.arg(1, "write a row (loss, learning rate, throughput) to metrics.jsonl and the "
                                 "trackers every this many optimizer steps")
    resume: bool = cli.arg(False, "continue the run in --output_dir from its newest checkpoint (or the state saved "
                           "on a signal); refused when the configuration or a data file changed; starts fresh "
                           "when there is no checkpoint")
    keep_optimizer_state: str = cli.arg("last", "which checkpoints keep their optimizer state: last (only the "
                                        "newest, all that --resume needs; saves disk) or all")
    trust_remote_code: bool = trust_remote_code_arg()
    debug_signal_at_step: int = cli.arg(0, "testing: send this process SIGUSR1 after this optimizer step, as a "
                                        "preemption would; 0 = never")
    # evaluation inside training (no checkpoint needed): the model in memory is scored at each point
    eval_probes_file: Optional[str] = cli.arg(None, "QA probes (the JSONL of generate.py --mode qa) asked at each "
                                              "eval point, with the model in memory (no checkpoint needed)")
    eval_seen_file: Optional[str] = cli.arg(None, "recognition at each eval point: the trained texts (test.py "
                                            "format), compared with --eval_unseen_file, which it needs")
    eval_unseen_file: Optional[str] = cli.arg(None, "recognition at each eval point: matched foils that were not "
                                              "trained on, paired with --eval_seen_file by pair_id or row order")
    eval_prefix_fraction: Optional[float] = cli.arg(None, "also recall the --eval_seen_file texts at each eval "
                                                    "point: greedy completion from their first fraction of tokens "
                                                    "(e.g. 0.5), scored against the true rest (eval/prefix_recall/, "
                                                    "generate.py --mode prefix layout); empty: not asked")
    leakage: str = cli.arg("refuse", "--eval_seen_file/--eval_unseen_file texts that overlap: refuse (an error "
                           "listing them) or warn (drop those pairs, say how many, go on)")
    eval_exposures: str = cli.arg("", "exposures after which to evaluate: 'all' (every exposure up to "
                                  "--num_exposures) or a comma list such as 0,1,2,4 (0 = before training); when "
                                  "empty: all, unless --eval_steps is given")
    eval_steps: str = cli.arg("", "optimizer steps after which to evaluate, e.g. 10,100, 'log' (1..10, 20..100, "
                              "200..1000, ...) or every:N; empty: none")
    eval_temperatures: str = cli.arg("0", "QA sampling temperatures, comma-separated; 0 = greedy (answered once), "
                                     "each other one is answered --eval_repeats times")
    eval_repeats: int = cli.arg(1, "answers per probe at each QA temperature above 0")
    eval_max_new_tokens: int = cli.arg(32, "maximum tokens generated per QA answer")
    eval_batch_size: int = cli.arg(16, "sequences per evaluation batch (generation and scoring)")
    eval_bootstrap: int = cli.arg(1000, "bootstrap resamples for the 95%% confidence intervals of the eval "
                                  "summaries; 0 = none")
    report_to: str = cli.arg("none", "also send the training curves to none, tensorboard, wandb or all "
                             "(accelerate's trackers; W&B runs offline unless WANDB_MODE says otherwise); "
                             "metrics.jsonl is written in any case")
    save_prefix: Optional[str] = cli.arg(None, "also write OUTPUT_DIR/SP_results.npz in the recognition study's "
                                         "layout (train_losses_ckpt: the loss of every logged step; "
                                         "completed_steps); docs/COMING_FROM.md")
    run_name: Optional[str] = cli.arg(None, "tracker run name; when not given: <parent dir>/<output dir> (the "
                                      "cell name in an experiment)")


def validate(args: TrainArgs) -> None:
    exps = save_exposure_list(args)
    cli.collect_errors([
        (args.train_file is not None, "--train_file is required"),
        (args.output_dir is not None, "--output_dir is required"),
        (args.loss_on in (None, "completion", "all"), f"--loss_on must be completion or all, got {args.loss_on}"),
        (args.num_exposures >= 1, "--num_exposures must be >= 1"),
        (all(1 <= k <= args.num_exposures for k in exps),
         f"--save_exposures {exps} goes beyond --num_exposures {args.num_exposures}"),
        training.steps_spec_check(args.save_steps, "save_steps"),
        (args.lr_scheduler in ("constant", "linear", "cosine"), f"--lr_scheduler {args.lr_scheduler} unknown"),
        (not (args.load_in_4bit or args.load_in_8bit) or not (args.from_scratch or args.merge_on_save),
         "--load_in_4bit/--load_in_8bit go with a pretrained base and adapter-only checkpoints (not --from_scratch "
         "or --merge_on_save)"),
        (args.keep_optimizer_state in ("last", "all"), "--keep_optimizer_state must be last or all"),
        (args.batch_size >= 1 and args.gradient_accumulation_steps >= 1, "batch sizes must be >= 1"),
        (not (args.from_scratch and args.init_from), "--from_scratch and --init_from exclude each other"),
        legacy.check_prefix(args.save_prefix),
        fsdp_check(),
        (args.leakage in LEAKAGE_MODES, f"--leakage must be refuse or warn, got {args.leakage}"),
        *eval_checks(args),
        *tracking.checks(args.report_to),
        *cli.numeric_checks(args, positive=("learning_rate", "block_size", "logging_steps"),
                            non_negative=("weight_decay", "warmup_steps", "max_grad_norm", "lora_r", "lora_alpha",
                                          "seed", "debug_signal_at_step"),
                            fraction=("lora_dropout",)),
    ])


def fsdp_check() -> tuple[bool, str]:
    """FSDP (`accelerate launch` with `distributed_type: FSDP`) needs GPUs: accelerate's FSDP plugin finds no CPU
    device (checked with accelerate 1.15 / torch 2.13 on CPU: it fails at start-up, or under ACCELERATE_USE_CPU=1
    silently runs DDP instead). scripts/gpu_check.sh checks it on a GPU."""
    requested = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    return (not requested or torch.cuda.is_available(),
            "FSDP (accelerate_fsdp_config.yaml) needs CUDA GPUs: this machine has none. On CPU use DDP: "
            "ACCELERATE_USE_CPU=1 accelerate launch --config_file accelerate_config.yaml ... (see docs/COMING_FROM.md)")


def save_exposure_list(args: TrainArgs) -> list[int]:
    """--save_exposures as a list: 'all' is every exposure (run_clm_no_trainer's --checkpointing_steps epoch)."""
    if str(args.save_exposures).strip() == "all":
        return list(range(1, args.num_exposures + 1))
    return cli.parse_list(args.save_exposures, int, "save_exposures")


def eval_checks(args: TrainArgs) -> list[tuple[bool, str]]:
    """Problems with the --eval_* flags (checked with the rest, before anything is loaded)."""
    has_files = bool(args.eval_probes_file or args.eval_seen_file or args.eval_unseen_file)
    exps = [] if args.eval_exposures in ("", "all") else cli.parse_list(args.eval_exposures, int, "eval_exposures")
    temps = cli.parse_list(args.eval_temperatures, float, "eval_temperatures")
    return [
        (bool(args.eval_seen_file) == bool(args.eval_unseen_file),
         "--eval_seen_file and --eval_unseen_file go together (recognition needs both the trained texts and the foils)"),
        (args.eval_prefix_fraction is None or bool(args.eval_seen_file),
         "--eval_prefix_fraction recalls the --eval_seen_file texts, so it needs --eval_seen_file/--eval_unseen_file"),
        (args.eval_prefix_fraction is None or 0 < args.eval_prefix_fraction < 1,
         f"--eval_prefix_fraction must be in (0, 1), got {args.eval_prefix_fraction}"),
        (has_files or not (args.eval_exposures or args.eval_steps),
         "--eval_exposures/--eval_steps need an eval file (--eval_probes_file and/or --eval_seen_file/--eval_unseen_file)"),
        (all(0 <= k <= args.num_exposures for k in exps),
         f"--eval_exposures {exps} goes beyond --num_exposures {args.num_exposures} (0 = before training)"),
        training.steps_spec_check(args.eval_steps, "eval_steps"),
        (all(math.isfinite(t) and t >= 0 for t in temps),
         f"--eval_temperatures must be >= 0 and finite (0 = greedy), got {args.eval_temperatures}"),
        (args.eval_repeats >= 1 and args.eval_max_new_tokens >= 1 and args.eval_batch_size >= 1 and args.eval_bootstrap >= 0,
         "--eval_repeats, --eval_max_new_tokens and --eval_batch_size must be >= 1, --eval_bootstrap >= 0"),
    ]


def eval_points(args: TrainArgs, steps_per_epoch: int, total_steps: int) -> tuple[set, set, list[str]]:
    """(exposures, steps, labels in training order) at which the model is evaluated in training."""
    if not (args.eval_probes_file or args.eval_seen_file):
        return set(), set(), []
    if args.eval_exposures == "all" or not (args.eval_exposures or args.eval_steps):
        exps = set(range(1, args.num_exposures + 1))
    else:
        exps = set(cli.parse_list(args.eval_exposures, int, "eval_exposures"))
    steps = training.steps_from_spec(args.eval_steps, total_steps, "eval_steps")
    order = sorted([(k * steps_per_epoch, 0, eval_label(exposure=k)) for k in exps]
                   + [(n, 1, eval_label(step=n)) for n in steps])
    return exps, steps, [lab for _, _, lab in order]


def build_model(args: TrainArgs, tokenizer, load: dict | None = None, rt: dict | None = None):
    """Base model (pretrained, from scratch, or --init_from) wrapped in LoRA when asked; `load` are the
    load_model settings (attention kernel, k-bit quantization) and a quantized base gets peft's k-bit
    preparation before LoRA wraps it (QLoRA)."""
    load = load or {}
    if args.init_from:
        if not Path(args.init_from).is_dir():
            raise DataError(f"--init_from {args.init_from}: checkpoint not found")
        model, _ = load_model(args.init_from, trust_remote_code=args.trust_remote_code, is_trainable=True, **load)
        if is_adapter_dir(args.init_from):
            return model  # keep training the same adapter
    elif args.from_scratch:
        from transformers import AutoConfig, AutoModelForCausalLM  # transformers' model classes: ~0.4 s, not for -h

        cfg = AutoConfig.from_pretrained(resolve_model_path(args.model_name_or_path))
        torch.manual_seed(args.seed)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32,
                                                 attn_implementation=load.get("attn_implementation"))
    else:
        model, _ = load_model(args.model_name_or_path, trust_remote_code=args.trust_remote_code, **load)
    if rt is not None:
        model = runtime.prepare_kbit(model, rt, args.gradient_checkpointing)
    if args.lora_r > 0:
        from peft import LoraConfig, get_peft_model  # only with LoRA: peft imports bitsandbytes (seconds)

        targets = training.resolve_lora_targets(model, args.lora_target_modules)
        model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, target_modules=targets,
                                                 lora_dropout=args.lora_dropout, task_type="CAUSAL_LM"))
        model.peft_config["default"].base_model_name_or_path = str(Path(model.base_model.model.name_or_path)
                                                                   .resolve())
    return model


def load_data(args: TrainArgs, tok) -> tuple[list[dict], list[str], list[str]]:
    """The items of every --train_file, tokenized one per sequence with labels masked per --loss_on:
    (examples, each file's `kind:loss_on`, the file paths). Several files may mix kinds."""
    examples, kinds, ids = [], [], {}
    train_paths = split_paths(args.train_file, "train_file")  # a comma inside an existing file name stays
    for path in train_paths:
        items, kind = training.load_items(path, args.text_column, across=ids)  # an id twice: an error, as in one file
        if kind == "chat":
            training.ensure_chat_template(tok, args.chat_template, path)
        loss_on = args.loss_on or ("all" if kind == "plain" else "completion")
        if kind == "plain" and loss_on == "completion":
            raise DataError(f"{path}: plain text has no completion; use --loss_on all")
        examples += [training.tokenize_item(it, kind, tok, loss_on, args.block_size) for it in items]
        kinds.append(f"{kind}:{loss_on}")
    return examples, kinds, train_paths


def restore_or_start(args: TrainArgs, model, optimizer, scheduler, fingerprint: dict,
                     ds) -> tuple[Optional[Path], training.TrainState]:
    """With --resume and a checkpoint in --output_dir: refuse a changed configuration, load the newest
    checkpoint's weights (and, without DeepSpeed, the optimizer and scheduler state) and return it with its
    TrainState; otherwise (None, a fresh TrainState). DeepSpeed and RNG state follow after accelerate's
    prepare (restore_after_prepare)."""
    out = Path(args.output_dir)
    state = training.TrainState()
    ckpt = training.newest_checkpoint(out) if args.resume else None
    if ckpt is not None:
        saved = json.loads((ckpt / "trainer_state" / "state.json").read_text())
        diff = differences(saved["config"], fingerprint)
        if diff:
            raise DataError(f"--resume: {out} was run with a different configuration; differing: {'; '.join(diff)}")
        training.load_checkpoint_weights(model, ckpt)
        if ds is None:
            opt_state = torch.load(ckpt / "trainer_state" / "optimizer.pt", weights_only=False)
            optimizer.load_state_dict(opt_state["optimizer"])
            scheduler.load_state_dict(opt_state["scheduler"])
        state = training.TrainState(**{k: saved[k] for k in training.TrainState().to_json()})
    return ckpt, state


def restore_after_prepare(acc, ckpt: Optional[Path], scheduler, ds) -> None:
    """The rest of a resume, once accelerate has prepared model and optimizer: the DeepSpeed engine and
    scheduler state (under DeepSpeed) and this process's RNG state."""
    if ds is not None and ckpt is not None:
        acc.load_state(str(ckpt / "trainer_state" / "deepspeed"))
        scheduler.load_state_dict(torch.load(ckpt / "trainer_state" / "scheduler.pt", weights_only=False))
    if ckpt is not None:
        training.set_rng_state(torch.load(ckpt / "trainer_state" / f"rng_{acc.process_index}.pt", weights_only=False))


@dataclass
class Job:
    """Everything the steps of one training run share (built by `setup`, advanced by `train_loop`)."""
    args: TrainArgs
    acc: object
    tok: object
    model: object
    optimizer: object
    scheduler: object
    state: training.TrainState
    examples: list
    lengths: list
    window: int                      # micro-batches per optimizer step over all ranks (world * grad accum)
    steps_per_epoch: int
    total_steps: int
    save_exp: set
    save_steps: set
    eval_exp: set
    eval_steps: set
    eval_labels: list
    evaluator: Optional[InTrainingEval]
    fingerprint: dict
    stop: dict                       # {"flag": bool}: a signal arrived (set by the handler)
    runtime: dict                    # precision, attention, quantization, device as resolved (memlab.runtime)
    t_start: float = 0.0

    @property
    def out(self) -> Path:
        return Path(self.args.output_dir)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This epoch's global micro-batches, padded (recycled) to full windows of world * grad accum."""
        return training.padded_epoch_batches(self.lengths, self.args.batch_size, self.args.seed, epoch, self.window,
                                             shuffle=not self.args.no_shuffle)

    def save(self, path: Path, with_optimizer: bool) -> None:
        training.save_checkpoint(self.acc, self.model, self.tok, self.optimizer, self.scheduler, self.state,
                                 self.fingerprint, path, with_optimizer=with_optimizer, merge=self.args.merge_on_save,
                                 keep_optimizer_state=self.args.keep_optimizer_state, run_dir=self.out)


def setup(args: TrainArgs) -> Job:
    """Output directory, accelerator, data, model, optimizer and schedule, run directory, resume state."""
    # precision, attention kernel, k-bit loading: resolved for this machine and checked before anything is written
    rt = runtime.resolve_train(args, lora=args.lora_r > 0 or bool(args.init_from and is_adapter_dir(args.init_from)))

    # the output-directory rule, before any model loads; the same configuration without --resume re-runs from
    # scratch into the emptied directory (never merged with the old checkpoints)
    if guard_output_dir(args.output_dir, "train.py", args, args.overwrite_output_dir) == "same" and not args.resume:
        empty_dir(Path(args.output_dir))
    acc = training.make_accelerator(rt["precision"], args.report_to, args.output_dir, args.gradient_accumulation_steps)
    set_seed(args.seed)
    out = Path(args.output_dir)
    world, ga = acc.num_processes, args.gradient_accumulation_steps

    # ---- data: one item per sequence, labels masked per --loss_on; eval inputs checked before any model loads
    tok = load_tokenizer(args.init_from or args.model_name_or_path, args.trust_remote_code)
    examples, kinds, train_paths = load_data(args, tok)
    eval_probes, eval_pairs = read_eval_inputs(args.eval_probes_file, args.eval_seen_file, args.eval_unseen_file,
                                               leakage=args.leakage)
    data_files = train_paths + [f for f in (args.eval_probes_file, args.eval_seen_file, args.eval_unseen_file) if f]
    fingerprints = {str(f): file_digest(f) for f in data_files} if acc.is_main_process else {}
    if args.resume and acc.is_main_process:
        check_data_unchanged(out, fingerprints)
    model = build_model(args, tok, runtime.load_kwargs(rt, acc.device, lora=args.lora_r > 0), rt)
    max_len = getattr(model.config, "max_position_embeddings", None)
    if max_len and args.block_size > max_len:
        raise DataError(f"--block_size {args.block_size} is above the model's maximum of {max_len} positions")
    examples = [e for e in examples if any(l != training.IGNORE_INDEX for l in e["labels"])]
    if not examples:
        raise DataError(f"{args.train_file}: no item has tokens to learn from")
    lengths = [len(e["input_ids"]) for e in examples]

    # ---- schedule
    window = world * ga
    steps_per_epoch = len(training.padded_epoch_batches(lengths, args.batch_size, args.seed, 0, window,
                                                        shuffle=not args.no_shuffle)) // window
    recorded = args  # config.json and the fingerprint keep the arguments as given
    if args.max_steps:
        args = replace(args, num_exposures=math.ceil(args.max_steps / steps_per_epoch))
        beyond = [k for k in save_exposure_list(recorded) if k * steps_per_epoch > args.max_steps]
        if beyond and recorded.save_exposures != "all":
            raise DataError(f"--save_exposures {beyond} ends after step {beyond[0] * steps_per_epoch}, beyond --max_steps "
                            f"{args.max_steps} ({steps_per_epoch} steps per exposure): save by step (--save_steps) "
                            "or give fewer steps per checkpoint")
    total_steps = min(steps_per_epoch * args.num_exposures, args.max_steps or steps_per_epoch * args.num_exposures)
    save_exp = {k for k in save_exposure_list(args) if k * steps_per_epoch <= total_steps}
    save_steps = set(training.steps_from_spec(args.save_steps, total_steps, "save_steps"))
    eval_exp, eval_steps, eval_labels = eval_points(args, steps_per_epoch, total_steps)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = training.adamw_with_groups(model, args.learning_rate, args.weight_decay)
    scheduler = training.make_scheduler(args.lr_scheduler, optimizer, args.warmup_steps, total_steps)
    ds = acc.state.deepspeed_plugin
    if ds is not None:
        ds.deepspeed_config.update({"train_micro_batch_size_per_gpu": args.batch_size,
                                    "gradient_accumulation_steps": ga, "train_batch_size": args.batch_size * window,
                                    "gradient_clipping": args.max_grad_norm or 0.0})

    # ---- run directory and resume
    fingerprint = training.config_fingerprint(asdict(recorded))
    ckpt, state = restore_or_start(args, model, optimizer, scheduler, fingerprint, ds)
    if acc.is_main_process:
        prepare_run_dir(out, recorded, "train.py", {"num_processes": world, "data_kinds": kinds, "data_fingerprints": fingerprints,
                                             "distributed_type": str(acc.distributed_type), "runtime": rt})
        keep = [r for r in read_metrics(out / "metrics.jsonl") if r.get("step", 0) <= state.step]
        write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in keep))
        (out / "results.json").unlink(missing_ok=True)
    tracking.start(acc, args.report_to, out, args, args.run_name)
    if eval_labels and ds is not None and ds.zero_stage == 3:
        raise DataError("--eval_* (evaluation inside training) does not work with DeepSpeed ZeRO-3 (parameters are "
                        "partitioned); evaluate saved checkpoints with generate.py/test.py instead")
    evaluator = None
    if eval_labels:
        evaluator = InTrainingEval(out, tok, acc, probes=eval_probes, pairs=eval_pairs,
                                   temperatures=cli.parse_list(args.eval_temperatures, float, "eval_temperatures"),
                                   repeats=args.eval_repeats, max_new_tokens=args.eval_max_new_tokens,
                                   batch_size=args.eval_batch_size, seed=args.seed, bootstrap=args.eval_bootstrap,
                                   fingerprint=fingerprint, fresh=not args.resume,
                                   prefix_fraction=args.eval_prefix_fraction)
    model, optimizer = acc.prepare(model, optimizer)
    restore_after_prepare(acc, ckpt, scheduler, ds)
    return Job(args, acc, tok, model, optimizer, scheduler, state, examples, lengths, window, steps_per_epoch,
               total_steps, save_exp, save_steps, eval_exp, eval_steps, eval_labels, evaluator, fingerprint,
               install_signal_handlers(), rt)


class EvalInterrupted(Exception):
    """Raised by the signal handler inside an evaluation point (one process): the point is abandoned."""


def install_signal_handlers() -> dict:
    """SIGTERM, SIGUSR1 and Ctrl-C (SIGINT) set the stop flag: the loop saves resume state after the current
    step; a second Ctrl-C stops at once (the first one's state save may be lost). During an evaluation point
    (`stop["in_eval"]`, one process only) the handler raises EvalInterrupted at once: an evaluation can take
    minutes, and SLURM's pre-emption warning gives 120 s; the point writes nothing until it is whole, so it is
    simply evaluated again on resume. With several processes the flag is agreed on after the step as before
    (raising in one rank inside a collective would hang the others)."""
    stop = {"flag": False, "in_eval": False}

    def on_signal(signum, frame):
        if signum == signal.SIGINT and stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True
        if stop["in_eval"]:
            stop["in_eval"] = False
            raise EvalInterrupted(signal.Signals(signum).name)
    for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(s, on_signal)
    return stop


def _evaluate_point(job: Job, label: str) -> bool:
    """One evaluation point; False when a signal abandoned it."""
    rng, was_training = training.rng_state(), job.model.training
    job.stop["in_eval"] = job.acc.num_processes == 1 and not job.stop["flag"]
    try:
        headline = job.evaluator(job.model, label)
    except EvalInterrupted as e:
        job.stop["in_eval"] = False
        training.set_rng_state(rng)  # the evaluator's own restore may not have run: the resume state is exact
        job.model.train(was_training)
        job.acc.print(f"{e}: evaluation of {label} abandoned (it is evaluated again on --resume)")
        return False
    finally:
        job.stop["in_eval"] = False
    tracking.log(job.acc, job.args.report_to, headline, job.state.step, "eval/")
    return True


def evaluate_here(job: Job, signalled: bool = False) -> bool:
    """Evaluate at the current position if it is an eval point (skipped when already done); on a signal the
    state is saved first and the point is evaluated when the run resumes. Returns True when a signal came
    during the evaluation (the caller saves the resume state and exits 75)."""
    if job.evaluator is None or signalled:
        return False
    state = job.state
    if state.batch_in_epoch == 0 and state.epoch in job.eval_exp:
        if not _evaluate_point(job, eval_label(exposure=state.epoch)):
            return True
    if state.step in job.eval_steps:
        if not _evaluate_point(job, eval_label(step=state.step)):
            return True
    return False


def train_step(job: Job, batches: list[list[int]], log: dict) -> None:
    """One optimizer step: this rank's micro-batches of the current window, gradients accumulated."""
    acc, model, args = job.acc, job.model, job.args
    win = batches[job.state.batch_in_epoch: job.state.batch_in_epoch + job.window]
    for mb in win[acc.process_index::acc.num_processes]:
        batch = training.collate([job.examples[i] for i in mb], job.tok.pad_token_id)
        log["tokens"] += int(batch["attention_mask"].sum())
        log["padded"] += batch["attention_mask"].numel()
        with acc.accumulate(model):
            loss, _ = training.causal_lm_loss(model, {k: v.to(acc.device) for k, v in batch.items()})
            acc.backward(loss)
            if acc.sync_gradients and args.max_grad_norm:
                acc.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            job.optimizer.step()
            job.optimizer.zero_grad()
        log["loss"].append(loss.detach().float())
    job.scheduler.step()
    job.state.step += 1
    job.state.batch_in_epoch += len(win)
    if job.state.batch_in_epoch >= len(batches):
        job.state.epoch, job.state.batch_in_epoch = job.state.epoch + 1, 0


def log_step(job: Job, log: dict) -> bool:
    """Reduce this step's loss and token counts over ranks, write a metrics.jsonl row every --logging_steps
    (and on a signal); returns whether any rank was signalled."""
    acc, state = job.acc, job.state
    stats = torch.tensor([torch.stack(log["loss"]).mean().item(), log["tokens"], log["padded"], float(job.stop["flag"])])
    if acc.num_processes > 1:  # one small all-reduce: mean loss, token counts, and "any rank was signalled"
        stats = acc.reduce(stats.to(acc.device), reduction="sum").cpu()
        stats[0] /= acc.num_processes
    state.tokens_seen += int(stats[1])
    signalled = bool(stats[3] > 0 or (job.stop["flag"] and acc.num_processes == 1))
    if state.step % job.args.logging_steps == 0 or stats[3] > 0:
        row = {"step": state.step, "exposure": round(state.step / job.steps_per_epoch, 4),
               "epoch": math.ceil(state.step / job.steps_per_epoch), "loss": round(float(stats[0]), 6),
               "lr": job.scheduler.get_last_lr()[0], "tokens_per_s": round(float(stats[1]) / (time.time() - log["t"]), 1),
               "padding_fraction": round(1 - float(stats[1]) / float(stats[2]), 4), "tokens_seen": state.tokens_seen}
        if acc.is_main_process:
            append_jsonl(job.out / "metrics.jsonl", row)
        tracking.log(acc, job.args.report_to, row, state.step, "train/")
        log.update(loss=[], tokens=0, padded=0, t=time.time(), postfix={"exposure": row["exposure"], "loss": row["loss"]})
    return signalled


def after_step(job: Job, signalled: bool) -> None:
    """Eval and checkpoints due at this step; on a signal, resume state saved and exit 75."""
    state, args, acc = job.state, job.args, job.acc
    signalled = evaluate_here(job, signalled) or signalled
    if state.batch_in_epoch == 0 and state.epoch in job.save_exp:
        job.save(job.out / "checkpoints" / f"exposure_{state.epoch}", with_optimizer=True)
    if state.step in job.save_steps:
        job.save(job.out / "checkpoints" / f"step_{state.step:07d}", with_optimizer=True)
    if args.debug_signal_at_step and state.step == args.debug_signal_at_step and acc.is_main_process:
        signal.raise_signal(signal.SIGUSR1)
        job.stop["flag"] = True
        signalled = signalled or acc.num_processes == 1
    if signalled:
        requeue(job)


def requeue(job: Job) -> None:
    """Save the resume state and exit 75 (EX_TEMPFAIL: the SLURM templates requeue on it)."""
    job.save(job.out / "resume", with_optimizer=True)
    job.acc.print(f"signal received: state saved to {job.out / 'resume'} at step {job.state.step}; "
                  f"rerun with --resume (exit {EXIT_REQUEUE})")
    job.acc.end_training()
    sys.exit(EXIT_REQUEUE)


def train_loop(job: Job) -> float:
    """The exposures from the current state to the end; returns the seconds spent in training steps."""
    job.model.train()
    job.t_start = time.time()
    if evaluate_here(job):  # exposure 0 (before training) when asked; on resume, a point the signal interrupted
        requeue(job)
    bar = quiet.progress(job.total_steps, "train", initial=job.state.step, disable=not job.acc.is_local_main_process)
    log = {"loss": [], "tokens": 0, "padded": 0, "t": time.time()}
    while job.state.epoch < job.args.num_exposures and job.state.step < job.total_steps:
        batches = job.epoch_batches(job.state.epoch)
        epoch_now = job.state.epoch
        while job.state.epoch == epoch_now and job.state.step < job.total_steps:
            train_step(job, batches, log)
            signalled = log_step(job, log)
            if "postfix" in log:
                bar.set_postfix(**log.pop("postfix"))
            bar.update(1)
            after_step(job, signalled)
    bar.close()
    return time.time() - job.t_start - (job.evaluator.eval_s_this_run if job.evaluator else 0.0)


def finish(job: Job, loop_s: float) -> dict:
    """The end of a finished run: the final weights (final/ unless the last exposure was saved as a
    checkpoint), results.json (with each rank's parameter digest and the in-training eval summary), and
    no resume state left behind."""
    args, acc, out = job.args, job.acc, job.out
    final = out / "checkpoints" / f"exposure_{args.num_exposures}"
    if args.num_exposures not in job.save_exp or job.state.epoch < args.num_exposures:  # --max_steps mid-exposure
        final = out / "final"
        job.save(final, with_optimizer=False)
    digests = acc.gather_for_metrics([training.param_digest(acc.unwrap_model(job.model))], use_gather_object=True)
    results = training.summarize_run(out, job.examples, job.lengths, args, acc.num_processes, job.steps_per_epoch,
                                     time.time() - job.t_start, job.state, final, digests)
    results["distributed_type"] = str(acc.distributed_type)
    results["runtime"] = job.runtime
    results["train_loop_s"] = round(loop_s, 2)  # training steps only (no eval, no final save), this invocation
    if job.evaluator is not None:
        results["eval"] = job.evaluator.finalize(job.eval_labels)
        results["eval"]["train_loop_s"] = results["train_loop_s"]
    if acc.is_main_process:
        shutil.rmtree(out / "resume", ignore_errors=True)  # a finished run needs no resume state
        if args.save_prefix:
            legacy.write_train(out, args.save_prefix, read_metrics(out / "metrics.jsonl"), job.state.step)
        write_results(out, results)
    acc.wait_for_everyone()
    acc.end_training()
    return results


def main(args: TrainArgs) -> dict:
    """setup -> train_loop -> finish."""
    validate(args)
    job = setup(args)
    return finish(job, train_loop(job))


if __name__ == "__main__":
    cli.run(main, TrainArgs)
