#!/usr/bin/env python3
"""transformers peer of ``examples/encoder_bench.rs``: SD3's prompt encoding, timed.

Three modes, one per run:

``--write FOLDER --config tiny|mid|sd35 [--dtype f32|bf16]``
    Writes a diffusers-layout SD3 text-encoder folder with random weights: ``text_encoder/``
    (CLIP-L), ``text_encoder_2/`` (CLIP-G), ``text_encoder_3/`` (T5 v1.1), each a
    ``config.json`` and safetensors shards, and the tokenizers ``tokenizer/``,
    ``tokenizer_2/``, ``tokenizer_3/tokenizer.json``, copied from the committed fixtures
    (tests/fixtures/clip, tests/fixtures/t5: tiny vocabularies of 634 and 106 tokens, which
    every configuration's embedding covers). The configurations:

    * ``tiny``: the fixtures' sizes (scripts/clip_fixture.py, scripts/t5_fixture.py): CLIP-L-like
      width 12, CLIP-G-like width 16, 2 layers each; T5 d_model 32, 2 blocks;
    * ``mid``: CLIP-L's real text tower (12 layers, width 768, 12 heads, MLP 3072, QuickGELU,
      projection 768); CLIP-G's width (1280, 20 heads, MLP 5120, GELU, projection 1280) with 8
      of its 32 layers; T5 v1.1 with d_model 2048, 6 blocks, 32 heads of 64, d_ff 5120;
    * ``sd35``: the real CLIP-L, CLIP-G (32 layers) and T5-XXL (24 blocks, d_model 4096, 64
      heads of 64, d_ff 10240), about 11 GB in bf16: write it under /tmp, never in the repo.

    The models are built on torch's meta device (shapes only) and every tensor is drawn,
    cast to ``--dtype`` and written shard by shard (2 GiB shards), so writing sd35 holds one
    shard, never an f32 copy of T5-XXL. The draws are seeded: the same command writes the
    same files. Weights: matrices N(0, 1/fan_in), embeddings and T5's relative-position bias
    N(0, 1), LayerNorm/RMSNorm gains 1 + 0.1·N(0, 1), biases 0.02·N(0, 1).

``--write-prompts FILE --prompts N``
    Writes N prompts, one per line, drawn from fixed word lists with a seeded generator:
    short and long (some longer than CLIP's 77 and T5's 128 tokens), capitals, punctuation,
    digits and non-ASCII. Both benches read this file (``--prompt-file``).

``--bench FOLDER --prompt-file FILE [--prompts N] --batch-size B --max-sequence-length L``
    Loads the three encoders with transformers (``--dtype``, default f32) and times diffusers'
    own ``StableDiffusion3Pipeline.encode_prompt`` (a pipeline of the text encoders and
    tokenizers only, no transformer or VAE; classifier-free guidance off, one image per
    prompt) over the first N prompts of the file in passes of B, as flow-rl's
    ``PromptEncoder::encode`` does: one untimed warm-up pass of the first B prompts, then
    ``--repeats`` timed runs over all N (the passes' outputs concatenated as flow-rl's are).
    Prints prompts/s, load time and the process's peak resident set
    (``getrusage(RUSAGE_SELF).ru_maxrss``) after the imports, after loading and at the end,
    then one JSON line (prefix ``json: ``). ``--save FILE`` writes the last run's ``context``
    [N, 77 + L, t5_width] and ``pooled`` [N, 2048-like] in f32, which
    ``encoder_bench --compare FILE`` checks flow-rl's output against.

Times are wall-clock on the CPU with ``--threads`` intra-op threads (default 2, the project
machines' cores). Peak RSS is the whole process's, so one bench per process. Other work on the
machine makes times noisy: the JSON line carries the 1-minute load average before and after.

Use (after scripts/peer_venv.sh)::

    PY=/work/peer-venv/bin/python
    $PY scripts/encoder_peer_bench.py --write /tmp/enc-mid --config mid
    $PY scripts/encoder_peer_bench.py --write-prompts /tmp/enc-prompts.txt --prompts 32
    $PY scripts/encoder_peer_bench.py --bench /tmp/enc-mid --prompt-file /tmp/enc-prompts.txt \\
        --prompts 32 --batch-size 8 --max-sequence-length 256 --threads 2 --save /tmp/enc-mid.py.safetensors
    RAYON_NUM_THREADS=2 target/release/examples/encoder_bench --model /tmp/enc-mid \\
        --prompt-file /tmp/enc-prompts.txt --prompts 32 --batch-size 8 --max-sequence-length 256 \\
        --precision f32 --compare /tmp/enc-mid.py.safetensors

docs/benchmarks.md ("Prompt encoding against transformers, one run") has the figures.
"""

