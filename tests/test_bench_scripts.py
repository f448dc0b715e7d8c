"""The benchmark scripts' options, on CPU with tiny models (their timings mean nothing here; what is checked is which
rows run and how bad options are refused)."""

import pytest

from helpers import load_script


def test_model_rows_only_the_chosen_models_and_llama():
    bench_scan = load_script("bench_scan")
    rows = bench_scan.run_model_rows(device="cpu", small=True, steps=1, models=["bdlru4", "hlru2"])
    assert [r["model"] for r in rows] == ["hlru m=2", "bdlru m=4", "llama"]
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert next(r for r in rows if r["model"] == "llama")["vs_llama"] == 1.0


def test_model_rows_include_the_time_first_layout_by_its_short_name():
    bench_scan = load_script("bench_scan")
    rows = bench_scan.run_model_rows(device="cpu", small=True, steps=1, models=["hlru1-time-first", "hlru2"])
    assert [r["model"] for r in rows] == ["hlru m=2", "hlru m=1 time-first", "llama"]
    assert [r["scan_layout"] for r in rows] == ["time_last", "time_first", None]


def test_model_rows_refuse_an_unknown_model():
    bench_scan = load_script("bench_scan")
    with pytest.raises(ValueError, match=r"--models: unknown rows \['bdlru3'\]"):
        bench_scan.run_model_rows(device="cpu", small=True, steps=1, models=["bdlru3"])


def test_model_rows_pass_and_record_the_compile_mode(monkeypatch):
    import torch

    bench_scan = load_script("bench_scan")
    modes = []

    def fake_compile(model, mode=None):  # what reaches torch.compile, without compiling (minutes on CPU)
        modes.append(mode)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    rows = bench_scan.run_model_rows(device="cpu", small=True, steps=1, models=["hlru1"], compile_models=True,
                                     compile_mode="max-autotune")
    assert modes == ["max-autotune", "max-autotune"]
    assert [r["compile_mode"] for r in rows] == ["max-autotune", "max-autotune"]
    assert "torch.compile mode=max-autotune" in bench_scan.model_lines(rows)[0]


def test_model_rows_refuse_a_compile_mode_without_compiling():
    bench_scan = load_script("bench_scan")
    with pytest.raises(ValueError, match=r"--model-compile-mode 'reduce-overhead' .* needs --model-compile"):
        bench_scan.run_model_rows(device="cpu", small=True, steps=1, models=["hlru1"], compile_mode="reduce-overhead")


def test_model_rows_pass_the_loss_backend_to_our_models_only():
    bench_scan = load_script("bench_scan")
    rows = bench_scan.run_model_rows(device="cpu", small=True, steps=1, models=["hlru2"], loss_backend="triton")
    assert [(r["model"], r["loss_backend"]) for r in rows] == [("hlru m=2", "triton"), ("llama", None)]
    assert "our models' loss: triton, Llama's: transformers'" in bench_scan.model_lines(rows)[0]
    rows = bench_scan.run_model_rows(device="cpu", small=True, steps=1, models=["hlru2"])  # None: torch on CPU
    assert [(r["model"], r["loss_backend"]) for r in rows] == [("hlru m=2", "torch"), ("llama", None)]
    for r in rows:  # the median of three timed windows, each of them kept
        assert len(r["step_ms_windows"]) == 3 and r["step_ms"] == sorted(r["step_ms_windows"])[1]
    assert "the median of 3 timed windows" in bench_scan.model_lines(rows)[0]
    assert "(windows " in bench_scan.model_lines(rows)[1]
    assert all(r["gpu_kernel_ms"] is None for r in rows)  # CPU: no GPU kernels to profile
    rows[0]["gpu_kernel_ms"] = 12.34
    assert "GPU kernels 12.3 ms" in bench_scan.model_lines(rows)[1]


