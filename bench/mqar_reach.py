"""What share of MQAR queries a chunk-wise memory can answer at all.

    python bench/mqar_reach.py                  # the quality grid's (L, N), chunks of 16 and 64

A memory that commits every C tokens and is read before its writes (`every C tokens read before`,
Hope's chunk-wise training) shows a token the state committed at the end of the previous chunk. A
query can then recall its pair only if the pair's value token lies in an earlier chunk than the
query. This counts those queries on sequences from the same generator the benchmark trains on.
"""

from __future__ import annotations

import argparse

from nldsl.backends.torch.app.tasks import MQAR


def reachable(length: int, pairs: int, chunk: int, sequences: int = 512, seed: int = 11) -> float:
    x, y = next(MQAR(256, length, pairs, sequences, seed))
    hits = total = 0
    for b, t in (y != -100).nonzero().tolist():
        j = (x[b, :2 * pairs:2] == x[b, t]).nonzero()[0, 0].item()    # the pair whose key is queried
        hits += t // chunk > (2 * j + 1) // chunk
        total += 1
    return hits / total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=["64x4", "128x8", "256x16"], metavar="LxN")
    p.add_argument("--chunks", nargs="+", type=int, default=[16, 64])
    args = p.parse_args()
    print("| L | N | " + " | ".join(f"chunk {c}" for c in args.chunks) + " |")
    print("|---|---|" + "---|" * len(args.chunks))
    for shape in args.shapes:
        length, pairs = (int(n) for n in shape.split("x"))
        print(f"| {length} | {pairs} | " + " | ".join(f"{reachable(length, pairs, c):.2f}" for c in args.chunks) + " |")


if __name__ == "__main__":
    main()
