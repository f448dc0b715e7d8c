# Whole-model training step (bench_scan.py's model rows, eager) with the scans' chunked mode as 3 phases, single pass
# both ways, or single pass forward only; alternating rounds. Usage: python3 .prof/single_pass_models.py [rounds]
import importlib.util, json, os, sys
sys.path.insert(0, ".")
from hf_lrnn import scan_triton as st
spec = importlib.util.spec_from_file_location("bench_scan", "scripts/bench_scan.py")
bench_scan = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench_scan)
OUT = os.environ.get("OUT", "/tmp")
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
single_backward = st._single_pass_backward
results = []
for rnd in range(rounds):
    for mode in ("3-phase", "single", "single-fwd"):
        st.SINGLE_PASS = mode != "3-phase"
        st._single_pass_backward = st._backward_launch if mode == "single-fwd" else single_backward
        for r in bench_scan.run_model_rows(models=["hlru2", "bdlru4"], steps=10):
            r.update(mode=mode, round=rnd)
            results.append(r)
            print(f"round {rnd} {mode:10s} {r['model']:10s} {r['step_ms']:7.2f} ms  {r['vs_llama']:.3f}x", flush=True)
json.dump(results, open(os.path.join(OUT, "single_pass_models.json"), "w"), indent=1)