@pytest.mark.parametrize("min_new_tokens", [False, True])
def test_generate_bench_decodes_exactly_the_timed_tokens(tmp_path, min_new_tokens):
    """Both protocols decode exactly max_new_tokens (checked in timed_generate): by default without an end-of-sequence
    id and without min_new_tokens (no logits processor), or with min_new_tokens = max_new_tokens; the JSON says which."""
    import json

    import torch

    bench_generate = load_script("bench_generate")
    model = bench_generate.without_end_of_sequence(bench_generate.build("hlru-m2", True, 4096).eval())
    assert model.generation_config.eos_token_id is None
    ids = torch.randint(3, 4096, (2, 5))
    seen = []
    generate = model.generate
    model.generate = lambda *args, **kwargs: seen.append(kwargs) or generate(*args, **kwargs)
    bench_generate.timed_generate(model, ids, 3, torch.device("cpu"), min_new_tokens=min_new_tokens)  # raises if short
    assert seen[0]["max_new_tokens"] == 3 and seen[0].get("min_new_tokens") == (3 if min_new_tokens else None)
    out = tmp_path / "generate.json"
    argv = ["--device", "cpu", "--small", "--models", "hlru-m2", "--modes", "cuda-graph", "--contexts", "8",
            "--batches", "2", "--steps", "2", "--ttft_context", "0", "--out", str(out)]
    bench_generate.main(argv + (["--min_new_tokens"] if min_new_tokens else []))
    result = json.loads(out.read_text())
    assert result["protocol"] == ("min_new_tokens = max_new_tokens" if min_new_tokens
                                  else "max_new_tokens alone, no end-of-sequence id")
    assert [(r["batch"], r["context"]) for r in result["rows"]] == [(1, 8), (2, 128)]
    assert all("ms_per_token" in r for r in result["rows"])  # timings on a loaded CPU mean nothing


def test_generate_bench_refuses_a_short_generation(monkeypatch):
    """A run that stops before max_new_tokens (an end-of-sequence id emitted) is an error, not a wrong timing."""
    import torch

    bench_generate = load_script("bench_generate")
    model = bench_generate.build("hlru-m2", True, 4096).eval()
    monkeypatch.setattr(model, "generate", lambda ids, **kwargs: ids[:, :-1])
    with pytest.raises(RuntimeError, match="decoded -1 tokens, not 3"):
        bench_generate.timed_generate(model, torch.randint(3, 4096, (1, 5)), 3, torch.device("cpu"))