import argparse
import json
import math
import os
import pathlib
import platform
import random
import resource
import shutil
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
CLIP_LENGTH = 77
SHARD_BYTES = 2 << 30
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
DTYPE_NAMES = {"f32": "float32", "bf16": "bfloat16"}

# The fixture tokenizers' special ids (scripts/clip_fixture.py: <|startoftext|> and
# <|endoftext|> are the last two of its 634 tokens; CLIP-G pools at the first
# <|endoftext|>, CLIP-L by the legacy "highest id" rule, eos_token_id = 2).
CLIP_BOS, CLIP_EOS = 632, 633

# name: (CLIP-L, CLIP-G, T5). CLIP: (layers, width, heads, mlp, projection, vocab);
# T5: (blocks, d_model, heads, d_kv, d_ff, vocab).
CONFIGS = {
    "tiny": ((2, 12, 2, 48, 8, 634), (2, 16, 4, 64, 12, 634), (2, 32, 4, 8, 48, 112)),
    "mid": (
        (12, 768, 12, 3072, 768, 49408),
        (8, 1280, 20, 5120, 1280, 49408),
        (6, 2048, 32, 64, 5120, 32128),
    ),
    "sd35": (
        (12, 768, 12, 3072, 768, 49408),
        (32, 1280, 20, 5120, 1280, 49408),
        (24, 4096, 64, 64, 10240, 32128),
    ),
}

SUBJECTS = [
    "a photo of a cat", "an astronaut riding a horse", "two red cubes and one blue sphere",
    "a portrait of an old man with a beard", "a bowl of fruit", "a futuristic city",
    "a lighthouse on a cliff", "three dogs playing in the snow", "a café crème on a table",
    "the Eiffel Tower", "a robot reading a book", "a field of sunflowers",
]
DETAILS = [
    "on a wooden table", "at sunset", "under neon lights in the rain", "on the moon",
    "next to an old sofa", "in a misty forest", "by the sea", "in Tōkyō at night",
    "with flying cars", "surrounded by 12 candles", "in the style of van Gogh",
]
STYLES = [
    "highly detailed", "oil painting", "cinematic photo", "4k", "studio lighting",
    "trending on artstation", "watercolour", "35mm film, f/1.8", "photorealistic",
    "soft light", "naïve art — bold colours",
]


def prompt_list(count):
    """`count` prompts from a generator seeded with 0: 0 to 3 details, 0 to 12 styles."""
    rng = random.Random(0)
    prompts = []
    for _ in range(count):
        words = [rng.choice(SUBJECTS)]
        words += rng.sample(DETAILS, rng.randint(0, 3))
        words += [", ".join(rng.choice(STYLES) for _ in range(rng.randint(0, 12)))]
        prompt = " ".join(word for word in words if word)
        if rng.random() < 0.25:
            prompt = prompt.upper()
        if rng.random() < 0.25:
            prompt += "!"
        prompts.append(prompt)
    return prompts


def read_prompts(path, count):
    """The first `count` prompts of `path`, read as flow-rl's `read_prompt_list` reads it:
    a JSON array of strings for `.json`, else one per line with blank lines skipped."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".json"):
        prompts = json.loads(text)
    else:
        prompts = [line for line in text.splitlines() if line.strip()]
    if count is None:
        return prompts
    if count > len(prompts):
        sys.exit(f"--prompts {count}: {path} has only {len(prompts)} prompts")
    return prompts[:count]


def clip_config(sizes, legacy_pooling, hidden_act, dtype):
    from transformers import CLIPTextConfig

    layers, width, heads, mlp, projection, vocab = sizes
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=mlp,
        projection_dim=projection,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=CLIP_LENGTH,
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        bos_token_id=CLIP_BOS,
        eos_token_id=2 if legacy_pooling else CLIP_EOS,
        pad_token_id=1,
        architectures=["CLIPTextModelWithProjection"],
        dtype=DTYPE_NAMES[dtype],
    )


def t5_config(sizes, dtype):
    from transformers import T5Config

    blocks, d_model, heads, d_kv, d_ff, vocab = sizes
    return T5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=blocks,
        num_heads=heads,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        dropout_rate=0.0,
        tie_word_embeddings=False,
        is_encoder_decoder=False,
        use_cache=False,
        architectures=["T5EncoderModel"],
        dtype=DTYPE_NAMES[dtype],
    )


def random_tensor(name, shape, generator):
    """One parameter's random value in f32 (see the module docs for the scales)."""
    noise = torch.randn(shape, generator=generator)
    if "layer_norm" in name:
        return 1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
    if "embed" in name or name == "shared.weight" or "relative_attention_bias" in name:
        return noise
    if name.endswith("bias"):
        return 0.02 * noise
    return noise / math.sqrt(shape[-1])


