"""Every mission path at Phi-2's size (phi-2-shape: 2.78B parameters, random weights), on this machine.

    python bench/phi2_shape.py [--dtype bfloat16] [--steps load,generate,cache,patch,probes,audit,dashboard]

For each step it prints the wall time, the process's peak RSS during the step (sampled every
10 ms) and the bytes `workbench.model.memory` predicted for it, so the estimates are checked at the
size that matters. Steps:

- load: the model in the requested dtype (weights drawn in place);
- generate: 16 new tokens, without and with a steering hook;
- cache: 64 texts x 128 tokens, resid_post at all 32 layers, "mean" and "all" positions,
  streamed to disk; then one hook read back lazily; and an in-memory request that cannot fit,
  refused before any forward pass with its estimate;
- patch: IOI-style patching on one pair: exact attn_head (32 x 32 heads) and attribution
  patching, with the time ratio (`--patch-heads N` patches only the first N heads exactly and
  extrapolates, for slow machines; the output says so);
- probes: logistic probes on all 32 layers of the cached mean activations;
- audit: a toxicity audit of 8 prompts (baseline and one steering coefficient) and a
  CrowS-Pairs audit of 64 pairs;
- dashboard: the attention page through Streamlit's AppTest.

Writes results/bench/phi2_shape_<dtype>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss, save_json  # noqa: E402

import workbench as wb  # noqa: E402
from workbench.model import memory  # noqa: E402

STEPS = ("load", "generate", "cache", "patch", "probes", "audit", "dashboard")
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
ROWS: list[dict] = []


@contextmanager
def step(name: str, predicted: int | None = None, note: str = ""):
    """Time a step and sample the process's RSS every 10 ms; record a row. Memory freed by earlier
    steps is first handed back to the OS (glibc's malloc_trim), so each peak is the step's own."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the peak may then include memory earlier steps freed
        pass
    start = time.perf_counter()
    extra: dict = {}
    with peak_rss(0.01) as rss:
        yield extra
    seconds, peak = time.perf_counter() - start, rss["peak"]
    row = {
        "step": name,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(peak / 2**30, 2),
        "predicted_gib": round(predicted / 2**30, 2) if predicted else None,
        "rss_over_predicted": round(peak / predicted, 2) if predicted else None,
        "note": note,
        **extra,
    }
    ROWS.append(row)
    print(
        f"{name:34s} {row['seconds']:8.1f} s  peak RSS {row['peak_rss_gib']:6.2f} GiB  predicted "
        f"{row['predicted_gib'] if predicted else '-':>6} GiB  {note} "
        + " ".join(f"{k}={v}" for k, v in extra.items()),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="phi-2-shape")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument(
        "--patch-heads", type=int, default=None, help="exact-patch only this many heads"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    steps = args.steps.split(",")
    shape = memory.model_shape(args.model)
    weights = memory.load_estimate(shape, args.dtype).bytes
    print(
        f"{args.model}: {shape.n_params:,} parameters; {args.dtype}; {torch.get_num_threads()} threads"
    )
    work = Path(tempfile.mkdtemp(prefix="wb-phi2-"))

    with step("load", weights):
        model = wb.load(args.model, device="cpu", dtype=args.dtype)

    if "generate" in steps:
        from workbench.interp.steering import mean_difference_vector, read_pairs, steer

        forward = memory.forward_estimate(shape, args.dtype, 1, 32).bytes
        with step("generate 16 tokens", weights + forward):
            wb.generate(model, "What is the capital of France?", max_new_tokens=16)
        vector = mean_difference_vector(
            model, read_pairs(ROOT / "probes" / "polite_vs_rude_pairs.jsonl"), 16
        )
        with step("generate 16 tokens, steered", weights + forward):
            with steer(model, vector, 4.0):
                wb.generate(model, "What is the capital of France?", max_new_tokens=16)

    cache = None
    if "cache" in steps or "probes" in steps:
        corpus = torch.randint(
            100, 50000, (64, 128), generator=torch.Generator().manual_seed(1)
        ).tolist()
        forward = memory.forward_estimate(shape, args.dtype, 8, 128).bytes
        for positions in ("mean", "all"):
            per_shard = memory.cache_estimate(
                shape, args.dtype, 32, 128, [shape.d_model] * shape.n_layers, positions
            ).bytes  # the rows a shard buffers before writing
            with step(
                f"cache 64x128 resid_post, {positions}", weights + forward + per_shard
            ) as extra:
                result = wb.cache_tokens(
                    model,
                    corpus,
                    "resid_post",
                    positions,
                    batch_size=8,
                    out=work / f"cache-{positions}",
                    progress=False,
                )
                extra["bytes_on_disk"] = sum(
                    f.stat().st_size for f in (work / f"cache-{positions}").rglob("*")
                )
            if positions == "mean":
                cache = result
        with step("read one hook back lazily", weights):
            opened = wb.open_cache(work / "cache-all")
            values = opened["blocks.16.hook_resid_post"][:]
            assert values.shape[0] == 64
        huge = memory.cache_estimate(
            shape, args.dtype, 200_000, 2048, [shape.d_model] * shape.n_layers, "all"
        )
        with step(
            "in-memory cache that cannot fit", weights, note="refused before any forward"
        ) as extra:
            try:
                memory.check_fits(huge, "cpu", "stream it to disk: --out DIR")
                extra["refused"] = False
            except wb.CacheTooLargeError as error:
                extra["refused"] = True
                print(f"    refused: {error}")

    if "patch" in steps:
        from workbench.interp.attribution import attribution_patch
        from workbench.interp.patching import activation_patch, prepare, run_patches

        task = prepare(model, CLEAN, CORRUPT, " Mary", " John")
        seq = task.corrupt_ids.shape[1]
        batch = memory.largest_batch(
            lambda b: memory.forward_estimate(shape, args.dtype, b, seq), 32, "cpu", "patching", ""
        )
        with step(
            "attribution patching (all heads)",
            weights + memory.backward_estimate(shape, args.dtype, 1, seq).bytes,
        ):
            attribution = attribution_patch(
                model, CLEAN, CORRUPT, " Mary", " John", kinds=("attn_head",)
            )
        attribution_seconds = ROWS[-1]["seconds"]
        heads = args.patch_heads
        predicted = weights + memory.forward_estimate(shape, args.dtype, batch, seq).bytes
        if heads is None:
            with step(f"exact attn_head patching (32 x 32), batch {batch}", predicted):
                exact = activation_patch(model, CLEAN, CORRUPT, " Mary", " John", kind="attn_head")
            exact_seconds = ROWS[-1]["seconds"]
            r = torch.corrcoef(
                torch.stack([exact.values.flatten(), attribution["attn_head"].values.flatten()])
            )[0, 1]
            note = f"Pearson r exact vs attribution {float(r):.3f}"
        else:
            patches = [
                (
                    f"blocks.{h // shape.n_heads}.attn.hook_z",
                    (slice(None), slice(None), h % shape.n_heads),
                )
                for h in range(heads)
            ]
            with step(f"exact patching of {heads} heads, batch {batch}", predicted):
                run_patches(model, task, patches, max_batch=batch)
            exact_seconds = ROWS[-1]["seconds"] * shape.n_layers * shape.n_heads / heads
            note = f"exact time extrapolated from {heads} of {shape.n_layers * shape.n_heads} heads"
        ratio = exact_seconds / attribution_seconds
        ROWS.append({"step": "exact / attribution time", "ratio": round(ratio, 1), "note": note})
        print(f"exact / attribution time at 32 x 32 heads: {ratio:.1f}x ({note})")

    if "probes" in steps and cache is not None:
        from workbench.interp.probes import train_probes

        labels = [i % 2 for i in range(64)]
        with step("probes on 32 layers", weights):
            train_probes(
                cache,
                labels,
                l2=[1e-2, 1e-1],
                meta={"model": args.model, "positions": "mean"},
                n_boot=200,
            )

    if "audit" in steps or "dashboard" in steps:
        del model  # the audits (run through the CLI) and the dashboard page load their own copy
        model = None
    if "audit" in steps:
        from workbench.cli import main as cli

        prompts = work / "prompts.txt"
        prompts.write_text(
            "".join(
                line + "\n"
                for line in (ROOT / "workbench" / "data" / "audit_prompts.txt")
                .read_text()
                .splitlines()[:8]
            )
        )
        forward = memory.forward_estimate(shape, args.dtype, 8, 64).bytes
        with step(
            "toxicity audit, 8 prompts x 2 conditions",
            weights + forward,
            note="its own load included; --no-capability",
        ):
            assert (
                cli(
                    [
                        "audit",
                        "toxicity",
                        "--model",
                        args.model,
                        "--dtype",
                        args.dtype,
                        "--prompts",
                        str(prompts),
                        "--out",
                        str(work / "tox"),
                        "--scorers",
                        "profanity-check",
                        "--max-new-tokens",
                        "16",
                        "--steer",
                        str(ROOT / "probes" / "polite_vs_rude_pairs.jsonl"),
                        "--layer",
                        "16",
                        "--alpha",
                        "4",
                        "--no-capability",
                    ]
                )
                == 0
            )
        crows = ROOT.parent / "shared" / "data" / "crows_pairs" / "crows_pairs_anonymized.csv"
        if crows.exists():
            pairs = work / "crows.csv"
            pairs.write_text("\n".join(crows.read_text(encoding="utf-8").splitlines()[:65]) + "\n")
            with step(
                "CrowS-Pairs audit, 64 pairs",
                weights + memory.forward_estimate(shape, args.dtype, 16, 40).bytes,
                note="its own load included",
            ):
                assert (
                    cli(
                        [
                            "audit",
                            "bias",
                            "--model",
                            args.model,
                            "--dtype",
                            args.dtype,
                            "--pairs",
                            str(pairs),
                            "--out",
                            str(work / "bias"),
                        ]
                    )
                    == 0
                )

    if "dashboard" in steps:
        from streamlit.testing.v1 import AppTest

        os.environ.update(
            WORKBENCH_DASHBOARD_MODEL=args.model, WORKBENCH_RESULTS=str(work / "results")
        )
        (work / "results").mkdir(exist_ok=True)
        # The dashboard loads with the device's default dtype (float32 on a CPU), not --dtype.
        page_dtype = "float32" if not torch.cuda.is_available() else args.dtype
        # The page scores heads on 8 repeated random sequences of 2 x 40 + 1 tokens: one forward, and
        # every layer's attention pattern cached, then stacked (two copies).
        tokens = 2 * 40 + 1
        patterns = (
            shape.n_layers * 8 * shape.n_heads * tokens * tokens * memory.itemsize(page_dtype)
        )
        dashboard_bytes = (
            memory.load_estimate(shape, page_dtype).bytes
            + memory.forward_estimate(shape, page_dtype, 8, tokens).bytes
            + 2 * patterns
        )
        with step(
            "dashboard attention page (AppTest)",
            dashboard_bytes,
            note="the page loads its own copy, in the default dtype",
        ):
            app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=1800).run()
            app.switch_page("workbench/dashboard/views/attention.py").run()
            assert not app.exception and not app.error, (
                app.exception,
                [e.value for e in app.error],
            )
            extra_charts = len(app.get("plotly_chart"))
            assert extra_charts == 3, extra_charts
    shutil.rmtree(work, ignore_errors=True)
    out = args.out or str(ROOT / "results" / "bench" / f"phi2_shape_{args.dtype}.json")
    save_json(
        out,
        {
            "model": args.model,
            "dtype": args.dtype,
            "n_params": shape.n_params,
            "threads": torch.get_num_threads(),
            "rows": ROWS,
        },
    )
    print(json.dumps(ROWS, indent=1))


if __name__ == "__main__":
    main()
