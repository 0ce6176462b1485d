#!/usr/bin/env python3
"""Reference for prep's CLIP tokenizer (src/tokenize.rs): OpenAI's SimpleTokenizer
algorithm (CLIP's BPE), ported without ftfy, over a diffusers `tokenizer/` folder
(vocab.json + merges.txt).

  clip_tokenizer_ref.py --dir DIR PROMPT...       print the 77 ids of each prompt (JSON)
  clip_tokenizer_ref.py --from-open-clip OUT      write CLIP's real vocab.json + merges.txt
                                                  (+ expected.json for a prompt set) into OUT,
                                                  from the open_clip wheel's
                                                  bpe_simple_vocab_16e6.txt.gz (pip download)

The vocab built from the BPE file is CLIP's construction: 256 byte symbols, the same with
"</w>", one token per merge (48894 merges), then <|startoftext|> (49406) and
<|endoftext|> (49407): the vocab.json of openai/clip-vit-large-patch14.
"""
import argparse
import glob
import gzip
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import regex as re

CONTEXT = 77
PAT = re.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    re.IGNORECASE,
)

PROMPTS = [
    "a photo of a cat",
    "A Photo of a CAT",
    "an astronaut riding a horse on the moon, 4k, highly detailed",
    "  two   spaces\tand\ttabs\n",
    "it's the dog's toy, isn't it?",
    "naïve café résumé 123 4567",
    "emoji 🐱 and ünïcödé",
    "",
    "a red cat and a blue dog " * 20,
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


class ClipBpe:
    def __init__(self, vocab, merges):
        self.encoder = vocab
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.bos = vocab["<|startoftext|>"]
        self.eos = vocab["<|endoftext|>"]
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}

    @classmethod
    def from_dir(cls, d):
        with open(os.path.join(d, "vocab.json"), encoding="utf-8") as f:
            vocab = json.load(f)
        merges = []
        with open(os.path.join(d, "merges.txt"), encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if line.startswith("#version") or not line.strip():
                    continue
                merges.append(line.split())
        return cls(vocab, merges)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            bigram = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if bigram not in self.ranks:
                break
            first, second = bigram
            new, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text):
        text = " ".join(text.split()).strip().lower()
        ids = []
        for token in re.findall(PAT, text):
            if token in ("<|startoftext|>", "<|endoftext|>"):
                ids.append(self.encoder[token])
                continue
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder.get(t, self.eos) for t in self.bpe(token).split(" "))
        return ids

    def __call__(self, text):
        ids = [self.bos] + self.encode(text)[: CONTEXT - 2] + [self.eos]
        return ids + [self.eos] * (CONTEXT - len(ids))


def write_tokenizer(out, merges, extra_vocab=None):
    """A diffusers tokenizer/ folder with CLIP's vocab construction over `merges`."""
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab = {t: i for i, t in enumerate(vocab)}
    vocab["<|startoftext|>"] = 49406
    vocab["<|endoftext|>"] = 49407
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, sort_keys=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for m in merges:
            f.write(" ".join(m) + "\n")


def from_open_clip(out):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", "open_clip_torch==3.3.0", "-d", tmp], check=True)
        whl = glob.glob(os.path.join(tmp, "open_clip_torch-*.whl"))[0]
        with zipfile.ZipFile(whl) as z:
            data = gzip.decompress(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")).decode("utf-8")
    lines = data.split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(l.split()) for l in lines]
    write_tokenizer(out, merges)
    with open(os.path.join(out, "vocab.json"), encoding="utf-8") as f:
        assert len(json.load(f)) == 49408
    tok = ClipBpe.from_dir(out)
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump([[p, tok(p)] for p in PROMPTS], f, ensure_ascii=False)
    print(f"wrote CLIP's tokenizer (49408 tokens) and {len(PROMPTS)} expected rows to {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir")
    ap.add_argument("--from-open-clip", metavar="OUT")
    ap.add_argument("prompts", nargs="*")
    a = ap.parse_args()
    if a.from_open_clip:
        from_open_clip(a.from_open_clip)
        return
    tok = ClipBpe.from_dir(a.dir)
    for p in a.prompts:
        ids = tok(p)
        n = len(ids)
        while n > 1 and ids[n - 1] == tok.eos and ids[n - 2] == tok.eos:
            n -= 1
        print(json.dumps(p), json.dumps(ids[:n]))


if __name__ == "__main__":
    main()