def write_encoder(folder, model_class, config, dtype, seed):
    """Writes `config.json` and the shards of a random `model_class(config)`, drawing one
    tensor at a time; returns the parameter count."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config.to_json_file(folder / "config.json")
    with torch.device("meta"):
        model = model_class(config)
    # named_parameters lists a tied parameter once (T5's `shared` and `encoder.embed_tokens`),
    # under the name save_pretrained keeps.
    shapes = [(name, tuple(param.shape)) for name, param in model.named_parameters()]
    del model
    generator = torch.Generator().manual_seed(seed)
    element = torch.tensor([], dtype=DTYPES[dtype]).element_size()
    shards, current, current_bytes = [], {}, 0
    total_bytes, parameters = 0, 0

    def flush():
        nonlocal current, current_bytes
        shards.append(current)
        index = len(shards)
        save_file(current, folder / f"shard-{index:05d}.safetensors", metadata={"format": "pt"})
        current, current_bytes = {}, 0

    for name, shape in shapes:
        size = math.prod(shape) * element
        if current and current_bytes + size > SHARD_BYTES:
            flush()
        current[name] = random_tensor(name, shape, generator).to(DTYPES[dtype]).contiguous()
        current_bytes += size
        total_bytes += size
        parameters += math.prod(shape)
    flush()
    # The diffusers names: model.safetensors alone, else model-0000i-of-0000n with an index.
    count = len(shards)
    weight_map = {}
    for index, shard in enumerate(shards, start=1):
        source = folder / f"shard-{index:05d}.safetensors"
        target = "model.safetensors" if count == 1 else f"model-{index:05d}-of-{count:05d}.safetensors"
        source.rename(folder / target)
        weight_map.update({name: target for name in shard})
    if count > 1:
        (folder / "model.safetensors.index.json").write_text(
            json.dumps(
                {"metadata": {"total_size": total_bytes, "total_parameters": parameters},
                 "weight_map": weight_map},
                indent=1,
            )
            + "\n"
        )
    return parameters


def copy_clip_tokenizer(source, target):
    """The fixture tokenizer with SD3.5's `model_max_length` of 77 (the fixtures leave
    transformers' "no limit", which the pipeline would take as its CLIP length)."""
    shutil.copytree(source, target, dirs_exist_ok=True)
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["model_max_length"] = CLIP_LENGTH
    config_path.write_text(json.dumps(config, indent=1) + "\n")


def write_folder(folder, config_name, dtype):
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    folder = pathlib.Path(folder)
    if (folder / "text_encoder_3").exists():
        sys.exit(f"{folder} already holds text_encoder_3/: pick an empty folder")
    clip_l, clip_g, t5 = CONFIGS[config_name]
    started = time.perf_counter()
    counts = {
        "text_encoder": write_encoder(
            folder / "text_encoder", CLIPTextModelWithProjection,
            clip_config(clip_l, True, "quick_gelu", dtype), dtype, seed=1,
        ),
        "text_encoder_2": write_encoder(
            folder / "text_encoder_2", CLIPTextModelWithProjection,
            clip_config(clip_g, False, "gelu", dtype), dtype, seed=2,
        ),
        "text_encoder_3": write_encoder(
            folder / "text_encoder_3", T5EncoderModel, t5_config(t5, dtype), dtype, seed=3
        ),
    }
    copy_clip_tokenizer(FIXTURES / "clip/clip_l/tokenizer", folder / "tokenizer")
    copy_clip_tokenizer(FIXTURES / "clip/clip_g/tokenizer_2", folder / "tokenizer_2")
    (folder / "tokenizer_3").mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "t5/tokenizer.json", folder / "tokenizer_3/tokenizer.json")
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        f"wrote {folder} ({config_name}, {dtype}): "
        + ", ".join(f"{name} {count:,} parameters" for name, count in counts.items())
        + f"; {size / 1e9:.2f} GB in {time.perf_counter() - started:.1f} s, peak RSS {gib(peak):.2f} GiB"
    )


