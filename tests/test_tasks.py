"""The synthetic memory tasks: MQAR against Zoology's definition (multiquery_ar), S-NIAH-1 against
RULER's (a 7-digit needle in a noise haystack, only the digits scored)."""

from __future__ import annotations

import re

import pytest
import torch

from nldsl.backends.torch.app.config import RunError
from nldsl.backends.torch.app.tasks import IGNORE, MQAR, SNIAH, require

V, L, N, B = 64, 64, 8, 32


def batch(vocab: int = V, length: int = L, pairs: int = N, size: int = B, seed: int = 0,
          **options: float | bool) -> tuple[torch.Tensor, torch.Tensor]:
    return next(MQAR(vocab, length, pairs, size, seed, **options))


def test_mqar_shapes_and_dtypes() -> None:
    x, y = batch()
    assert x.shape == y.shape == (B, L)
    assert x.dtype == y.dtype == torch.long


def test_mqar_keys_and_values_are_distinct_and_in_their_halves() -> None:
    x, _ = batch()
    keys, values = x[:, 0:2 * N:2], x[:, 1:2 * N:2]
    assert ((keys >= 1) & (keys < V // 2)).all()
    assert ((values >= V // 2) & (values < V)).all()
    for row_keys, row_values in zip(keys.tolist(), values.tolist(), strict=True):
        assert len(set(row_keys)) == N
        assert len(set(row_values)) == N


def test_mqar_every_key_is_queried_once_at_an_even_offset_and_its_target_is_its_value() -> None:
    x, y = batch()
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        value_of = dict(zip(row_x[0:2 * N:2], row_x[1:2 * N:2], strict=True))
        query = row_x[2 * N:]
        scored = [t for t, target in enumerate(row_y) if target != IGNORE]
        assert len(scored) == N
        for key, value in value_of.items():
            offsets = [t for t, token in enumerate(query) if token == key]
            assert len(offsets) == 1, f"key {key} appears {len(offsets)} times in the query region"
            assert offsets[0] % 2 == 0
            position = 2 * N + offsets[0]
            assert position in scored
            assert row_y[position] == value
        # the rest of the query region is padding (token 0), and nothing in the key-value prefix is scored
        assert sum(token != 0 for token in query) == N
        assert all(t >= 2 * N for t in scored)


def test_mqar_queries_favour_early_slots() -> None:
    """Slot i of the query region is drawn with p ∝ (i+1)^(a-1): with a = 0.01 most queries sit in its
    first half; with a = 1 (uniform) about half do."""
    def early(power_a: float) -> float:
        _, y = batch(256, 256, 8, 256, power_a=power_a)
        offsets = (y != IGNORE).nonzero()[:, 1] - 2 * 8
        return (offsets < (256 - 16) // 2).float().mean().item()

    assert early(0.01) > 0.75
    assert 0.4 < early(1.0) < 0.6


def test_mqar_same_seed_same_batches_other_seed_differs() -> None:
    a, b, c = MQAR(V, L, N, 4, seed=7), MQAR(V, L, N, 4, seed=7), MQAR(V, L, N, 4, seed=8)
    for _ in range(3):
        (xa, ya), (xb, yb), (xc, _) = next(a), next(b), next(c)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(xa, xc)
    assert not torch.equal(next(a)[0], next(MQAR(V, L, N, 4, seed=7))[0]), "a stream must move on"


@pytest.mark.parametrize(("vocab", "length", "pairs"), [
    (V, 63, 8),          # odd length
    (V, 30, 8),          # fewer than 4 tokens per pair
    (16, 64, 8),         # too few keys: [1, 8) holds 7
    (12, 64, 8),
])
def test_mqar_invalid_sizes_raise(vocab: int, length: int, pairs: int) -> None:
    with pytest.raises(RunError, match="MQAR"):
        MQAR(vocab, length, pairs, 2, 0)


def test_mqar_smallest_valid_length() -> None:
    x, y = next(MQAR(V, 4 * N, N, 2, 0))
    assert x.shape == (2, 4 * N)
    assert ((y != IGNORE).sum(-1) == N).all()


def test_mqar_random_fill_replaces_only_the_padding() -> None:
    """Zoology's random_non_queries: the zeros become random tokens from [0, V); the pairs, the queries
    and the targets are those of the plain task with the same seed."""
    plain_x, plain_y = batch(seed=3)
    x, y = batch(seed=3, random_fill=True)
    assert torch.equal(y, plain_y)
    kept = plain_x != 0
    assert torch.equal(x[kept], plain_x[kept])
    filled = x[~kept]
    assert ((filled >= 0) & (filled < V)).all()
    assert (filled != 0).float().mean() > 0.9        # a zero only where the fill drew 0 (p = 1/V)
    assert len(set(filled.tolist())) > V // 2


# ---- S-NIAH -------------------------------------------------------------------------------------

NEEDLE = re.compile(rb"One of the special magic numbers for ([a-z]+-[a-z]+) is: (\d{7})\.\n")
QUESTION = re.compile(rb"What is the special magic number for ([a-z]+-[a-z]+) mentioned in the provided text\?")


@pytest.mark.parametrize("length", [400, 512, 1000])
def test_sniah_inputs_fill_the_length(length: int) -> None:
    x, y = next(SNIAH(length, 4, 0))
    assert x.shape == y.shape == (4, length)
    assert ((x >= 0) & (x < 256)).all()


def test_sniah_only_the_digits_of_the_needle_are_scored() -> None:
    x, y = next(SNIAH(512, 16, 0))
    for row_x, row_y in zip(x, y, strict=True):
        scored = (row_y != IGNORE).nonzero()[:, 0].tolist()
        assert scored == list(range(512 - 7, 512)), "the targets are the last 7 positions"
        digits = bytes(row_y[scored].tolist())
        assert digits.isdigit() and len(digits) == 7
        text = bytes(row_x.tolist())
        needles = NEEDLE.findall(text)
        assert len(needles) == 1
        key, value = needles[0]
        assert value == digits
        assert QUESTION.findall(text) == [key]
        # next-byte targets: the input at a scored position is the byte before its digit
        assert text.endswith(b"mentioned in the provided text is " + digits[:-1])


def test_sniah_needle_depth_varies() -> None:
    x, _ = next(SNIAH(1000, 16, 0))
    depths = {NEEDLE.search(bytes(row.tolist())).start() for row in x}
    assert len(depths) > 3


def test_sniah_same_seed_same_batches() -> None:
    (xa, ya), (xb, yb) = next(SNIAH(512, 2, 5)), next(SNIAH(512, 2, 5))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, next(SNIAH(512, 2, 6))[0])


def test_sniah_too_short_raises() -> None:
    with pytest.raises(RunError, match="S-NIAH"):
        SNIAH(200, 2, 0)


def test_sniah_needs_every_byte_as_a_token() -> None:
    with pytest.raises(RunError, match="vocabulary of 256"):
        require("sniah", 64, 512, 0)
