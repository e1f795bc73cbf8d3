"""The plumbing beneath the reading path: what a learner reads only when needed. Nothing here
imports the reading-path files (model.py, train.py, ...); they import from here.

    weights.py        finding weights: a flag's path, a library cache, a download, or one line
    formats.py        reading every released checkpoint layout (LlamaGen, OpenAI's TorchScript)
    reward_models.py  loading CLIP, HPSv2.1, MANIQA and the Qwen judge as their libraries do
    t2i_scorers.py    loading PickScore, ImageReward and the LAION aesthetic predictor
    compiled.py       the compiled decode path (generate(..., compile=True))
    flags.py          the command lines: flag tables, range checks, path checks
    rundir.py         a run directory: --resume / --overwrite rules, args, metrics, checkpoints
    stops.py          non-finite stops and the one-line, clean exit of a (torchrun) process
    distributed.py    the process group and the collectives of the bookkeeping
    files.py          atomic saves, stale temporary files, writable outputs
    captions.py       DeepFloyd-IF's caption cleaning
    prompts.py        prompt files, ImageNet class names, GenEval's folder layout
    images.py         uint8 conversion and PNG grids
    standins.py       the offline stand-ins (tiny random models) of --preset tiny and the tests
    mnist.py          the mnist preset's world: real digits, patch tokenizer, reward nets, judge
    pretrain.py       pretraining that world once per machine, and its cache
"""