def load_pipeline(folder, dtype):
    """diffusers' SD3 pipeline of the folder's text encoders and tokenizers alone."""
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    folder = pathlib.Path(folder)

    def load(model_class, name):
        model, info = model_class.from_pretrained(
            folder / name, dtype=DTYPES[dtype], output_loading_info=True
        )
        # A wrong key name would leave a parameter at transformers' init: refuse that.
        if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
            sys.exit(f"{folder / name}: {info}")
        return model.eval()

    pipeline = StableDiffusion3Pipeline(
        transformer=None,
        scheduler=None,
        vae=None,
        text_encoder=load(CLIPTextModelWithProjection, "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        text_encoder_2=load(CLIPTextModelWithProjection, "text_encoder_2"),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
        text_encoder_3=load(T5EncoderModel, "text_encoder_3"),
        tokenizer_3=T5TokenizerFast(
            tokenizer_file=str(folder / "tokenizer_3/tokenizer.json"), extra_ids=0
        ),
    )
    assert pipeline.tokenizer_max_length == CLIP_LENGTH, pipeline.tokenizer_max_length
    return pipeline


def encode(pipeline, prompts, batch_size, max_sequence_length):
    """`encode_prompt` in passes of `batch_size`, concatenated: (context, pooled)."""
    contexts, pooled = [], []
    for start in range(0, len(prompts), batch_size):
        context, _, pooled_chunk, _ = pipeline.encode_prompt(
            prompt=prompts[start : start + batch_size],
            prompt_2=None,
            prompt_3=None,
            device=torch.device("cpu"),
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
        )
        contexts.append(context)
        pooled.append(pooled_chunk)
    return torch.cat(contexts), torch.cat(pooled)


def bench(args):
    import diffusers
    import transformers
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # The pipeline warns about every prompt cut at 77 or L tokens, which long prompts are.
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    load_before = os.getloadavg()[0]
    prompts = read_prompts(args.prompt_file, args.prompts)

    started = time.perf_counter()
    pipeline = load_pipeline(args.bench, args.dtype)
    load_seconds = time.perf_counter() - started
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    with torch.inference_mode():
        encode(pipeline, prompts[: args.batch_size], args.batch_size, args.max_sequence_length)
        started = time.perf_counter()
        cpu_started = time.process_time()
        for _ in range(args.repeats):
            context, pooled = encode(
                pipeline, prompts, args.batch_size, args.max_sequence_length
            )
        seconds = (time.perf_counter() - started) / args.repeats
        cpu_seconds = (time.process_time() - cpu_started) / args.repeats
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    if args.save:
        from safetensors.torch import save_file

        save_file(
            {"context": context.float().contiguous(), "pooled": pooled.float().contiguous()},
            args.save,
        )
    rate = len(prompts) / seconds
    print(
        f"transformers {transformers.__version__}, diffusers {diffusers.__version__}, "
        f"torch {torch.__version__}, {args.threads} threads, {args.dtype}: {args.bench}"
    )
    print(
        f"loaded in {load_seconds:.1f} s; encoded {len(prompts)} prompts in passes of "
        f"{args.batch_size}, max_sequence_length {args.max_sequence_length}: {seconds:.2f} s "
        f"({rate:.2f} prompts/s), context {tuple(context.shape)}, pooled {tuple(pooled.shape)}"
    )
    print(
        f"peak RSS {gib(rss_end):.2f} GiB (after imports {gib(rss_imports):.2f} GiB, after "
        f"loading {gib(rss_loaded):.2f} GiB)"
    )
    record = {
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "max_sequence_length": args.max_sequence_length,
        "dtype": args.dtype,
        "threads": args.threads,
        "load_seconds": load_seconds,
        "encode_seconds": seconds,
        "encode_cpu_seconds": cpu_seconds,
        "prompts_per_second": rate,
        "peak_rss_gib": gib(rss_end),
        "rss_after_imports_gib": gib(rss_imports),
        "rss_after_loading_gib": gib(rss_loaded),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }
    print("json: " + json.dumps(record))


def gib(bytes_):
    return bytes_ / (1 << 30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="FOLDER", help="write a random-weight encoder folder")
    mode.add_argument("--write-prompts", metavar="FILE", help="write --prompts prompts")
    mode.add_argument("--bench", metavar="FOLDER", help="time encode_prompt on a folder")
    parser.add_argument("--config", choices=CONFIGS, default="tiny")
    parser.add_argument("--dtype", choices=DTYPES, default="f32")
    parser.add_argument("--prompt-file")
    parser.add_argument("--prompts", type=int, help="how many (default: the whole file)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-sequence-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs over all prompts")
    parser.add_argument("--save", metavar="FILE", help="write context and pooled (f32)")
    args = parser.parse_args()
    if args.write:
        write_folder(args.write, args.config, args.dtype)
    elif args.write_prompts:
        if not args.prompts or args.prompts < 1:
            parser.error("--write-prompts needs --prompts N (N ≥ 1)")
        pathlib.Path(args.write_prompts).write_text("\n".join(prompt_list(args.prompts)) + "\n")
        print(f"wrote {args.prompts} prompts to {args.write_prompts}")
    else:
        if not args.prompt_file:
            parser.error("--bench needs --prompt-file")
        if args.batch_size < 1 or args.repeats < 1 or (args.prompts is not None and args.prompts < 1):
            parser.error("--batch-size, --repeats and --prompts must be at least 1")
        bench(args)


if __name__ == "__main__":
    main()
