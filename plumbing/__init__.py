"""The plumbing beneath the reading path: what a learner reads only when needed. Nothing here
imports the reading-path files (model.py, train.py, ...); they import from here.

    weights.py        finding weights: a flag's path, a library cache, a download, or one line
    formats.py        reading every released checkpoint layout (LlamaGen, OpenAI's TorchScript)
    reward_models.py  loading CLIP, HPSv2.1, MANIQA and the Qwen judge as their libraries do, in
                      their run's (or AR-GRPO's) precision
    t2i_scorers.py    loading PickScore, ImageReward and the LAION aesthetic predictor
    compiled.py       the compiled decode path (generate(..., compile=True))
    flags.py          the command lines: flag tables, range, device, path and memory checks
    rundir.py         a run directory: its owner (lock), --resume / --overwrite rules, args,
                      metrics, checkpoints, what a stopped run says
    stops.py          non-finite stops; run_cli, every command's one-line exit (errors, Ctrl-C)
    distributed.py    the process group and the collectives of the bookkeeping
    sharding.py       DDP or FSDP2 (--fsdp): wrapping, the rollout's gather, full checkpoints
    lora.py           LoRA adapters (--lora-rank): the reference as the base with adapters off
    files.py          atomic writes of every output, stale temporary files, writable outputs,
                      readers with one-line errors (torn .jsonl lines dropped)
    captions.py       DeepFloyd-IF's caption cleaning
    prompts.py        prompt files, ImageNet class names, GenEval's folder layout
    images.py         what the reward models see (AR-GRPO's inputs too), uint8 conversion, PNG grids
    standins.py       the offline stand-ins (tiny random models) of --preset tiny and the tests
    mnist.py          the mnist preset's world: real digits, patch tokenizer, reward nets, judge
    pretrain.py       pretraining that world once per machine, and its cache
    judge.py          the Qwen judge's words (AR-GRPO's prompts, verbatim) and its answer parsing
    precision.py      which dtype each phase runs in (a run's bf16, the paper presets' fp32)
"""
