"""Builds the tiny CLIP tokenizer vocabulary that the project ships for its random-weight models."""

from __future__ import annotations

import argparse
import collections
import itertools
import json
from pathlib import Path

ASSET_DIR = Path(__file__).parent / "assets" / "tiny-clip-tokenizer"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
NUM_MERGES = 256
# Words the merges are learned from: the vocabulary of the examples and of common prompts, so
# that prompts tokenize into a few dozen tokens rather than one per character.
CORPUS = """
a photo of the alps summer mountains the sun the moon a giant waterfall a clean deep blue lake
a large tree a green meadow with flowers clear deep blue sky worst quality bad quality
times square a brown haired boy a pink haired girl a quiet countryside with a small house
a red hot air balloon simple white background image best quality high resolution masterpiece
landscape portrait city street night day forest river ocean beach snow castle dragon cat dog
painting illustration detailed realistic cinematic lighting colorful sunset sunrise clouds
"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def learn_merges(words: list[str], count: int) -> list[tuple[str, str]]:
    """Plain BPE: repeatedly merge the most frequent adjacent pair (ties broken by the pair)."""
    freq = collections.Counter(words)
    # CLIP marks the last symbol of a word with </w>.
    split = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in freq}
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for word, symbols in split.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += freq[word]
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        for word, symbols in split.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            split[word] = tuple(out)
    return merges


def build_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary (byte symbols, their word-final forms, merges, specials) and the merges."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges = learn_merges(CORPUS.split(), NUM_MERGES)
    tokens += ["".join(pair) for pair in merges]
    tokens += [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def write_vocab(directory: Path) -> None:
    """Write vocab.json and merges.txt (the files CLIPTokenizer reads) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab()
    (directory / "vocab.json").write_text(
        json.dumps(vocab, ensure_ascii=False, indent=0, sort_keys=False) + "\n", encoding="utf-8"
    )
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ASSET_DIR)
    write_vocab(parser.parse_args().out)


if __name__ == "__main__":
    main()
