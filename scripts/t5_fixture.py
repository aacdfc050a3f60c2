"""Golden values for tests/t5.rs: a tiny random T5 v1.1 encoder and a small T5-style tokenizer.

Run with the peer venv (scripts/peer_venv.sh): `/work/peer-venv/bin/python scripts/t5_fixture.py`.
Writes tests/fixtures/t5/:
- tokenizer.json: a Unigram tokenizer trained here with T5's pipeline (NFKC, collapsed
  spaces, Metaspace, `</s>` appended), ids <pad>=0, </s>=1, <unk>=2 as in T5;
- text_encoder_3/: the encoder as diffusers stores it (`T5EncoderModel.save_pretrained`,
  sharded into several files with an index);
- t5_single.safetensors: the same weights in one file with both embedding names
  (`shared.weight` and `encoder.embed_tokens.weight`), as Stability AI's single files;
- expected.safetensors: `ids` [P, S] (i64) from `T5TokenizerFast` called as diffusers'
  `_get_t5_prompt_embeds` calls it, and `hidden` [P, S, d_model] (f32), the encoder's last
  hidden state for those ids without an attention mask (diffusers passes none);
  `hidden_masked`, the same with the tokenizer's attention mask; `hidden_bf16`, the
  unmasked state of the model cast to bf16 (stored as f32);
- expected.json: the prompts and max_sequence_length.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import T5Config, T5EncoderModel, T5TokenizerFast

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "t5"
MAX_SEQUENCE_LENGTH = 12
PROMPTS = [
    "a photo of a cat",
    "",
    "An astronaut riding a horse on the moon, highly detailed, 4k, trending on artstation",
    "Café crème brûlée über naïve façade — ünïcödé 日本語 🚀",
    "  two   spaces   between   words  ",
    "A RED CAR",
    "zebra xylophone quiz",
    "the quick brown fox jumps over the lazy dog",
]
CORPUS = [
    "a photo of a cat sitting on a red car",
    "an astronaut riding a horse on the moon",
    "highly detailed digital painting trending on artstation",
    "the quick brown fox jumps over the lazy dog",
    "a painting of a tree in the style of van gogh",
    "portrait of a woman with blue eyes, soft light",
    "a city at night with neon lights and rain",
    "Café crème brûlée über naïve façade",
    "two words between spaces in a sentence",
] * 20


def train_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=150,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    eos = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    return tokenizer


def randomise(model: T5EncoderModel) -> None:
    """Every parameter random, norms around 1 so that they matter without blowing up."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "layer_norm" in name:
                parameter.copy_(1.0 + 0.3 * noise)
            elif "relative_attention_bias" in name:
                parameter.copy_(noise)
            else:
                fan_in = parameter.shape[-1]
                parameter.copy_(noise * (1.0 / fan_in) ** 0.5 * (4.0 if "shared" in name else 1.0))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    trained = train_tokenizer()
    tokenizer_path = OUT / "tokenizer.json"
    trained.save(str(tokenizer_path))
    tokenizer = T5TokenizerFast(tokenizer_file=str(tokenizer_path), extra_ids=0)
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1, "T5's special ids"

    config = T5Config(
        vocab_size=len(tokenizer) + 6,  # T5 pads its embedding past the vocabulary too
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        dropout_rate=0.0,
        tie_word_embeddings=False,
        is_encoder_decoder=False,
    )
    torch.manual_seed(0)
    model = T5EncoderModel(config).eval()
    randomise(model)

    encoder_folder = OUT / "text_encoder_3"
    model.save_pretrained(encoder_folder, max_shard_size="60KB", safe_serialization=True)
    shards = sorted(encoder_folder.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (encoder_folder / "model.safetensors.index.json").exists()

    state = {name: tensor.contiguous().clone() for name, tensor in model.state_dict().items()}
    state["shared.weight"] = model.shared.weight.detach().clone()
    state["encoder.embed_tokens.weight"] = model.shared.weight.detach().clone()
    save_file(state, str(OUT / "t5_single.safetensors"))

    encoded = tokenizer(
        PROMPTS,
        padding="max_length",
        max_length=MAX_SEQUENCE_LENGTH,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    ids = encoded.input_ids
    with torch.no_grad():
        hidden = model(ids)[0]
        hidden_masked = model(ids, attention_mask=encoded.attention_mask)[0]
        hidden_bf16 = model.to(torch.bfloat16)(ids)[0]
    save_file(
        {
            "ids": ids.to(torch.int64).contiguous(),
            "hidden": hidden.to(torch.float32).contiguous(),
            "hidden_masked": hidden_masked.to(torch.float32).contiguous(),
            "hidden_bf16": hidden_bf16.to(torch.float32).contiguous(),
        },
        str(OUT / "expected.safetensors"),
    )
    (OUT / "expected.json").write_text(
        json.dumps(
            {"prompts": PROMPTS, "max_sequence_length": MAX_SEQUENCE_LENGTH, "config": config.to_diff_dict()},
            indent=1,
            ensure_ascii=False,
        )
        + "\n"
    )
    print("ids", ids.tolist())
    print("hidden", hidden.shape, hidden.abs().max().item())
    print("bf16 vs f32", ((hidden_bf16.float() - hidden).abs().max() / hidden.abs().max()).item())


if __name__ == "__main__":
    main()
