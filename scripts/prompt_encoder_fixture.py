"""Golden output of diffusers' `StableDiffusion3Pipeline.encode_prompt` for tests/prompt_encoder.rs.

    /work/peer-venv/bin/python scripts/prompt_encoder_fixture.py

It reuses the tiny random encoders and tokenizers that scripts/clip_fixture.py and
scripts/t5_fixture.py committed (CLIP-L-like width 12, bigG-like width 16, T5 d_model 32, so the
two CLIP widths fit inside T5's as SD3's 768 + 1280 fit inside 4096), puts them in a diffusers
SD3 folder layout and runs the pipeline's own `encode_prompt` with classifier-free guidance off.
Writes tests/fixtures/prompt_encoder/expected.safetensors (`context` [P, 77 + S, 32], `pooled`
[P, 20]) and expected.json (the prompts and S = max_sequence_length).
"""

import json
import pathlib

import torch
from diffusers import StableDiffusion3Pipeline
from safetensors.torch import save_file
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast
from transformers.utils import logging as transformers_logging

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "prompt_encoder"
MAX_SEQUENCE_LENGTH = 10
CLIP_LENGTH = 77

PROMPTS = [
    "a photo of a cat",
    "",
    "Two red cubes and one BLUE sphere, on a table!!",
    "café crème — naïve façade, 東京 🐱",
    "numbers 0123 456.789 and punctuation: (a) [b] {c}; d? e!",
    # Longer than 77 CLIP tokens and than MAX_SEQUENCE_LENGTH T5 tokens: both are cut.
    " ".join(["a very long prompt about a dog running in the park"] * 12),
    "  leading and trailing spaces  ",
    "A",
]


def main():
    # The pipeline warns about every cut prompt at length; the fixture's long prompt is cut on
    # purpose.
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    clip_l = CLIPTextModelWithProjection.from_pretrained(FIXTURES / "clip/clip_l/text_encoder")
    clip_g = CLIPTextModelWithProjection.from_pretrained(FIXTURES / "clip/clip_g/text_encoder_2")
    t5 = T5EncoderModel.from_pretrained(FIXTURES / "t5/text_encoder_3")
    tokenizer_l = CLIPTokenizer.from_pretrained(FIXTURES / "clip/clip_l/tokenizer")
    tokenizer_g = CLIPTokenizer.from_pretrained(FIXTURES / "clip/clip_g/tokenizer_2")
    tokenizer_t5 = T5TokenizerFast(tokenizer_file=str(FIXTURES / "t5/tokenizer.json"), extra_ids=0)
    # SD3.5's tokenizer configs say 77; the tiny ones leave transformers' "no limit" default,
    # which the pipeline would take as its CLIP length.
    for tokenizer in (tokenizer_l, tokenizer_g):
        tokenizer.model_max_length = CLIP_LENGTH
    pipeline = StableDiffusion3Pipeline(
        transformer=None,
        scheduler=None,
        vae=None,
        text_encoder=clip_l.eval(),
        tokenizer=tokenizer_l,
        text_encoder_2=clip_g.eval(),
        tokenizer_2=tokenizer_g,
        text_encoder_3=t5.eval(),
        tokenizer_3=tokenizer_t5,
    )
    assert pipeline.tokenizer_max_length == CLIP_LENGTH
    with torch.no_grad():
        context, _, pooled, _ = pipeline.encode_prompt(
            prompt=PROMPTS,
            prompt_2=None,
            prompt_3=None,
            device=torch.device("cpu"),
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
        )
    assert context.shape == (len(PROMPTS), CLIP_LENGTH + MAX_SEQUENCE_LENGTH, 32), context.shape
    assert pooled.shape == (len(PROMPTS), 8 + 12), pooled.shape
    # Every part must carry signal, or a test could pass with a part left out.
    assert context[:, :CLIP_LENGTH, :12].abs().min() > 0
    assert context[:, :CLIP_LENGTH, 12:28].abs().min() > 0
    assert context[:, CLIP_LENGTH:, :].abs().amax() > 0
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(
        {"context": context.contiguous().float(), "pooled": pooled.contiguous().float()},
        OUT / "expected.safetensors",
    )
    (OUT / "expected.json").write_text(
        json.dumps({"prompts": PROMPTS, "max_sequence_length": MAX_SEQUENCE_LENGTH}, ensure_ascii=False, indent=1)
        + "\n"
    )
    print(f"wrote {OUT}: context {tuple(context.shape)}, pooled {tuple(pooled.shape)}")


if __name__ == "__main__":
    main()
