"""Helpers shared by several test modules (imported explicitly, not through conftest)."""

import importlib.util
import json
import os
import signal
import socket
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Where the GPU tests put their tensors. HF_LRNN_TEST_CUDA_DEVICE=cuda:1 runs them on a second GPU while cuda:0 stays
# the current device, which shows that every kernel launches on its tensors' device.
GPU = os.environ.get("HF_LRNN_TEST_CUDA_DEVICE", "cuda")

# The start of every script that must run WITHOUT the hf_lrnn package (remote code only): it blocks the import and
# fails loudly if the package could still be imported, since the test would then prove nothing.
HIDE_HF_LRNN = """\
import sys
sys.modules["hf_lrnn"] = None  # make sure the package itself cannot be imported
try:
    import hf_lrnn  # noqa
    raise SystemExit("hf_lrnn is importable; the test would prove nothing")
except ImportError:
    pass
"""


def load_script(name):
    """scripts/<name>.py as a module (by path: an installed package may own the name `evaluate`), loaded once."""
    module_name = f"hf_lrnn_script_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(ROOT, "scripts", f"{name}.py"))
        sys.modules[module_name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def train_script():
    """scripts/train.py as a module."""
    if os.path.join(ROOT, "scripts") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import train

    return train


TINY = "hidden_size=16,intermediate_size=32"
TASK_OPTIONS = "vocab_size=16,seq_len=16,num_train=64,num_test=32"


def run_train(output_dir, *extra):
    """scripts/train.py in this process (restoring the signal handlers it installs and accelerate's singleton);
    a tiny H-LRU on a tiny in_context_recall unless `extra` says otherwise (later flags win)."""
    from accelerate.state import AcceleratorState, GradientState

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        train_script().main(["--task", "in_context_recall", "--task_options", TASK_OPTIONS, "--model_type", "hlru",
                             "--config_overrides", TINY, "--per_device_train_batch_size", "8", "--learning_rate",
                             "3e-3", "--output_dir", str(output_dir), "--cpu", "--no_plot", *extra])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def cli_env() -> dict:
    """The environment of a script run as a subprocess: this checkout importable, one thread, compiled Triton."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    return env


# ------------------------------------------------------------------------------- tiny models and tokenizers


def archs() -> dict:
    """arch -> (config class, units field, size field, backbone, causal LM, classifier); hf_lrnn is imported only
    here, after conftest has chosen the Triton mode."""
    import hf_lrnn

    return {
        "hlru": (hf_lrnn.HLRUConfig, "num_channels", "order", hf_lrnn.HLRUModel, hf_lrnn.HLRUForCausalLM,
                 hf_lrnn.HLRUForSequenceClassification),
        "bdlru": (hf_lrnn.BDLRUConfig, "num_blocks", "block_size", hf_lrnn.BDLRUModel, hf_lrnn.BDLRUForCausalLM,
                  hf_lrnn.BDLRUForSequenceClassification),
    }


def tiny_config(arch="bdlru", m=2, num_units=5, **overrides):
    config_class, units_field, size_field = archs()[arch][:3]
    fields = dict(vocab_size=37, hidden_size=16, num_hidden_layers=2, intermediate_size=32, pad_token_id=0,
                  bos_token_id=1, eos_token_id=2)
    fields.update({units_field: num_units, size_field: m})
    fields.update(overrides)
    return config_class(**fields)


def tiny_model(arch="bdlru", head="causal_lm", m=2, seed=0, **overrides):
    import torch

    torch.manual_seed(seed)
    model_class = {"model": archs()[arch][3], "causal_lm": archs()[arch][4], "classification": archs()[arch][5]}[head]
    return model_class(tiny_config(arch, m, **overrides)).eval()


def tiny_tokenizer(vocab_size=37):
    """A word-level tokenizer over tokens w3..w{vocab_size-1} plus <pad>/<s>/</s> (ids 0, 1, 2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", padding_side="left"
    )


def assert_same_training_step(fast, ref, logits_tol=(1e-5, 1e-5), grad_tol=(1e-4, 1e-5), **inputs):
    """One training forward (inputs include labels) and backward of two models with the same weights (e.g. the Triton
    and the reference backend): logits within logits_tol and every parameter's gradient within grad_tol ((rtol, atol)
    each; by default 1e-5 and 1e-4). Returns both outputs."""
    outs = []
    for model in (fast, ref):
        model.train()
        out = model(**inputs)
        out.loss.backward()
        outs.append(out)
    torch.testing.assert_close(outs[0].logits, outs[1].logits, rtol=logits_tol[0], atol=logits_tol[1])
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=grad_tol[0], atol=grad_tol[1], msg=name)
    return outs
