"""Golden fixtures for flow-rl's CLIP text encoders (tests/clip.rs).

Builds two tiny CLIP text encoders with transformers' `CLIPTextModelWithProjection`, every
parameter drawn at random: one like OpenAI CLIP-L (quick_gelu, padded with <|endoftext|>, the
legacy `eos_token_id = 2` pooling rule) and one like OpenCLIP bigG (exact gelu, padded with "!",
the `eos_token_id` pooling rule). Each gets a tiny byte-level BPE vocabulary trained here on a
small corpus, in CLIP's layout (256 byte symbols, the same with `</w>`, merges, then
<|startoftext|> and <|endoftext|> last). Writes, under `tests/fixtures/clip/`:

- `clip_l/` and `clip_g/`: diffusers folders (`text_encoder/` unsharded, `text_encoder_2/`
  sharded with `model.safetensors.index.json`; `tokenizer/`, `tokenizer_2/` with vocab.json,
  merges.txt, tokenizer.json and the tokenizer_config.json naming the pad token), and
  Stability AI's single-file naming (`text_encoders/clip_l.safetensors`: transformers' keys
  unprefixed, as in SD3's `text_encoders/` folder; `clip_g` keys under
  `text_encoders.clip_g.transformer.`, as in the all-in-one `sd3_medium_incl_clips.safetensors`);
- `expected_{l,g}.safetensors`: the token ids of `prompts.json` (padded to 77 as diffusers'
  SD3 pipeline does) and the outputs: every hidden state, the last hidden state, the pooled
  and the projected pooled output, all f32.

Run: /work/peer-venv/bin/python scripts/clip_fixture.py
"""

import collections
import json
import pathlib
import re

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "clip"
MAX_LENGTH = 77
MERGES = 120

CORPUS = """
a photo of a cat sitting on a red sofa, highly detailed, studio lighting.
an astronaut riding a horse on the moon; photorealistic painting of mountains at sunset.
the quick brown fox jumps over the lazy dog. a portrait of an old man with a beard.
a bowl of fruit on a wooden table, oil painting, trending on artstation, 4k, 8k.
a futuristic city with flying cars, neon lights, rain, night, cinematic photo.
"""

PROMPTS = [
    "a photo of a cat",
    "",
    "A RED Car, parked!! next to the   old\tsofa\n",
    "über café naïve — 東京 🚀 ok",
    "don't stop: it's 2024, we'll see 3.14159 cats",
    "a futuristic city with flying cars, neon lights, rain, night, cinematic photo",
    " ".join(["a portrait of an old man with a beard, oil painting"] * 8),
    "astronaut riding a horse on the moon",
]


def bytes_to_unicode():
    """CLIP's (GPT-2's) reversible byte → printable character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(code) for code in codes]))


def train_bpe(corpus, merges):
    """A small BPE over CLIP's word split: returns (vocab, merges) in CLIP's layout."""
    byte_chars = bytes_to_unicode()
    words = re.findall(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+", corpus.lower())
    counts = collections.Counter(
        tuple(byte_chars[b] for b in word.encode("utf-8")[:-1])
        + (byte_chars[word.encode("utf-8")[-1]] + "</w>",)
        for word in words
    )
    learned = []
    for _ in range(merges):
        pairs = collections.Counter()
        for word, count in counts.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        learned.append(best)
        merged = collections.Counter()
        for word, count in counts.items():
            symbols, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    symbols.append(word[i] + word[i + 1])
                    i += 2
                else:
                    symbols.append(word[i])
                    i += 1
            merged[tuple(symbols)] += count
        counts = merged
    symbols = list(byte_chars.values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in learned]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, learned


def write_tokenizer(folder, vocab, merges, pad_token):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    tokenizer = CLIPTokenizer(
        vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), pad_token=pad_token
    )
    # tokenizer_config.json names the pad token, as in diffusers' SD3.5 folders.
    tokenizer.save_pretrained(folder)
    return CLIPTokenizer.from_pretrained(folder)


def randomised_model(vocab_size, eos_token_id, hidden_act, seed, width, heads, layers):
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        projection_dim=width - 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=MAX_LENGTH,
        hidden_act=hidden_act,
        bos_token_id=vocab_size - 2,
        eos_token_id=eos_token_id,
        pad_token_id=1,
    )
    model = CLIPTextModelWithProjection(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
            else:
                param.copy_(0.4 * torch.randn_like(param))
    return model


def expected_outputs(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        encoder = model.text_model(input_ids=ids, output_hidden_states=True)
    tensors = {"input_ids": ids.to(torch.int64)}
    for index, hidden in enumerate(out.hidden_states):
        tensors[f"hidden_states.{index}"] = hidden.contiguous()
    tensors["last_hidden_state"] = out.last_hidden_state.contiguous()
    tensors["pooled"] = encoder.pooler_output.contiguous()
    tensors["projected"] = out.text_embeds.contiguous()
    return tensors


def state(model, prefix=""):
    return {prefix + key: value.contiguous() for key, value in model.state_dict().items()}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    vocab, merges = train_bpe(CORPUS, MERGES)
    eos = vocab["<|endoftext|>"]
    (OUT / "prompts.json").write_text(json.dumps(PROMPTS, ensure_ascii=False, indent=1))
    variants = [
        # name, folder, encoder folder, tokenizer folder, pad, pooling eos id, act, seed, width, heads
        ("l", "clip_l", "text_encoder", "tokenizer", "<|endoftext|>", 2, "quick_gelu", 1, 12, 2),
        ("g", "clip_g", "text_encoder_2", "tokenizer_2", "!", eos, "gelu", 2, 16, 4),
    ]
    for name, root, encoder_dir, tokenizer_dir, pad, eos_id, act, seed, width, heads in variants:
        root = OUT / root
        tokenizer = write_tokenizer(root / tokenizer_dir, vocab, merges, pad)
        assert tokenizer.pad_token == pad
        ids = tokenizer(
            PROMPTS, padding="max_length", max_length=MAX_LENGTH, truncation=True,
            return_tensors="pt",
        ).input_ids
        model = randomised_model(len(vocab), eos_id, act, seed, width, heads, layers=2)
        encoder = root / encoder_dir
        encoder.mkdir(parents=True, exist_ok=True)
        model.config.to_json_file(encoder / "config.json")
        weights = state(model)
        if name == "l":
            save_file(weights, encoder / "model.safetensors")
            single = weights
        else:
            keys = sorted(weights)
            shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
                      "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
            weight_map = {}
            for file, part in shards.items():
                save_file({key: weights[key] for key in part}, encoder / file)
                weight_map.update({key: file for key in part})
            (encoder / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1)
            )
            single = state(model, "text_encoders.clip_g.transformer.")
        (root / "text_encoders").mkdir(exist_ok=True)
        save_file(single, root / "text_encoders" / f"clip_{name}.safetensors")
        save_file(expected_outputs(model, ids), OUT / f"expected_{name}.safetensors")
    total = sum(path.stat().st_size for path in OUT.rglob("*") if path.is_file())
    print(f"wrote {OUT} ({total} bytes), vocab {len(vocab)}")


if __name__ == "__main__":
    main()
