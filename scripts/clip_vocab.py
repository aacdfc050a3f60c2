"""CLIP's real BPE vocabulary as vocab.json + merges.txt, and golden token ids of varied prompts.

    python scripts/clip_vocab.py open_clip_torch-3.3.0-py3-none-any.whl --out DIR
    python scripts/clip_vocab.py WHEEL --out DIR --ids tests/fixtures/clip/vocab_ids.json

The vocabulary ships in the open_clip_torch wheel (`open_clip/bpe_simple_vocab_16e6.txt.gz`):
its merges, in CLIP's order, define the 49408 tokens (256 byte symbols, the same with `</w>`,
48894 merges, `<|startoftext|>` 49406, `<|endoftext|>` 49407). Only the standard library is
needed for that. With `--ids` (needs torch, ftfy, regex and transformers), the ids of >= 200
prompts by open_clip's own tokenizer (loaded from the wheel's `open_clip/tokenizer.py`) and by
transformers' CLIPTokenizer built from DIR are written as JSON, with the prompts where the two
disagree listed.
"""

import argparse
import gzip
import importlib.util
import json
import pathlib
import sys
import tempfile
import zipfile

VOCAB_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
TOKENIZER_MEMBER = "open_clip/tokenizer.py"
MERGE_COUNT = 49152 - 256 - 2


def bytes_to_unicode():
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
    return [chr(code) for code in codes]


def write_vocab(wheel, out):
    with zipfile.ZipFile(wheel) as archive:
        lines = gzip.decompress(archive.read(VOCAB_MEMBER)).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : MERGE_COUNT + 1]]
    symbols = bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == 49408, len(tokens)
    out.mkdir(parents=True, exist_ok=True)
    vocab = {token: index for index, token in enumerate(tokens)}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )


def prompts():
    base = [
        "a photo of a cat", "", " ", "A RED Car, parked!!", "an astronaut riding a horse",
        "don't stop: it's fine, we'll see, they're here, I've been, I'm ok, you'd go",
        "3.14159 and 1,000,000 and 2024-12-04", "über café naïve façade", "東京タワーの夜景",
        "🚀🔥 emoji party 🎉", "Ελληνικά και русский текст", "mixed CaSe WoRdS",
        "tabs\tand\nnewlines\r\nand   spaces", "punctuation!?.,;:()[]{}<>\"'", "#hashtag @user $5 %50",
        "a&b &amp; html &lt;tag&gt;", "can't won't shouldn't", "x" * 40, "ab12cd34ef",
        "<|startoftext|> inside text <|endoftext|>", "trending on artstation, 4k, 8k, hdr",
        "portrait of an old man, oil painting, rembrandt lighting", "¡hola! ¿qué tal?",
        "naïve résumé coöperate", "ﬁ ligature and full-width ＡＢＣ", "zero\u200bwidth",
        "a cyberpunk city at night, neon, rain, reflections, cinematic",
        "la dolce vita — “quoted” ‘text’ …", "C++ and C# and F#", "snake_case and kebab-case",
    ]
    long = " ".join(["a highly detailed matte painting of a castle on a hill"] * 12)
    items = []
    for index, text in enumerate(base):
        items += [text, text.upper(), f"{text}, variant {index}", f"({text})!", f"{index}: {text}"]
        items += [text.title(), f"{text} at sunset..."]
    items += [long, long + "!!", "word " * 100, ", ".join(str(n) for n in range(60))]
    return items


def load_open_clip_tokenizer(wheel):
    folder = pathlib.Path(tempfile.mkdtemp())
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(TOKENIZER_MEMBER, folder)
        archive.extract(VOCAB_MEMBER, folder)
    path = folder / TOKENIZER_MEMBER
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer(bpe_path=str(folder / VOCAB_MEMBER))


def write_ids(wheel, vocab_dir, out):
    from transformers import CLIPTokenizer

    texts = prompts()
    ours = load_open_clip_tokenizer(wheel)
    theirs = CLIPTokenizer(
        vocab=str(vocab_dir / "vocab.json"), merges=str(vocab_dir / "merges.txt")
    )
    eot = 49407
    open_clip_ids, transformers_ids = [], []
    for text in texts:
        row = ours([text], context_length=77)[0].tolist()
        open_clip_ids.append(row[: row.index(eot) + 1])
        transformers_ids.append(theirs(text, max_length=77, truncation=True).input_ids)
    disagree = [i for i, (a, b) in enumerate(zip(open_clip_ids, transformers_ids)) if a != b]
    out.write_text(
        json.dumps(
            {
                "prompts": texts,
                "open_clip": open_clip_ids,
                "transformers": transformers_ids,
                "disagree": disagree,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ),
        encoding="utf-8",
    )
    print(f"{len(texts)} prompts; open_clip and transformers disagree on {len(disagree)}:")
    for i in disagree:
        print(f"  {texts[i]!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--ids", type=pathlib.Path)
    args = parser.parse_args()
    write_vocab(args.wheel, args.out)
    if args.ids:
        write_ids(args.wheel, args.out, args.ids)


if __name__ == "__main__":
    sys.exit(main())
