"""Synthetic memory tasks, generated on the fly (fresh examples every step, so nothing can be
memorized): MQAR (Zoology's multi-query associative recall) and S-NIAH-1 (RULER's single needle in
a repeated-noise haystack, the passkey task of Titans), both as (inputs, targets) with -100 where
nothing is scored. Written from the definitions in the project's data notes."""

from __future__ import annotations

import torch

from nldsl.backends.torch.app.config import RunError

IGNORE = -100
BYTES = 256         # S-NIAH is text: every byte must be a token


def require(task: str, vocab: int, length: int, pairs: int) -> None:
    """Refuse (RunError) a task the model cannot be given: too few tokens in its vocabulary, or
    sequences too short to hold the task. Checked before a run starts, and by the generators."""
    if task == "mqar":
        if length % 2 or 4 * pairs > length:
            raise RunError(f"MQAR with {pairs} pairs needs an even context of at least {4 * pairs} tokens "
                           f"(got {length}): raise --context or lower --pairs")
        if pairs > vocab // 2 - 1:       # distinct keys from [1, V/2)
            raise RunError(f"MQAR with {pairs} pairs needs a vocabulary of at least {2 * pairs + 2} tokens "
                           f"(the model's vocab is {vocab}): lower --pairs or raise vocab")
    elif task == "sniah":
        if vocab < BYTES:
            raise RunError(f"S-NIAH is text: it needs a vocabulary of {BYTES} (every byte), the model's vocab is "
                           f"{vocab}: set vocab = {BYTES}")
        if length < SNIAH.SHORTEST:
            raise RunError(f"S-NIAH needs a context of at least {SNIAH.SHORTEST} bytes (got {length}): "
                           "raise --context")


class MQAR:
    """`pairs` key–value pairs at the start, then the keys again, at positions drawn with
    p(slot i) ∝ (i+1)^(a-1) in the query region; the target at a repeated key is its value.
    Keys come from [1, V/2), values from [V/2, V), token 0 fills the rest (or random tokens)."""

    def __init__(self, vocab: int, length: int, pairs: int, batch: int, seed: int,
                 power_a: float = 0.01, random_fill: bool = False) -> None:
        require("mqar", vocab, length, pairs)
        self.vocab, self.length, self.pairs, self.batch = vocab, length, pairs, batch
        self.random_fill = random_fill
        slots = (length - 2 * pairs) // 2
        self.slot_p = (torch.arange(slots, dtype=torch.float64) + 1) ** (power_a - 1)
        self.generator = torch.Generator().manual_seed(seed)

    def _distinct(self, low: int, high: int) -> torch.Tensor:
        order = torch.rand(self.batch, high - low, generator=self.generator).argsort(-1)
        return order[:, :self.pairs] + low

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, half = self.batch, self.pairs, self.vocab // 2
        keys, values = self._distinct(1, half), self._distinct(half, self.vocab)
        x = torch.zeros(b, self.length, dtype=torch.long)
        y = torch.full((b, self.length), IGNORE, dtype=torch.long)
        x[:, 0:2 * n:2], x[:, 1:2 * n:2] = keys, values
        slots = torch.multinomial(self.slot_p.expand(b, -1), n, replacement=False, generator=self.generator)
        where = 2 * n + 2 * slots
        x.scatter_(1, where, keys)
        y.scatter_(1, where, values)
        if self.random_fill:
            fill = torch.randint(0, self.vocab, x.shape, generator=self.generator)
            x = torch.where(x == 0, fill, x)
        return x, y

    def __iter__(self):
        return self


# RULER's needle keys are adjective–noun pairs; these short lists are this project's own
ADJECTIVES = ("amber", "brave", "calm", "dusty", "eager", "fancy", "gentle", "hollow", "icy", "jolly", "keen",
              "lucky", "misty", "noble", "odd", "proud", "quiet", "rapid", "silent", "tidy", "upper", "vivid",
              "wild", "young", "zesty", "bitter", "clever", "dark", "early", "faint")
NOUNS = ("anchor", "badger", "candle", "desert", "engine", "falcon", "garden", "harbor", "island", "jacket",
         "kettle", "ladder", "meadow", "needle", "orchard", "pepper", "quarry", "river", "saddle", "temple",
         "umbrella", "valley", "window", "yarrow", "zephyr", "basket", "canyon", "dragon", "ember", "forest")
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
INTRO = "A special magic number is hidden within the following text. Make sure to memorize it. " \
        "I will quiz you about the number afterwards.\n"
NEEDLE = "One of the special magic numbers for {key} is: {value}.\n"
QUESTION = "What is the special magic number for {key} mentioned in the provided text? " \
           "The special magic number for {key} mentioned in the provided text is"


class SNIAH:
    """S-NIAH-1 at byte level: a needle with a 7-digit number at a random depth of a noise haystack
    that fills `length` bytes, then the question; the targets are the number's digits only."""

    SHORTEST = len(INTRO) + len(NEEDLE) + len(QUESTION) + 3 * 16 + 10    # room for keys and a haystack

    def __init__(self, length: int, batch: int, seed: int) -> None:
        require("sniah", BYTES, length, 0)
        self.length, self.batch = length, batch
        self.generator = torch.Generator().manual_seed(seed)

    def _pick(self, options: tuple[str, ...]) -> str:
        return options[int(torch.randint(len(options), (1,), generator=self.generator))]

    def example(self) -> tuple[bytes, bytes, int]:
        """(prompt, answer, depth in bytes): the prompt ends where the answer's digits begin."""
        key = f"{self._pick(ADJECTIVES)}-{self._pick(NOUNS)}"
        value = str(int(torch.randint(10**6, 10**7, (1,), generator=self.generator)))
        needle, question = NEEDLE.format(key=key, value=value), QUESTION.format(key=key)
        room = self.length - len(INTRO) - len(needle) - len(question) - len(value) - 1
        hay = (NOISE * (room // len(NOISE) + 1))[:room]
        cuts = [i + 1 for i, c in enumerate(hay) if c == "\n"] or [0]
        depth = cuts[int(torch.randint(len(cuts), (1,), generator=self.generator))]
        prompt = INTRO + hay[:depth] + needle + hay[depth:] + question + " "
        return prompt.encode(), value.encode(), len(INTRO) + depth

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for _ in range(self.batch):
            prompt, answer, _ = self.example()
            tok = torch.tensor(list(prompt + answer), dtype=torch.long)
            x, y = tok[:-1], tok[1:].clone()
            y[:len(prompt) - 1] = IGNORE
            pad = self.length - len(x)
            xs.append(torch.nn.functional.pad(x, (pad, 0), value=ord(" ")))
            ys.append(torch.nn.functional.pad(y, (pad, 0), value=IGNORE))
        return torch.stack(xs), torch.stack(ys)

    def __iter__(self):
        return self


TASKS = ("mqar", "sniah")
