"""The built-in vocabulary: functions, memory structures, parameter types, update rules, options.

This table is the single source of truth for the checker (arity, option names and types, did-you-
mean), the formatter, the syntax highlighter and the language reference.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

OptionType = Literal["int", "number", "expr", "flag", "name", "call"]


class Option(NamedTuple):
    type: OptionType
    default: object = None
    choices: tuple[str, ...] = ()
    doc: str = ""
    maximum: int | None = None       # ints: the largest value accepted (None: any size a float holds exactly)


class Signature(NamedTuple):
    positional: tuple[str, ...]      # names of positional parameters, in order (all required)
    options: dict[str, Option]       # keyword options (and flags, written bare: `residual`)
    doc: str
    optional_positional: int = 0     # how many trailing positionals may be left out


ACTIVATIONS = ("silu", "gelu", "relu", "tanh", "sigmoid", "identity")

# ---- expression functions -----------------------------------------------------------------------
UNARY = {
    "sigmoid": "logistic sigmoid", "silu": "x * sigmoid(x)", "gelu": "Gaussian error linear unit",
    "relu": "max(x, 0)", "tanh": "hyperbolic tangent", "softplus": "log(1 + exp(x))",
    "exp": "exponential", "log": "natural logarithm", "sqrt": "square root", "abs": "absolute value",
    "square": "x * x", "sign": "sign of x",
}
GROUPS = Option("int", 1, doc="split the width into this many equal groups (e.g. `groups = heads`)")

FUNCTIONS: dict[str, Signature] = {
    **{name: Signature(("x",), {}, doc) for name, doc in UNARY.items()},
    "stopgrad": Signature(("x",), {}, "the value, with no gradient flowing back through it"),
    "fixed": Signature(("x",), {}, "the value, held constant by the learned memory's own gradient; the outer "
                                   "level still differentiates through it (objectives only)"),
    "rmsnorm": Signature(("x",), {"groups": GROUPS}, "RMS normalization with a learned scale"),
    "layernorm": Signature(("x",), {"groups": GROUPS}, "layer normalization with a learned scale and shift"),
    "l2norm": Signature(("x",), {"groups": GROUPS}, "divide each group by its L2 norm"),
    "conv": Signature(("x", "width"), {}, "causal depthwise convolution over time, learned weights"),
    "rope": Signature(("x",), {"groups": GROUPS, "base": Option("number", 10000.0, doc="the slowest rotation's "
                                                                                     "wavelength, over 2π")},
                      "rotary positions: rotate each group's two halves by angles that grow with the token's "
                      "position in the sequence"),
    "sum": Signature(("x",), {"groups": GROUPS}, "sum over the width (per group)"),
    "mean": Signature(("x",), {"groups": GROUPS}, "mean over the width (per group)"),
    "min": Signature(("a", "b"), {}, "elementwise minimum"),
    "max": Signature(("a", "b"), {}, "elementwise maximum"),
    "newton_schulz": Signature(("x",), {"steps": Option("int", 5, doc="iterations")},
                               "orthogonalize a matrix by Newton-Schulz iterations (Muon)"),
}

# Objectives: each maps (prediction, target) to one loss per token; `learn` minimizes their sum.
OBJECTIVES: dict[str, Signature] = {
    "l2": Signature(("pred", "target"), {}, "1/2 ||pred - target||^2: regression (delta rule)"),
    "dot": Signature(("pred", "target"), {}, "-<pred, target>: similarity (Hebbian, linear attention)"),
    "l1": Signature(("pred", "target"), {}, "||pred - target||_1"),
    "huber": Signature(("pred", "target"), {"delta": Option("number", 1.0, doc="quadratic zone")},
                       "Huber loss: l2 near zero, l1 far away"),
}

# ---- memory structures and parameter types ------------------------------------------------------
MAX_MLP_DEPTH = 1000   # every layer is a separate weight in the generated code and the cost preview
MAX_REPEAT = 10_000    # every repetition of a block is a layer the generated code and the run list
STRUCTURES: dict[str, Signature] = {
    "matrix": Signature(("in", "out"), {}, "a linear map: M(x) = M x", optional_positional=2),
    "mlp": Signature((), {
        "in": Option("int", None, doc="input width per head (default: model width / heads)"),
        "out": Option("int", None, doc="output width per head (default: `in`)"),
        "depth": Option("int", 2, doc="number of linear layers", maximum=MAX_MLP_DEPTH),
        "expand": Option("number", 4, doc="hidden width as a multiple of `in`"),
        "hidden": Option("int", None, doc="hidden width (overrides `expand`)"),
        "act": Option("name", "silu", ACTIVATIONS, "activation between layers"),
        "residual": Option("flag", False, doc="add the input to the output"),
        "norm": Option("name", "none", ("none", "layernorm", "rmsnorm"), "normalize the MLP branch"),
    }, "a multi-layer perceptron memory"),
    "elementwise": Signature((), {"in": Option("int", None, doc="width (optimizers: the parameter's shape)")},
                             "a vector state s: M(x) = s * x; read bare, its value is s"),
    "attention": Signature((), {
        "window": Option("int", 0, doc="sliding window in tokens; 0 = the whole context"),
    }, "softmax attention: a non-parametric memory, re-solved for every query"),
}

PARAM_TYPES: dict[str, Signature] = {
    "matrix": Signature(("in", "out"), {}, "a learned matrix; `x @ W` maps width `in` to `out`"),
    "vector": Signature(("n",), {}, "a learned vector of width n"),
    "scalar": Signature((), {}, "a learned number"),
}

# ---- update rules (the inner optimizer of a `learn`) --------------------------------------------
OUTPUT_MAPS: dict[str, Signature] = {
    "newton_schulz": Signature((), {"steps": Option("int", 5, doc="iterations")},
                               "orthogonalize each update matrix (Muon)"),
}


class Layers(NamedTuple):
    layers: slice                    # the memory's layers it picks, first layer first
    doc: str


# dgd's decorrelating term −lr·W x xᵀ is defined per linear map, x the map's own input (NL eq. 57,
# 121); on an MLP memory the paper leaves open which maps take it. One layer for a matrix memory.
DECORRELATE: dict[str, Layers] = {
    "first": Layers(slice(0, 1), "the first layer, along the key k it reads"),
    "last": Layers(slice(-1, None), "the last layer, along its own input (the hidden activation feeding it)"),
    "each": Layers(slice(None), "every layer, each along its own input"),
}

_RULE_COMMON = {
    "lr": Option("expr", None, doc="learning rate: a number, a parameter or a data-dependent value"),
    "retain": Option("expr", None, doc="retention gate: the state is multiplied by it (1 - forget)"),
    "momentum": Option("expr", None, doc="momentum coefficient: a momentum buffer, one level faster"),
    "precond": Option("expr", None, doc="value of the momentum memory: preconditions each gradient"),
    "output": Option("call", None, ("newton_schulz",), "non-linear map of the update (Muon)"),
}
RULES: dict[str, Signature] = {
    "gd": Signature((), dict(_RULE_COMMON), "gradient descent on the objective"),
    "dgd": Signature((), {
        **_RULE_COMMON,
        "decorrelate": Option("name", "first", tuple(DECORRELATE), "the layers of an MLP memory that take the "
                                                                   "decorrelating term, each along its own input"),
    }, "delta gradient descent: gd plus the decorrelating term -lr * M k k^T"),
    "adam": Signature((), {
        "lr": _RULE_COMMON["lr"],
        "beta1": Option("number", 0.9), "beta2": Option("number", 0.999), "eps": Option("number", 1e-8),
    }, "Adam: gradients normalized by running first and second moments"),
}

# ---- modifiers and clauses ----------------------------------------------------------------------
SCOPES = {"sequence": "state resets at every sequence (fast weights)",
          "persistent": "state carries across sequences (continual learning)"}
MEMORY_INITS = {"learned": "initial state is an outer-level parameter (meta-learned)",
                "zeros": "initial state is zero",
                "identity": "the identity map: I for a square matrix; a residual MLP whose last layer is zero"}
PARAM_INITS = {"normal": "scaled normal (default)", "zeros": "all zeros", "ones": "all ones"}
PER = {"head": "one memory per attention head", "element": "one memory applied to every element"}
ANCHORS = {"chunk_start": "gradients at the state where the chunk began (previous chunk's end)",
           "token": "gradients at the current state (exact, sequential)",
           "chunk_end": "gradients at the state where the chunk ends (reads the future)"}
READS = {"after": "a read at token t sees the write of token t (default)",
         "before": "a read at token t sees the state before token t's write"}
BACKPROPS = {"through": "the outer gradient flows through every write (default)",
             "first_order": "writes are stop-grad; the initial state still gets a straight-through gradient",
             "stop": "the state is a constant for the outer level",
             "truncate": "the outer gradient flows through the last N chunks of writes"}

LOSSES = {"next_token": "next-token cross-entropy over the vocabulary"}
SCHEDULES: dict[str, Signature] = {
    "constant": Signature((), {"warmup": Option("int", 0)}, "constant learning rate after warm-up"),
    "cosine": Signature((), {"warmup": Option("int", 0), "min_ratio": Option("number", 0.1)},
                        "linear warm-up, then cosine decay to min_ratio * lr"),
    "linear": Signature((), {"warmup": Option("int", 0)}, "linear warm-up, then linear decay to 0"),
}
TRAIN_SETTINGS = {"loss": "the outer objective", "schedule": "learning-rate schedule",
                  "batch": "sequences per step", "steps": "outer steps", "clip": "gradient-norm clip",
                  "seed": "random seed"}

# Names a spec can read without defining them.
MODEL_INPUTS = {"h": "the residual stream entering the block (the token embedding for the first)"}
OPTIMIZER_INPUTS = {"grad": "the gradient of the parameter", "param": "the parameter's current value",
                    "step": "the step number, from 1"}
RESERVED_HEADER = {"vocab": "vocabulary size", "dim": "model width", "context": "tokens per sequence",
                   "heads": "heads for `per head` memories"}

# Names a header parameter cannot take, and why: a unit's own inputs would silently shadow it, and an
# optimizer's hyperparameters are kept in torch.optim's param groups, where `params` holds the tensors.
RESERVED_HEADER_NAMES: dict[str, dict[str, str]] = {
    "model": {name: "the input of every block" for name in MODEL_INPUTS},
    "optimizer": {**{name: "an input of every optimizer" for name in OPTIMIZER_INPUTS},
                  "params": "torch.optim's key for the tensors of a param group"},
}
