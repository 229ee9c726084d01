"""The GPU path, checked and timed in one script: `make gpu-check` (under 8 minutes on one GPU).

    python bench/gpu.py [--quick]

1. `pytest -m gpu` (tests/test_gpu.py): every path puts its tensors on CUDA in the chosen dtype.
2. Phi-2 shape (phi-2-shape, 2.78B, random weights) in bf16:
   - forward throughput at batch 8 x 512 tokens, beside a bf16 matrix-product rate measured on
     the same GPU in the same run: model FLOP utilisation (MFU) = the forward's FLOP rate
     (2 x non-embedding parameters x tokens, plus attention's 4 x layers x seq x d_model per
     token) over the matmul rate;
   - caching ratios against the plain forward of a separate, never-hooked HF model with the same
     weights: resid_post (32 hooks) and every hook, both kept on the GPU;
   - hooked generation tokens/s against plain HF `generate` (batch 8, greedy);
   - probe training time for 32 layers on cached mean activations.
3. SAE training (TopK, d 576, width 4608, k 32) tokens/s on the GPU, and on the CPU in the same run.
4. With real Phi-2 weights in the Hugging Face cache: the bridge's logits against plain HF and
   its answer to "What is the capital of France?".

Without CUDA it says so and exits 0. Writes results/bench/gpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_json  # noqa: E402

# --dry-run-cpu runs every step on tiny-phi on the CPU (the suite does, so the script cannot rot).
DEVICE, MODEL = "cuda", "phi-2-shape"


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def cuda_seconds(fn, repeats: int = 5, warmup: int = 2) -> float:
    """Median wall seconds of fn() with the GPU synchronised around each call."""
    times = []
    for i in range(warmup + repeats):
        synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            result = fn()
        synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
        del result
    return statistics.median(times)


def matmul_tflops(n: int = 8192) -> float:
    n = n if DEVICE == "cuda" else 512
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    seconds = cuda_seconds(lambda: a @ b, repeats=10, warmup=3)
    return 2 * n**3 / seconds / 1e12


def gpu_tests() -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "test_gpu.py"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    tail = (
        done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
    )
    print(f"pytest -m gpu: {tail} (exit {done.returncode}, {time.perf_counter() - start:.0f} s)")
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-2000:])
    return {"exit": done.returncode, "summary": tail}


def plain_model(model):
    """A separate Hugging Face model with the same weights, never booted or hooked: the baseline."""
    from transformers import AutoModelForCausalLM

    from workbench.model.builds import build_phi2_shape

    if model.info.name == "phi-2-shape":
        return build_phi2_shape(torch.bfloat16, DEVICE)
    return (
        AutoModelForCausalLM.from_pretrained(
            model.info.path, dtype=torch.bfloat16, attn_implementation="eager"
        )
        .to(DEVICE)
        .eval()
    )


def phi2_shape(quick: bool) -> dict:
    import workbench as wb
    from workbench.interp.probes import train_probes

    results = {}
    start = time.perf_counter()
    model = wb.load(MODEL, device=DEVICE, dtype="bfloat16")
    results["load_seconds"] = round(time.perf_counter() - start, 1)
    plain = plain_model(model)
    info = model.info
    print(
        f"{MODEL}: {info.n_params:,} parameters, {info.weight_bytes / 2**30:.2f} GiB in bf16, "
        f"loaded in {results['load_seconds']} s"
    )

    batch, seq = 8, (512 if DEVICE == "cuda" else 32)
    ids = torch.randint(100, 50000, (batch, seq), generator=torch.Generator().manual_seed(0)).to(
        DEVICE
    )
    rows = ids.tolist()
    repeats = 3 if quick else 5
    forward = cuda_seconds(lambda: plain(ids).logits, repeats)
    non_embedding = info.n_params - 2 * info.d_vocab * info.d_model
    flops = (
        2 * (non_embedding + info.d_vocab * info.d_model) * batch * seq
        + 4 * info.n_layers * seq * info.d_model * batch * seq
    )
    peak = matmul_tflops()
    achieved = flops / forward / 1e12
    results.update(
        forward_seconds=forward,
        tokens_per_second=batch * seq / forward,
        matmul_tflops=peak,
        forward_tflops=achieved,
        mfu=achieved / peak,
    )
    print(
        f"forward {batch} x {seq} bf16: {forward * 1000:.1f} ms, {batch * seq / forward:,.0f} tokens/s, "
        f"{achieved:.0f} TFLOP/s; bf16 matmul 8192^3 on this GPU: {peak:.0f} TFLOP/s; MFU {achieved / peak:.1%}"
    )

    cases = {
        "bridge_forward": lambda: model.bridge(ids, return_type="logits"),
        "cache_resid_post": lambda: wb.cache_tokens(
            model, rows, "resid_post", "all", batch_size=batch, store_device=DEVICE, progress=False
        ),
        "cache_every_hook": lambda: wb.cache_tokens(
            model, rows, "all", "all", batch_size=batch, store_device=DEVICE, progress=False
        ),
        "tl_run_with_cache_every_hook": lambda: model.bridge.run_with_cache(ids),
    }
    ratios = {}
    for name, fn in cases.items():
        try:
            seconds = cuda_seconds(fn, repeats)
            ratios[name] = seconds / forward
            print(
                f"  {name:30s} {seconds * 1000:8.1f} ms  {seconds / forward:5.2f}x the plain HF forward"
            )
        except torch.cuda.OutOfMemoryError as error:
            ratios[name] = None
            print(f"  {name:30s} out of GPU memory: {str(error).splitlines()[0]}")
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    results["ratios_to_plain_forward"] = ratios

    prompt_ids = ids[:, : min(64, seq)]
    new = 32 if quick else 64
    inputs = {"input_ids": prompt_ids, "attention_mask": torch.ones_like(prompt_ids)}
    greedy = dict(
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        pad_token_id=model.tokenizer.pad_token_id,
    )
    hf_gen = cuda_seconds(lambda: plain.generate(**inputs, **greedy), 2, 1)
    texts = [model.tokenizer.decode(r) for r in prompt_ids.tolist()]
    written = []  # wb.generate may stop early at EOS on random weights: count the tokens it wrote

    def hooked():
        out = wb.generate(model, texts, max_new_tokens=new, raw=True, batch_size=batch)
        written.append(sum(len(g.new_tokens) for g in out))
        return out

    ours = cuda_seconds(hooked, 2, 1)
    written = written[-1]
    results["hf_generate_tokens_per_second"] = batch * new / hf_gen
    results["hooked_generate_tokens_per_second"] = written / ours
    print(
        f"generation, batch 8, {new} new tokens: plain HF {batch * new / hf_gen:,.0f} tokens/s; "
        f"hooked (workbench.generate) {written / ours:,.0f} tokens/s ({written} tokens written)"
    )

    texts_n = 128 if quick else 256
    start = time.perf_counter()
    corpus = torch.randint(
        100, 50000, (texts_n, 128), generator=torch.Generator().manual_seed(1)
    ).tolist()
    cache = wb.cache_tokens(
        model,
        corpus,
        "resid_post",
        "mean_after_first",
        batch_size=32,
        store_device=DEVICE,
        progress=False,
    )
    cached = time.perf_counter() - start
    labels = [i % 2 for i in range(texts_n)]
    start = time.perf_counter()
    sweep = train_probes(
        cache,
        labels,
        l2=[1e-2, 1e-1],
        meta={"model": MODEL, "positions": "mean_after_first"},
        n_boot=200,
    )
    synchronize()
    trained = time.perf_counter() - start
    results.update(
        probe_caching_seconds=cached, probe_training_seconds=trained, probe_hooks=len(sweep.probes)
    )
    print(
        f"probes: {len(sweep.probes)} layers on {texts_n} texts x 128 tokens: caching {cached:.1f} s, "
        f"training (2 L2 values, choice on validation) {trained:.1f} s"
    )
    if DEVICE == "cuda":
        results["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print(f"peak GPU memory: {results['peak_gpu_memory_gib']:.1f} GiB")

    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return results


def real_phi2() -> dict | None:
    """Phi-2 itself, when its weights are already in the Hugging Face cache (never downloaded here)."""
    import workbench as wb
    from workbench.core.errors import ModelUnavailableError

    try:
        model = wb.load("phi-2", device="cuda", dtype="bfloat16")
    except ModelUnavailableError as error:
        print(f"real Phi-2: not in the Hugging Face cache, skipped ({str(error)[:160]}...)")
        return None
    from transformers import AutoModelForCausalLM

    reference = (
        AutoModelForCausalLM.from_pretrained(
            model.info.path, dtype=torch.bfloat16, attn_implementation="eager"
        )
        .cuda()
        .eval()
    )
    ids = model.tokenizer(
        "The quick brown fox jumps over the lazy dog", return_tensors="pt"
    ).input_ids.cuda()
    with torch.no_grad():
        diff = (
            (model.bridge(ids, return_type="logits").float() - reference(ids).logits.float())
            .abs()
            .max()
        )
    answer = wb.generate(model, "What is the capital of France?", max_new_tokens=16)[0].text
    print(
        f"real Phi-2: max |bridge - HF| logit {float(diff):.3g}; 'What is the capital of France?' -> {answer!r}"
    )
    return {"max_logit_difference": float(diff), "answer": answer}


def sae_training(quick: bool) -> dict:
    """Training tokens/s of a TopK SAE (d 576 as SmolLM2, width 4608, k 32, 4096 tokens a step) from
    rows in memory: on DEVICE, and on the CPU in the same run for the ratio."""
    import workbench as wb

    rows = torch.randn(65_536, 576, generator=torch.Generator().manual_seed(0))
    speeds = {}
    on_device = 16_384 if DEVICE == "cpu" else 262_144 if quick else 2_097_152
    for device, tokens in ((DEVICE, on_device), ("cpu", 16_384)):
        start = time.perf_counter()
        wb.train_sae(
            rows, k=32, width=4608, tokens=tokens, batch_size=4096, progress=False, device=device
        )
        synchronize()
        speeds[device] = round(tokens / (time.perf_counter() - start), 1)
    result = {"tokens_per_second": speeds}
    if DEVICE != "cpu":
        result["ratio_to_cpu"] = round(speeds[DEVICE] / speeds["cpu"], 1)
    print(f"SAE training: {result}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and tokens")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench" / "gpu.json"))
    parser.add_argument(
        "--dry-run-cpu", action="store_true", help="every step on tiny-phi on the CPU (a self-test)"
    )
    args = parser.parse_args()
    if args.dry_run_cpu:
        global DEVICE, MODEL
        DEVICE, MODEL = "cpu", "tiny-phi"
        results = phi2_shape(quick=True)
        results["sae_training"] = sae_training(quick=True)
        print(json.dumps(results, default=str))
        return 0
    if not torch.cuda.is_available():
        print(
            "gpu-check: no GPU here (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}); nothing to check. On a GPU machine install a CUDA torch "
            "(see README, 'Two commands') and run make gpu-check."
        )
        return 0
    start = time.perf_counter()
    print(
        f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    )
    results = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "tests": gpu_tests(),
        "phi2_shape": phi2_shape(args.quick),
        "sae_training": sae_training(args.quick),
        "real_phi2": real_phi2(),
    }
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(f"gpu-check finished in {results['seconds']} s")
    save_json(args.out, results)
    print(json.dumps(results, default=str))
    return 1 if results["tests"]["exit"] not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())