def test_model_rows_refuse_a_cuda_graph_without_cuda_or_with_compile():
    bench_scan = load_script("bench_scan")
    with pytest.raises(ValueError, match=r"--model-cuda-graph .* needs a CUDA device, got 'cpu'"):
        bench_scan.run_model_rows(device="cpu", small=True, steps=1, models=["hlru1"], cuda_graph=True)
    with pytest.raises(ValueError, match=r"cannot be combined with --model-compile \(compile_models=True\)"):
        bench_scan.run_model_rows(device="cuda", small=True, steps=1, models=["hlru1"], cuda_graph=True,
                                  compile_models=True)
    rows = bench_scan.run_model_rows(device="cpu", small=True, steps=1, models=["hlru1"])
    assert [r["cuda_graph"] for r in rows] == [False, False]
    rows[0]["cuda_graph"] = True
    assert "each step one captured CUDA graph" in bench_scan.model_lines(rows)[0]
    # a row whose capture failed is reported, and the rows against a failed Llama have no ratio
    failed = dict(rows[1], error="capture failed: operation not permitted when stream is capturing")
    for key in ("step_ms", "step_ms_windows", "tokens_per_s", "gpu_kernel_ms"):
        failed.pop(key)
    rows[0]["vs_llama"] = None
    lines = bench_scan.model_lines([rows[0], failed])
    assert "n/a" in lines[1] and "capture failed: operation not permitted" in lines[2]
    assert "the median of 3 timed windows" in lines[0]


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["hlru", "llama"])
def test_a_captured_training_step_updates_the_parameters_as_eager_steps_do(name):
    """The benchmark's --model-cuda-graph recipe (`_captured`): 2 warm-up steps, the capture (which records the step
    without running it), 2 replays train the model as 4 eager steps do."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from hf_lrnn import HLRUConfig

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    bench_scan = load_script("bench_scan")
    common = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, intermediate_size=128)
    config = HLRUConfig(order=2, **common) if name == "hlru" else LlamaConfig(
        num_attention_heads=4, attn_implementation="sdpa", **common)
    ids = torch.randint(0, 256, (2, 64), device="cuda")
    trained = []
    for captured in (False, True):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).cuda()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True, capturable=captured)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not captured):
                model(ids, labels=ids, use_cache=False).loss.backward()
            optimizer.step()

        if captured:
            replay = bench_scan._captured(step, "cuda")  # 2 warm-up steps, then the capture
            replay()
            replay()
        else:
            for _ in range(4):
                step()
        torch.cuda.synchronize()
        trained.append([p.detach().float().clone() for p in model.parameters()])
    for eager, graphed in zip(*trained):
        torch.testing.assert_close(graphed, eager, rtol=1e-2, atol=1e-3)


def test_scan_table_prints_the_time_last_columns(monkeypatch, tmp_path, capsys):
    """The kernel table's time-last lines, from rows as run_case returns them (faked: the timings need CUDA): m = 1
    with its speed-ups over fla and accelerated-scan, m = 2 against the [B, T, N] kernels."""
    import sys

    bench_scan = load_script("bench_scan")
    base = dict(op="hlru", B=8, T=4096, D=1024, fwd_ms=0.2, fwd_seq_ms=0.3, fwdbwd_ms=0.8, fwd_TBps=1.0,
                fwdbwd_TBps=1.0, fwd_pct_copy=25.0, fwdbwd_pct_copy=25.0, mem_MB=10.0, time_last_fwd_ms=0.1,
                time_last_fwdbwd_ms=0.2, time_last_mem_MB=5.0, time_last_fwd_pct_copy=80.0,
                time_last_fwdbwd_pct_copy=70.0)
    rows = {1: dict(base, m=1, time_last_speedup_vs_chunk_hgrn_fwd=3.0, time_last_speedup_vs_chunk_hgrn_fwdbwd=2.5,
                    time_last_speedup_vs_accelerated_scan_fwd=0.8, time_last_speedup_vs_accelerated_scan_fwdbwd=0.9),
            2: dict(base, m=2)}
    monkeypatch.setattr(bench_scan, "copy_bandwidth", lambda: 4.0)
    plain = {key: value for key, value in base.items() if not key.startswith("time_last")}
    monkeypatch.setattr(bench_scan, "run_case",
                        lambda op, B, T, D, m, *a, **k: rows[m] if op == "hlru" else dict(plain, op=op, m=m))
    monkeypatch.setattr(bench_scan, "run_layer", lambda m: dict(m=m, note="skipped"))
    monkeypatch.setattr(bench_scan.torch.cuda, "get_device_name", lambda: "fake")
    monkeypatch.setattr(sys, "argv", ["bench_scan.py", "--orders", "1,2", "--no-model",
                                      "--out", str(tmp_path / "scan.json")])
    bench_scan.main()
    table = [line for line in capsys.readouterr().out.splitlines() if "time-last" in line and "|" in line]
    assert len(table) == 3 * 2  # three shapes, H-LRU m = 1 and 2 (BD-LRU rows have none)
    assert "fla chunk f/fb 3.0x/2.5x; acc-scan f/fb 0.80x/0.90x" in table[0]
    assert "2.00x / 4.00x the [B, T, N] kernels' fwd / fwd+bwd" in table[1]
    import json

    saved = json.loads((tmp_path / "scan.json").read_text())
    assert saved["timing"] == "graph" and saved["timing_fallbacks"] == []  # the default: the kernels' GPU time
    assert "kernel times: GPU time of CUDA-graph replays" in saved["table"].splitlines()[0]


def test_kernel_timing_uses_graph_replays_and_falls_back_to_eager_where_capture_fails(monkeypatch):
    """bench(): --timing graph times the CUDA-graph replays (the kernels' GPU time); a call whose capture fails is
    timed eagerly with do_bench and recorded in TIMING_FALLBACKS; --timing eager never captures."""
    bench_scan = load_script("bench_scan")
    monkeypatch.setattr(bench_scan.torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(bench_scan, "do_bench", lambda fn, **kw: [3.0, 2.0, 4.0])
    monkeypatch.setattr(bench_scan, "TIMING_FALLBACKS", [])
    calls = []
    monkeypatch.setattr(bench_scan, "do_bench_cudagraph", lambda fn, **kw: calls.append(fn) or [1.0, 0.5, 1.5])
    monkeypatch.setattr(bench_scan, "TIMING", "graph")
    assert bench_scan.bench(lambda: None) == 1.0 and len(calls) == 1

    def refuse(fn, **kw):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(bench_scan, "do_bench_cudagraph", refuse)
    assert bench_scan.bench(lambda: None) == 3.0
    assert len(bench_scan.TIMING_FALLBACKS) == 1 and "not permitted" in bench_scan.TIMING_FALLBACKS[0]
    monkeypatch.setattr(bench_scan, "do_bench_cudagraph", lambda fn, **kw: calls.append(fn) or [1.0, 0.5, 1.5])
    monkeypatch.setattr(bench_scan, "TIMING", "eager")
    assert bench_scan.bench(lambda: None) == 3.0 and len(calls) == 1
